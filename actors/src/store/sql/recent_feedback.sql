SELECT event_id, agent_id, ts, rating
FROM agent_user_feedback
WHERE workspace_id = $1 AND ts >= $2
