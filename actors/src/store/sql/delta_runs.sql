-- When some events of the batch were already stored (a resend): the rollup deltas of the runs
-- just inserted (CTE `runs`); else sql/delta_fast.sql appends the hub's. One row per (workspace, agent,
-- hour), with its runtime sketch as parallel arrays of bins and counts, and one per
-- (workspace, agent, model, hour). Sums are of quantized values (whole microseconds,
-- millionths of a credit) in integers, so they are exact and cheap; see
-- migrations/0005_rollups.sql.
, run_keys AS (
    SELECT workspace_id, agent_id, coalesce(model, '') AS model,
           date_bin('1 hour', completed_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           hub_sketch_key(runtime_ms) AS bin, status, runtime_ms, credits, tokens_in, tokens_out,
           user_id
    FROM runs
    WHERE NOT (SELECT all_new FROM fresh)
)
, run_bins AS (
    SELECT workspace_id, agent_id, bucket, array_agg(bin) AS bins, array_agg(n) AS counts
    FROM (SELECT workspace_id, agent_id, bucket, bin, count(*) AS n FROM run_keys GROUP BY 1, 2, 3, 4) AS b
    GROUP BY 1, 2, 3
)
, run_users AS (
    SELECT workspace_id, agent_id, bucket, array_agg(DISTINCT hub_user_hash(user_id)) AS users
    FROM run_keys
    WHERE user_id IS NOT NULL
    GROUP BY 1, 2, 3
)
, run_deltas AS (
    INSERT INTO rollup_delta_runs (workspace_id, agent_id, bucket, runs, succeeded, failed, timeout,
                                   cancelled, runtime_us, runtime_min, runtime_max, sketch_bins,
                                   sketch_counts, credits_micro, tokens_in, tokens_out, users)
    SELECT g.workspace_id, g.agent_id, g.bucket, g.runs, g.succeeded, g.failed, g.timeout,
           g.cancelled, g.runtime_us, g.runtime_min, g.runtime_max, b.bins, b.counts,
           g.credits_micro, g.tokens_in, g.tokens_out, u.users
    FROM (
        SELECT workspace_id, agent_id, bucket, count(*) AS runs,
               count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'timeout') AS timeout,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               sum(round(runtime_ms * float8 '1000')::int8) AS runtime_us, min(runtime_ms) AS runtime_min,
               max(runtime_ms) AS runtime_max, sum(round(credits * float8 '1e6')::int8) AS credits_micro,
               sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out
        FROM run_keys
        GROUP BY 1, 2, 3
    ) AS g
    JOIN run_bins AS b USING (workspace_id, agent_id, bucket)
    LEFT JOIN run_users AS u USING (workspace_id, agent_id, bucket)
)
, model_deltas AS (
    INSERT INTO rollup_delta_models (workspace_id, agent_id, model, bucket, runs, succeeded,
                                     runtime_us, credits_micro, tokens_in, tokens_out)
    SELECT workspace_id, agent_id, model, bucket, count(*),
           count(*) FILTER (WHERE status = 'succeeded'), sum(round(runtime_ms * float8 '1000')::int8),
           sum(round(credits * float8 '1e6')::int8), sum(tokens_in), sum(tokens_out)
    FROM run_keys
    GROUP BY 1, 2, 3, 4
)
