-- The rollup deltas of the error rows just inserted (CTE `errors`), when some events of the
-- batch were already stored (else sql/delta_fast.sql appends the hub's).
, error_deltas AS (
    INSERT INTO rollup_delta_errors (workspace_id, agent_id, error_type, category, bucket, errors)
    SELECT workspace_id, agent_id, coalesce(error_type, ''), coalesce(category, ''),
           date_bin('1 hour', occurred_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), count(*)
    FROM errors
    WHERE NOT (SELECT all_new FROM fresh)
    GROUP BY 1, 2, 3, 4, 5
)
