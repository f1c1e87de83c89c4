-- 0003: anomalies found by the live detector.
--
-- One row per flagged (workspace, series, metric, bucket). `agent_id` is '' for the
-- workspace series, so the natural key can be a plain unique index and a re-recorded bucket
-- (an outbox retry after an unknown commit outcome) stays one row.

CREATE TABLE anomalies (
    id           uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id text             NOT NULL,
    agent_id     text             NOT NULL DEFAULT '',
    metric       text             NOT NULL,
    bucket_start timestamptz      NOT NULL,
    bucket_ms    bigint           NOT NULL,
    value        double precision,
    expected     double precision NOT NULL,
    lower        double precision NOT NULL,
    upper        double precision NOT NULL,
    score        double precision NOT NULL,
    severity     text             NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    direction    text             CHECK (direction IN ('up', 'down')),
    detected_at  timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, agent_id, metric, bucket_start)
);
CREATE INDEX anomalies_workspace_time ON anomalies (workspace_id, bucket_start DESC);
