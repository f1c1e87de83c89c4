-- Creating a day partition takes an ACCESS EXCLUSIVE lock on its parent table, and every
-- insert into that table queues behind a CREATE that waits for its lock (behind a long
-- reader, say). So the function now waits at most 1 s for its locks unless the caller set a
-- lock_timeout of its own (housekeeping sets 100 ms): a creation that cannot have its locks
-- fails fast (the writer answers that batch 503, to be retried; housekeeping tries again on
-- its next pass) instead of stalling every writer of the table behind it.
CREATE OR REPLACE FUNCTION hub_ensure_day_partitions(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    suffix text := to_char(day, 'YYYYMMDD');
BEGIN
    IF current_setting('lock_timeout') = '0' THEN
        PERFORM set_config('lock_timeout', '1s', true);
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('hub_ensure_day_partitions'));
    FOREACH t IN ARRAY ARRAY['agent_runs', 'agent_errors', 'resource_samples', 'agent_user_feedback'] LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            t || '_p' || suffix, t,
            (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END;
$$;
