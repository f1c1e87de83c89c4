-- The rollup deltas of the runs just inserted (CTE `runs`): one row per (workspace, agent,
-- hour) and one per (workspace, agent, model, hour). See migrations/0005_rollups.sql.
, run_cells AS (
    SELECT workspace_id, agent_id, coalesce(model, '') AS model,
           date_trunc('hour', completed_at, 'UTC') AS bucket, hub_sketch_key(runtime_ms) AS bin,
           count(*) AS runs,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'timeout') AS timeout,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           sum(runtime_ms::numeric) AS runtime_sum, min(runtime_ms) AS runtime_min,
           max(runtime_ms) AS runtime_max, sum(credits::numeric) AS credits,
           sum(tokens_in::numeric) AS tokens_in, sum(tokens_out::numeric) AS tokens_out
    FROM runs
    GROUP BY 1, 2, 3, 4, 5
)
, run_users AS (
    SELECT workspace_id, agent_id, date_trunc('hour', completed_at, 'UTC') AS bucket,
           array_agg(DISTINCT hashtextextended(user_id, 0)) AS users
    FROM runs
    WHERE user_id IS NOT NULL
    GROUP BY 1, 2, 3
)
, run_deltas AS (
    INSERT INTO rollup_delta_runs (workspace_id, agent_id, bucket, runs, succeeded, failed, timeout,
                                   cancelled, runtime_sum, runtime_min, runtime_max, runtime_sketch,
                                   credits, tokens_in, tokens_out, users)
    SELECT g.*, u.users
    FROM (
        SELECT workspace_id, agent_id, bucket, sum(runs), sum(succeeded), sum(failed), sum(timeout),
               sum(cancelled), sum(runtime_sum), min(runtime_min), max(runtime_max),
               jsonb_object_agg(bin, runs), sum(credits), sum(tokens_in), sum(tokens_out)
        FROM (
            SELECT workspace_id, agent_id, bucket, bin, sum(runs) AS runs,
                   sum(succeeded) AS succeeded, sum(failed) AS failed, sum(timeout) AS timeout,
                   sum(cancelled) AS cancelled, sum(runtime_sum) AS runtime_sum,
                   min(runtime_min) AS runtime_min, max(runtime_max) AS runtime_max,
                   sum(credits) AS credits, sum(tokens_in) AS tokens_in,
                   sum(tokens_out) AS tokens_out
            FROM run_cells
            GROUP BY 1, 2, 3, 4
        ) AS bins
        GROUP BY 1, 2, 3
    ) AS g (workspace_id, agent_id, bucket)
    LEFT JOIN run_users AS u USING (workspace_id, agent_id, bucket)
)
, model_deltas AS (
    INSERT INTO rollup_delta_models (workspace_id, agent_id, model, bucket, runs, succeeded,
                                     runtime_sum, runtime_sketch, credits, tokens_in, tokens_out)
    SELECT workspace_id, agent_id, model, bucket, sum(runs), sum(succeeded), sum(runtime_sum),
           jsonb_object_agg(bin, runs), sum(credits), sum(tokens_in), sum(tokens_out)
    FROM run_cells
    GROUP BY 1, 2, 3, 4
)
