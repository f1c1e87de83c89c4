-- An agent's runs newest first, a page at a time (GET /api/v1/agents/{id}/executions): the
-- page is a backward range scan of this index from the cursor (completed_at, event_id), so
-- its cost is the page's size whatever the agent's share of its workspace's runs.
CREATE INDEX agent_runs_agent_time ON agent_runs (workspace_id, agent_id, completed_at, event_id);

-- A run's error object, found by the run's identity (the page's failed runs).
CREATE INDEX agent_errors_event ON agent_errors (workspace_id, event_id);
