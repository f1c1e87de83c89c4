-- The batch insert is one statement, assembled in store/mod.rs from this head, one CTE per
-- event kind present in the batch (batch_*.sql), and a final SELECT. One statement is one
-- round trip and its own implicit transaction. It claims the batch's event ids (first write
-- wins) and writes only the events whose ids were new into the raw tables. A number in braces
-- marks the fragment's n-th parameter; the caller passes each (workspace_id, event_id) at most once.
-- The rollup deltas of the batch come last (sql/delta_fast.sql).
WITH ids AS (
    INSERT INTO ingested_events (workspace_id, event_id, kind, event_time)
    SELECT * FROM unnest({1}::text[], {2}::text[], {3}::int2[], {4}::timestamptz[])
    ON CONFLICT DO NOTHING
    RETURNING workspace_id, event_id
)
-- Whether every event sent was new ({5} = how many were sent): then the hub's own deltas of
-- the batch are exact (sql/delta_fast.sql); else those of the new rows are computed here.
, fresh AS (
    SELECT count(*) = {5}::int8 AS all_new FROM ids
)
