, heartbeats AS (
    INSERT INTO resource_samples (workspace_id, event_id, agent_id, ts, cpu_pct, mem_mb, mem_limit_mb,
                                  cpu_limit_cores, concurrent_runs, queue_depth)
    SELECT h.* FROM unnest({1}::text[], {2}::text[], {3}::text[], {4}::timestamptz[], {5}::float8[],
                           {6}::float8[], {7}::float8[], {8}::float8[], {9}::int8[], {10}::int8[])
        AS h(workspace_id, event_id, agent_id, ts, cpu_pct, mem_mb, mem_limit_mb, cpu_limit_cores,
             concurrent_runs, queue_depth)
    JOIN ids USING (workspace_id, event_id)
    RETURNING workspace_id, agent_id, ts, cpu_pct, mem_mb, mem_limit_mb, cpu_limit_cores,
              concurrent_runs, queue_depth
)
