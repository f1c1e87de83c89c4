-- Every agent a workspace has heard from (runs, heartbeats or feedback) within
-- retention.rollups, with the first and last hour it was heard from: the list of
-- GET /api/v1/agents, and what tells an agent with no runs in a range from one never seen.
-- The rollup fold maintains it from the deltas it takes, in the same transaction as the
-- rollups; readers add the agents of the deltas not folded yet, so a list is exact up to
-- now. Retention moves first_hour up to the oldest month kept and forgets agents whose last
-- hour is older.
CREATE TABLE rollup_agents (
    workspace_id text        NOT NULL,
    agent_id     text        NOT NULL,
    first_hour   timestamptz NOT NULL,
    last_hour    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, agent_id)
);

INSERT INTO rollup_agents (workspace_id, agent_id, first_hour, last_hour)
SELECT workspace_id, agent_id, min(bucket), max(bucket)
FROM (
    SELECT workspace_id, agent_id, bucket FROM rollup_runs_hourly WHERE agent_id <> ''
    UNION ALL
    SELECT workspace_id, agent_id, bucket FROM rollup_resources_hourly WHERE agent_id <> ''
    UNION ALL
    SELECT workspace_id, agent_id, bucket FROM rollup_feedback_hourly WHERE agent_id <> ''
) AS seen
GROUP BY 1, 2;
