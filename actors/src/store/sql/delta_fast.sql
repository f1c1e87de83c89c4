-- When every event of the batch was new: the rollup deltas the hub computed from the batch
-- (store/deltas.rs), one JSON array per delta table, appended as they are.
, fast_runs AS (
    INSERT INTO rollup_delta_runs (workspace_id, agent_id, bucket, runs, succeeded, failed, timeout,
                                   cancelled, runtime_us, runtime_min, runtime_max, sketch_bins,
                                   sketch_counts, credits_micro, tokens_in, tokens_out, users)
    SELECT workspace_id, agent_id, bucket, runs, succeeded, failed, timeout, cancelled, runtime_us,
           runtime_min, runtime_max, sketch_bins, sketch_counts, credits_micro, tokens_in,
           tokens_out, users
    FROM jsonb_populate_recordset(NULL::rollup_delta_runs, {1}::jsonb)
    WHERE (SELECT all_new FROM fresh)
)
, fast_models AS (
    INSERT INTO rollup_delta_models (workspace_id, agent_id, model, bucket, runs, succeeded,
                                     runtime_us, credits_micro, tokens_in, tokens_out)
    SELECT workspace_id, agent_id, model, bucket, runs, succeeded, runtime_us, credits_micro,
           tokens_in, tokens_out
    FROM jsonb_populate_recordset(NULL::rollup_delta_models, {2}::jsonb)
    WHERE (SELECT all_new FROM fresh)
)
, fast_errors AS (
    INSERT INTO rollup_delta_errors (workspace_id, agent_id, error_type, category, bucket, errors)
    SELECT workspace_id, agent_id, error_type, category, bucket, errors
    FROM jsonb_populate_recordset(NULL::rollup_delta_errors, {3}::jsonb)
    WHERE (SELECT all_new FROM fresh)
)
, fast_resources AS (
    INSERT INTO rollup_delta_resources (workspace_id, agent_id, bucket, samples, cpu_n, cpu_milli,
                                        cpu_max, mem_n, mem_milli, mem_max, cpu_limit_n,
                                        cpu_limit_milli, mem_limit_n, mem_limit_milli, cpu_use_n,
                                        cpu_use_micro, mem_use_n, mem_use_micro, concurrent_max,
                                        queue_max)
    SELECT workspace_id, agent_id, bucket, samples, cpu_n, cpu_milli, cpu_max, mem_n, mem_milli,
           mem_max, cpu_limit_n, cpu_limit_milli, mem_limit_n, mem_limit_milli, cpu_use_n,
           cpu_use_micro, mem_use_n, mem_use_micro, concurrent_max, queue_max
    FROM jsonb_populate_recordset(NULL::rollup_delta_resources, {4}::jsonb)
    WHERE (SELECT all_new FROM fresh)
)
, fast_feedback AS (
    INSERT INTO rollup_delta_feedback (workspace_id, agent_id, bucket, feedback, rating_sum, r1, r2,
                                       r3, r4, r5)
    SELECT workspace_id, agent_id, bucket, feedback, rating_sum, r1, r2, r3, r4, r5
    FROM jsonb_populate_recordset(NULL::rollup_delta_feedback, {5}::jsonb)
    WHERE (SELECT all_new FROM fresh)
)
