-- The rollup deltas of the heartbeats just inserted (CTE `heartbeats`). A use ÷ limit ratio
-- counts only samples that carry both and a positive limit.
, heartbeat_deltas AS (
    INSERT INTO rollup_delta_resources (workspace_id, agent_id, bucket, samples, cpu_n, cpu_sum,
                                        cpu_max, mem_n, mem_sum, mem_max, cpu_limit_n,
                                        cpu_limit_sum, mem_limit_n, mem_limit_sum, cpu_use_n,
                                        cpu_use_sum, mem_use_n, mem_use_sum, concurrent_max,
                                        queue_max)
    SELECT workspace_id, agent_id, date_trunc('hour', ts, 'UTC'), count(*),
           count(cpu_pct), coalesce(sum(cpu_pct::numeric), 0), max(cpu_pct),
           count(mem_mb), coalesce(sum(mem_mb::numeric), 0), max(mem_mb),
           count(cpu_limit_cores), coalesce(sum(cpu_limit_cores::numeric), 0),
           count(mem_limit_mb), coalesce(sum(mem_limit_mb::numeric), 0),
           count(*) FILTER (WHERE cpu_pct IS NOT NULL AND cpu_limit_cores > 0),
           coalesce(sum(CASE WHEN cpu_limit_cores > 0 THEN (cpu_pct / (100 * cpu_limit_cores))::numeric END), 0),
           count(*) FILTER (WHERE mem_mb IS NOT NULL AND mem_limit_mb > 0),
           coalesce(sum(CASE WHEN mem_limit_mb > 0 THEN (mem_mb / mem_limit_mb)::numeric END), 0),
           max(concurrent_runs), max(queue_depth)
    FROM heartbeats
    GROUP BY 1, 2, 3
)
