-- Run buckets of a workspace for anomaly detection: one row per (agent, bucket) and one per
-- bucket for the whole workspace (agent_id NULL), over [$2, $3), buckets of $4 milliseconds
-- aligned to the Unix epoch; $5 narrows to one agent (NULL: every agent).
WITH b AS (
    SELECT agent_id,
           (floor(extract(epoch FROM completed_at) * 1000 / $4::bigint) * $4::bigint)::bigint AS bucket_ms,
           status, runtime_ms, credits
    FROM agent_runs
    WHERE workspace_id = $1 AND completed_at >= $2 AND completed_at < $3
      AND ($5::text IS NULL OR agent_id = $5)
)
SELECT CASE WHEN grouping(agent_id) = 1 THEN NULL ELSE agent_id END AS agent_id,
       bucket_ms,
       count(*)::bigint AS runs,
       count(*) FILTER (WHERE status <> 'cancelled')::bigint AS decided,
       count(*) FILTER (WHERE status IN ('failed', 'timeout'))::bigint AS failed,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY runtime_ms) AS runtime_p95,
       sum(credits) AS credits,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY runtime_ms) AS runtime_p50
FROM b
GROUP BY GROUPING SETS ((agent_id, bucket_ms), (bucket_ms))
ORDER BY bucket_ms
