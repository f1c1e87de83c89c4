SELECT event_id, agent_id, ts, cpu_pct, mem_mb, mem_limit_mb, cpu_limit_cores, concurrent_runs,
       queue_depth
FROM resource_samples
WHERE workspace_id = $1 AND ts >= $2
