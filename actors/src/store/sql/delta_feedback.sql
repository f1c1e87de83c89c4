-- The rollup deltas of the feedback just inserted (CTE `feedback`), when some events of the
-- batch were already stored (else sql/delta_fast.sql appends the hub's).
, feedback_deltas AS (
    INSERT INTO rollup_delta_feedback (workspace_id, agent_id, bucket, feedback, rating_sum, r1, r2,
                                       r3, r4, r5)
    SELECT workspace_id, agent_id, date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'), count(*), sum(rating),
           count(*) FILTER (WHERE rating = 1), count(*) FILTER (WHERE rating = 2),
           count(*) FILTER (WHERE rating = 3), count(*) FILTER (WHERE rating = 4),
           count(*) FILTER (WHERE rating = 5)
    FROM feedback
    WHERE NOT (SELECT all_new FROM fresh)
    GROUP BY 1, 2, 3
)
