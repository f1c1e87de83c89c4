-- Per-step heartbeat averages of a workspace (or one agent, $5) over [$2, $3), steps of $4
-- ms aligned to the Unix epoch; empty steps are absent.
SELECT (floor(extract(epoch FROM ts) * 1000 / $4::bigint) * $4::bigint)::bigint AS step,
       avg(cpu_pct) AS cpu_pct,
       avg(mem_mb) AS mem_mb
FROM resource_samples
WHERE workspace_id = $1 AND ts >= $2 AND ts < $3
  AND ($5::text IS NULL OR agent_id = $5)
GROUP BY 1
ORDER BY 1
