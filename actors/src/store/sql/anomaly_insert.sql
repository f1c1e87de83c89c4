-- Records anomalies ($2: a JSON array of objects); a bucket already recorded is kept.
INSERT INTO anomalies (id, workspace_id, agent_id, metric, bucket_start, bucket_ms, value,
                       expected, lower, upper, score, severity, direction)
SELECT r.id::uuid, $1, r.agent_id, r.metric, r.bucket_start, r.bucket_ms, r.value,
       r.expected, r.lower, r.upper, r.score, r.severity, r.direction
FROM jsonb_to_recordset($2::jsonb) AS r(
    id text, agent_id text, metric text, bucket_start timestamptz, bucket_ms bigint,
    value double precision, expected double precision, lower double precision,
    upper double precision, score double precision, severity text, direction text)
ON CONFLICT (workspace_id, agent_id, metric, bucket_start) DO NOTHING
