-- A workspace's anomalies, newest bucket first. $2 metric, $3 agent ('' = workspace
-- series), $4 bucket_start >= since, $5 bucket_start < before: each NULL for no filter.
SELECT id::text AS id, agent_id, metric, bucket_start, bucket_ms, value, expected, lower,
       upper, score, severity, direction, detected_at
FROM anomalies
WHERE workspace_id = $1
  AND ($2::text IS NULL OR metric = $2)
  AND ($3::text IS NULL OR agent_id = $3)
  AND ($4::timestamptz IS NULL OR bucket_start >= $4)
  AND ($5::timestamptz IS NULL OR bucket_start < $5)
ORDER BY bucket_start DESC, agent_id, metric
LIMIT $6
