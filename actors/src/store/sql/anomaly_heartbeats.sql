-- Heartbeat buckets of a workspace for anomaly detection; same shape and parameters as
-- anomaly_runs.sql.
WITH b AS (
    SELECT agent_id,
           (floor(extract(epoch FROM ts) * 1000 / $4::bigint) * $4::bigint)::bigint AS bucket_ms,
           cpu_pct
    FROM resource_samples
    WHERE workspace_id = $1 AND ts >= $2 AND ts < $3 AND cpu_pct IS NOT NULL
      AND ($5::text IS NULL OR agent_id = $5)
)
SELECT CASE WHEN grouping(agent_id) = 1 THEN NULL ELSE agent_id END AS agent_id,
       bucket_ms,
       count(*)::bigint AS samples,
       avg(cpu_pct) AS cpu_avg
FROM b
GROUP BY GROUPING SETS ((agent_id, bucket_ms), (bucket_ms))
ORDER BY bucket_ms
