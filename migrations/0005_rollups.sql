-- 0005: hourly and daily rollups, kept exactly equal to the raw rows.
--
-- Design: incremental, per committed batch, through deltas.
-- 1. The writer's batch statement (store/sql/batch_*.sql) appends the batch's deltas to the
--    rollup_delta_* tables, one row per (workspace, agent[, model | error type and category],
--    hour), in the same statement and so the same transaction as the raw rows: a batch's raw
--    rows and its deltas commit together or not at all. Only new events count (a resend adds
--    nothing): when every event of the batch was new the statement appends the deltas the hub
--    computed in Rust (cheap), else it aggregates the rows it has just inserted.
-- 2. The hub's rollup actor folds the deltas into the rollup tables: one statement per kind
--    DELETEs a bounded set of deltas ... RETURNING them, and upserts their sums into the hourly
--    and daily tables (for the agent and, with agent_id '', for the whole workspace). The
--    deltas a fold deletes are exactly those it adds, in one transaction, so each delta is
--    counted exactly once whatever crashes: a SIGKILL mid-fold rolls the transaction back and
--    leaves its deltas for the next fold. Appends and deletes of deltas never wait on each
--    other (no unique index on the delta tables), so the writer never waits on a fold.
-- 3. Every rollup row is therefore the aggregate of every committed raw row of its key, except
--    for deltas not folded yet; a read that must be exact up to now adds the pending deltas of
--    its range, read in the same snapshot.
-- Late events (up to ingest.max_age) are deltas like any other; a resend inserts no raw row
-- and so no delta; a restart only resumes folding.
--
-- Exact sums. A sum of doubles depends on the order of its terms, so each value is quantized
-- once, in the delta, and summed as an integer: runtime_us (whole microseconds), credits_micro
-- (millionths of a credit), cpu_milli / mem_milli / *_limit_milli (thousandths of a per cent,
-- MiB, core), *_use_micro (millionths of a use ÷ limit ratio). Sums are numeric in the
-- rollups (a year of a workspace's tokens cannot overflow) and exact whatever the order in
-- which deltas are added; a recomputation quantizes the raw rows the same way.
--
-- Runtime sketch. jsonb {bin: count}, bin = hub_sketch_key(runtime_ms) (the live windows'
-- logarithmic bins, relative accuracy 0.9 %, so a quantile read from merged rollups is within
-- 1 % of percentile_disc), "z" counting runtimes ≤ 1e-9 ms (the bin NULL). Merging two
-- sketches adds their counts, so any grouping of deltas gives the same sketch. A delta carries
-- its sketch as parallel arrays (sketch_bins, sketch_counts), cheaper to build per batch.
--
-- Distinct users. rollup_delta_runs.users holds the distinct hub_user_hash(user_id) of a
-- delta's runs; the rollup actor merges them into rollup_runs_*.users (bytea): the sorted
-- hashes themselves while there are at most 128 (exact), else a HyperLogLog of 4 096 registers
-- (standard error 1.6 %). Both forms are a function of the set of users alone, so they merge in
-- any order (see actors/src/rollup.rs).
--
-- Retention. Rollup tables are range-partitioned by month (partitions <table>_mYYYYMM,
-- created with the raw day partitions, by hub_ensure_day_partitions) and dropped a whole month
-- at a time past retention.rollups.

CREATE FUNCTION hub_sketch_key(ms double precision) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- γ = 1.009 / 0.991: bin k holds (γ^(k−1), γ^k]; NULL is the zero bin.
    SELECT CASE WHEN ms > 1e-9 THEN ceil(ln(ms) / ln(float8 '1.009' / float8 '0.991'))::int END
$$;

-- The hash a user is counted by: the first 8 bytes of the SHA-256 of its id (the hub computes
-- the same in Rust, store/deltas.rs).
CREATE FUNCTION hub_user_hash(u text) RETURNS int8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || encode(substr(sha256(convert_to(u, 'UTF8')), 1, 8), 'hex'))::bit(64)::int8
$$;

CREATE FUNCTION hub_sketch_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, n), '{}'::jsonb)
    FROM (
        SELECT key, sum(value::int8) AS n
        FROM (SELECT * FROM jsonb_each_text(coalesce(a, '{}'))
              UNION ALL
              SELECT * FROM jsonb_each_text(coalesce(b, '{}'))) AS e
        GROUP BY key
    ) AS s
$$;

-- Runs per (workspace, agent) and hour; agent_id '' is the whole workspace.
CREATE TABLE rollup_runs_hourly (
    workspace_id   text        NOT NULL,
    agent_id       text        NOT NULL,
    bucket         timestamptz NOT NULL,
    runs           int8        NOT NULL,
    succeeded      int8        NOT NULL,
    failed         int8        NOT NULL,
    timeout        int8        NOT NULL,
    cancelled      int8        NOT NULL,
    runtime_us     numeric     NOT NULL,
    runtime_min    float8      NOT NULL,
    runtime_max    float8      NOT NULL,
    runtime_sketch jsonb       NOT NULL,
    credits_micro  numeric     NOT NULL,
    tokens_in      numeric     NOT NULL,
    tokens_out     numeric     NOT NULL,
    users          bytea,
    PRIMARY KEY (workspace_id, agent_id, bucket)
) PARTITION BY RANGE (bucket);

