-- Per-step run aggregates of a workspace (or one agent, $5) over [$2, $3), steps of $4 ms
-- aligned to the Unix epoch; empty steps are absent.
SELECT (floor(extract(epoch FROM completed_at) * 1000 / $4::bigint) * $4::bigint)::bigint AS step,
       count(*)::bigint AS runs,
       coalesce(sum(credits), 0) AS credits,
       -- numeric sum, read as a double: a bigint result could overflow
       coalesce(sum(tokens_in::numeric + tokens_out), 0)::double precision AS tokens,
       count(*) FILTER (WHERE status IN ('failed', 'timeout'))::bigint AS failed,
       count(*) FILTER (WHERE status <> 'cancelled')::bigint AS decided
FROM agent_runs
WHERE workspace_id = $1 AND completed_at >= $2 AND completed_at < $3
  AND ($5::text IS NULL OR agent_id = $5)
GROUP BY 1
ORDER BY 1
