-- Reads of every agent of a workspace over a range (per-agent figures: leaderboards, the
-- agents list, executive summaries, resource efficiency) ask for rows by workspace and time;
-- the primary key (workspace, agent, bucket) can only serve them agent by agent. Measured on
-- 10 M runs / 1 000 agents: the partial days of a 30-day range read 0.29 s without, 0.05 s
-- with this index.
CREATE INDEX rollup_runs_hourly_time ON rollup_runs_hourly (workspace_id, bucket);
CREATE INDEX rollup_runs_daily_time ON rollup_runs_daily (workspace_id, bucket);
CREATE INDEX rollup_resources_hourly_time ON rollup_resources_hourly (workspace_id, bucket);
CREATE INDEX rollup_resources_daily_time ON rollup_resources_daily (workspace_id, bucket);