-- Per model ('' = runs without one).
CREATE TABLE rollup_models_hourly (
    workspace_id   text        NOT NULL,
    agent_id       text        NOT NULL,
    model          text        NOT NULL,
    bucket         timestamptz NOT NULL,
    runs           int8        NOT NULL,
    succeeded      int8        NOT NULL,
    runtime_us     numeric     NOT NULL,
    credits_micro  numeric     NOT NULL,
    tokens_in      numeric     NOT NULL,
    tokens_out     numeric     NOT NULL,
    PRIMARY KEY (workspace_id, agent_id, model, bucket)
) PARTITION BY RANGE (bucket);

-- Per error type and category ('' = not given).
CREATE TABLE rollup_errors_hourly (
    workspace_id text        NOT NULL,
    agent_id     text        NOT NULL,
    error_type   text        NOT NULL,
    category     text        NOT NULL,
    bucket       timestamptz NOT NULL,
    errors       int8        NOT NULL,
    PRIMARY KEY (workspace_id, agent_id, error_type, category, bucket)
) PARTITION BY RANGE (bucket);

-- Heartbeats: sums and counts of each field that may be absent, and of the use ÷ limit
-- ratios of the samples that carry both (allocation efficiency).
CREATE TABLE rollup_resources_hourly (
    workspace_id   text        NOT NULL,
    agent_id       text        NOT NULL,
    bucket         timestamptz NOT NULL,
    samples        int8        NOT NULL,
    cpu_n           int8        NOT NULL,
    cpu_milli       numeric     NOT NULL,
    cpu_max         float8,
    mem_n           int8        NOT NULL,
    mem_milli       numeric     NOT NULL,
    mem_max         float8,
    cpu_limit_n     int8        NOT NULL,
    cpu_limit_milli numeric     NOT NULL,
    mem_limit_n     int8        NOT NULL,
    mem_limit_milli numeric     NOT NULL,
    cpu_use_n       int8        NOT NULL,
    cpu_use_micro   numeric     NOT NULL,
    mem_use_n       int8        NOT NULL,
    mem_use_micro   numeric     NOT NULL,
    concurrent_max int8,
    queue_max      int8,
    PRIMARY KEY (workspace_id, agent_id, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE rollup_feedback_hourly (
    workspace_id text        NOT NULL,
    agent_id     text        NOT NULL,
    bucket       timestamptz NOT NULL,
    feedback     int8        NOT NULL,
    rating_sum   int8        NOT NULL,
    r1           int8        NOT NULL,
    r2           int8        NOT NULL,
    r3           int8        NOT NULL,
    r4           int8        NOT NULL,
    r5           int8        NOT NULL,
    PRIMARY KEY (workspace_id, agent_id, bucket)
) PARTITION BY RANGE (bucket);

-- The daily tables: the same columns, by UTC day (bucket = its midnight UTC), the sums of their
-- day's hours. The delta tables: the hourly columns (bucket = the hour), users as the
-- delta's distinct user hashes, no index (appended by the writer, deleted by the folds).
DO $$
DECLARE
    kind text;
BEGIN
    FOREACH kind IN ARRAY ARRAY['runs', 'models', 'errors', 'resources', 'feedback'] LOOP
        EXECUTE format('CREATE TABLE rollup_%s_daily (LIKE rollup_%s_hourly INCLUDING ALL) PARTITION BY RANGE (bucket)', kind, kind);
        EXECUTE format('CREATE TABLE rollup_delta_%s (LIKE rollup_%s_hourly)', kind, kind);
        EXECUTE format('ALTER TABLE rollup_delta_%s ADD COLUMN noted_at timestamptz NOT NULL DEFAULT clock_timestamp()', kind);
    END LOOP;
END;
$$;
ALTER TABLE rollup_delta_runs
    ALTER COLUMN users TYPE int8[] USING NULL,
    DROP COLUMN runtime_sketch,
    ADD COLUMN sketch_bins int4[] NOT NULL,
    ADD COLUMN sketch_counts int8[] NOT NULL;

-- Day partitions of the raw tables as before, and now the month partitions of the rollup
-- tables holding that day (created with the first day of the month that needs them; the
-- housekeeping pass creates days, and so months, ahead).
CREATE OR REPLACE FUNCTION hub_ensure_day_partitions(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    suffix text := to_char(day, 'YYYYMMDD');
    month date := date_trunc('month', day)::date;
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
    FOREACH t IN ARRAY ARRAY['runs', 'models', 'errors', 'resources', 'feedback'] LOOP
        FOREACH suffix IN ARRAY ARRAY['hourly', 'daily'] LOOP
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                'rollup_' || t || '_' || suffix || '_m' || to_char(month, 'YYYYMM'),
                'rollup_' || t || '_' || suffix,
                (month::timestamp AT TIME ZONE 'UTC'),
                ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
        END LOOP;
    END LOOP;
END;
$$;

-- Rollup partitions for the months of the raw partitions already there.
SELECT hub_ensure_day_partitions(d)
FROM (SELECT DISTINCT date_trunc('month', to_date(right(c.relname, 8), 'YYYYMMDD'))::date AS d
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      JOIN pg_class p ON p.oid = i.inhparent
      WHERE p.relname = 'agent_runs') AS months;
