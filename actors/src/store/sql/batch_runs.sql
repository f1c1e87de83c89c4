, runs AS (
    INSERT INTO agent_runs (workspace_id, event_id, agent_id, run_id, user_id, status, started_at,
                            completed_at, runtime_ms, credits, tokens_in, tokens_out, model)
    SELECT r.* FROM unnest({1}::text[], {2}::text[], {3}::text[], {4}::text[], {5}::text[], {6}::text[],
                           {7}::timestamptz[], {8}::timestamptz[], {9}::float8[], {10}::float8[],
                           {11}::int8[], {12}::int8[], {13}::text[])
        AS r(workspace_id, event_id, agent_id, run_id, user_id, status, started_at, completed_at,
             runtime_ms, credits, tokens_in, tokens_out, model)
    JOIN ids USING (workspace_id, event_id)
    RETURNING workspace_id, agent_id, user_id, status, completed_at, runtime_ms, credits, tokens_in,
              tokens_out, model
)
