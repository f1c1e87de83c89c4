SELECT event_id, agent_id, status, completed_at, runtime_ms, credits, tokens_in, tokens_out, model
FROM agent_runs
WHERE workspace_id = $1 AND completed_at >= $2
