-- 0001: raw event storage.
--
-- Idempotency. An event's identity is (workspace_id, event_id), first write wins, for as long
-- as raw data is kept, even when a resend carries other field values (another timestamp
-- included). The raw tables are range-partitioned by event day, and PostgreSQL requires a
-- unique index on a partitioned table to include the partition key: a unique index on
-- (workspace_id, event_id, completed_at) would let a resend with another timestamp land in
-- another partition, unseen. So the identity lives in its own table, `ingested_events`, with
-- (workspace_id, event_id) as its primary key and no partitioning. The writer inserts the
-- batch's ids there first (ON CONFLICT DO NOTHING RETURNING ...) and writes to the raw tables
-- only the events that statement reports as new, in the same transaction. Those same
-- reported-new events, and only those, are applied to the live windows after the commit.
-- Retention deletes ids older than `retention.raw` (BRIN on received_at keeps that cheap).

CREATE TABLE ingested_events (
    workspace_id text        NOT NULL,
    event_id     text        NOT NULL,
    kind         smallint    NOT NULL, -- 1 run, 2 heartbeat, 3 feedback
    event_time   timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, event_id)
);
CREATE INDEX ingested_events_received_brin ON ingested_events USING brin (received_at);

-- Runs, by completion time. The btree serves the per-workspace time-range reads (window
-- rebuild at start, analytics); BRIN serves retention and wide time scans.
CREATE TABLE agent_runs (
    workspace_id text             NOT NULL,
    event_id     text             NOT NULL,
    agent_id     text             NOT NULL,
    run_id       text,
    user_id      text,
    status       text             NOT NULL CHECK (status IN ('succeeded', 'failed', 'timeout', 'cancelled')),
    started_at   timestamptz,
    completed_at timestamptz      NOT NULL,
    runtime_ms   double precision NOT NULL CHECK (runtime_ms >= 0),
    credits      double precision NOT NULL DEFAULT 0,
    tokens_in    bigint           NOT NULL DEFAULT 0,
    tokens_out   bigint           NOT NULL DEFAULT 0,
    model        text,
    received_at  timestamptz      NOT NULL DEFAULT now()
) PARTITION BY RANGE (completed_at);
CREATE INDEX agent_runs_completed_brin ON agent_runs USING brin (completed_at);
CREATE INDEX agent_runs_workspace_time ON agent_runs (workspace_id, completed_at);

-- The error object of failed runs, one row per run that carried one.
CREATE TABLE agent_errors (
    workspace_id text        NOT NULL,
    event_id     text        NOT NULL,
    agent_id     text        NOT NULL,
    run_id       text,
    occurred_at  timestamptz NOT NULL,
    error_type   text,
    category     text,
    severity     text CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    message      text
) PARTITION BY RANGE (occurred_at);
CREATE INDEX agent_errors_occurred_brin ON agent_errors USING brin (occurred_at);

CREATE TABLE resource_samples (
    workspace_id    text             NOT NULL,
    event_id        text             NOT NULL,
    agent_id        text             NOT NULL,
    ts              timestamptz      NOT NULL,
    cpu_pct         double precision,
    mem_mb          double precision,
    mem_limit_mb    double precision,
    cpu_limit_cores double precision,
    concurrent_runs bigint,
    queue_depth     bigint,
    received_at     timestamptz      NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);
CREATE INDEX resource_samples_ts_brin ON resource_samples USING brin (ts);
CREATE INDEX resource_samples_workspace_time ON resource_samples (workspace_id, ts);

CREATE TABLE agent_user_feedback (
    workspace_id text        NOT NULL,
    event_id     text        NOT NULL,
    agent_id     text        NOT NULL,
    user_id      text,
    ts           timestamptz NOT NULL,
    rating       smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body         text,
    received_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);
CREATE INDEX agent_user_feedback_ts_brin ON agent_user_feedback USING brin (ts);
CREATE INDEX agent_user_feedback_workspace_time ON agent_user_feedback (workspace_id, ts);

-- Creates the day partition holding `day` for every raw table, if missing. Serialised by a
-- transaction-scoped advisory lock, because concurrent CREATE TABLE IF NOT EXISTS can still
-- collide on the catalog.
CREATE FUNCTION hub_ensure_day_partitions(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    suffix text := to_char(day, 'YYYYMMDD');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hub_ensure_day_partitions'));
    FOREACH t IN ARRAY ARRAY['agent_runs', 'agent_errors', 'resource_samples', 'agent_user_feedback'] LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            t || '_p' || suffix, t,
            (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END;
$$;
