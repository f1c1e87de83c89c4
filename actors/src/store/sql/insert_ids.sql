-- Claims the batch's event ids; returns only the ones not seen before (first write wins),
-- with the transaction id (to match against rebuild snapshots) at no extra round trip.
INSERT INTO ingested_events (workspace_id, event_id, kind, event_time)
SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING workspace_id, event_id, pg_current_xact_id()::text::int8
