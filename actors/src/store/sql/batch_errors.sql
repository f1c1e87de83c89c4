, errors AS (
    INSERT INTO agent_errors (workspace_id, event_id, agent_id, run_id, occurred_at, error_type,
                              category, severity, message)
    SELECT e.* FROM unnest({1}::text[], {2}::text[], {3}::text[], {4}::text[], {5}::timestamptz[],
                           {6}::text[], {7}::text[], {8}::text[], {9}::text[])
        AS e(workspace_id, event_id, agent_id, run_id, occurred_at, error_type, category, severity, message)
    JOIN ids USING (workspace_id, event_id)
    RETURNING workspace_id, agent_id, occurred_at, error_type, category
)
