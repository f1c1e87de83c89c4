-- The rollup deltas of the heartbeats just inserted (CTE `heartbeats`), when some events of
-- the batch were already stored (else sql/delta_fast.sql appends the hub's). Sums are of quantized
-- values in integers (thousandths of a per cent, of a MiB, of a core; millionths of a ratio).
-- A use ÷ limit ratio counts only samples that carry both and a positive limit, and is
-- capped at 10^6 (a million times its limit) so that its sum stays in range (least() skips
-- NULLs, hence the explicit test for the use).
, heartbeat_deltas AS (
    INSERT INTO rollup_delta_resources (workspace_id, agent_id, bucket, samples, cpu_n, cpu_milli,
                                        cpu_max, mem_n, mem_milli, mem_max, cpu_limit_n,
                                        cpu_limit_milli, mem_limit_n, mem_limit_milli, cpu_use_n,
                                        cpu_use_micro, mem_use_n, mem_use_micro, concurrent_max,
                                        queue_max)
    SELECT workspace_id, agent_id, date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           count(*),
           count(cpu_pct), coalesce(sum(round(cpu_pct * 1000)::int8), 0), max(cpu_pct),
           count(mem_mb), coalesce(sum(round(mem_mb * 1000)::int8), 0), max(mem_mb),
           count(cpu_limit_cores), coalesce(sum(round(cpu_limit_cores * 1000)::int8), 0),
           count(mem_limit_mb), coalesce(sum(round(mem_limit_mb * 1000)::int8), 0),
           count(*) FILTER (WHERE cpu_pct IS NOT NULL AND cpu_limit_cores > 0),
           coalesce(sum(CASE WHEN cpu_pct IS NOT NULL AND cpu_limit_cores > 0
                        THEN round(least(cpu_pct / (100 * cpu_limit_cores), float8 '1e6') * float8 '1e6')::int8 END), 0),
           count(*) FILTER (WHERE mem_mb IS NOT NULL AND mem_limit_mb > 0),
           coalesce(sum(CASE WHEN mem_mb IS NOT NULL AND mem_limit_mb > 0
                        THEN round(least(mem_mb / mem_limit_mb, float8 '1e6') * float8 '1e6')::int8 END), 0),
           max(concurrent_runs), max(queue_depth)
    FROM heartbeats
    WHERE NOT (SELECT all_new FROM fresh)
    GROUP BY 1, 2, 3
)
