, feedback AS (
    INSERT INTO agent_user_feedback (workspace_id, event_id, agent_id, user_id, ts, rating, body)
    SELECT f.* FROM unnest({1}::text[], {2}::text[], {3}::text[], {4}::text[], {5}::timestamptz[],
                           {6}::int2[], {7}::text[])
        AS f(workspace_id, event_id, agent_id, user_id, ts, rating, body)
    JOIN ids USING (workspace_id, event_id)
    RETURNING workspace_id, agent_id, ts, rating
)
