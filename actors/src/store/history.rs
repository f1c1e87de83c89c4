//! Reads of history that are exact up to now, from the rollups (see
//! `migrations/0005_rollups.sql`).
//!
//! A range `[from, to)` is read in one REPEATABLE READ snapshot as three parts that never
//! overlap: the whole hours inside it from the hourly rollups **plus** the deltas not folded
//! yet for those hours (a fold moves a delta into the rollups in one transaction, so in any
//! snapshot each committed run is in exactly one of the two), and the partial hours at its
//! edges from the raw rows. So the answer counts every run committed before the snapshot,
//! the one posted a second ago included, once.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, Utc};
use tokio_postgres::IsolationLevel;

use super::StoreError;
use crate::domain::sketch::Sketch;
use crate::domain::users::UserSet;

/// An agent's (or, with agent `""`, the workspace's) runs over a range.
#[derive(Debug, Clone, Default)]
pub struct RunTotals {
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timeout: i64,
    pub cancelled: i64,
    /// Sum of runtimes in whole microseconds (each run's rounded half to even).
    pub runtime_us: i128,
    /// Sum of credits in millionths (each run's rounded half to even).
    pub credits_micro: i128,
    pub tokens_in: i128,
    pub tokens_out: i128,
    pub runtime: Sketch,
    pub users: UserSet,
}

const RUN_SUMS: &str = "coalesce(sum(runs), 0)::int8, coalesce(sum(succeeded), 0)::int8,
    coalesce(sum(failed), 0)::int8, coalesce(sum(timeout), 0)::int8,
    coalesce(sum(cancelled), 0)::int8, coalesce(sum(runtime_us), 0)::text,
    coalesce(sum(credits_micro), 0)::text, coalesce(sum(tokens_in), 0)::text,
    coalesce(sum(tokens_out), 0)::text, min(runtime_min), max(runtime_max)";

/// The runs of `agent` (`""`: the whole workspace) of `workspace` in `[from, to)`.
pub async fn run_totals(
    client: &mut deadpool_postgres::Object,
    workspace: &str,
    agent: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<RunTotals, StoreError> {
    let hour = chrono::Duration::hours(1);
    let first_whole = from.duration_trunc(hour).map_err(bad_time)?;
    let first_whole = if first_whole < from {
        first_whole + hour
    } else {
        first_whole
    };
    let last_whole = to.duration_trunc(hour).map_err(bad_time)?.max(first_whole);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The raw rows of the edges: the whole range when it holds no whole hour.
    let (edge_end, edge_start) = if first_whole < last_whole {
        (first_whole, last_whole)
    } else {
        (to, to)
    };
    let agent_filter = "($2 = '' OR agent_id = $2)";
    let raw = format!(
        "FROM agent_runs WHERE workspace_id = $1 AND {agent_filter}
           AND ((completed_at >= $3 AND completed_at < $4) OR (completed_at >= $5 AND completed_at < $6))"
    );
    let raw_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&workspace, &agent, &from, &edge_end, &edge_start, &to];
    let rolled = "FROM rollup_runs_hourly WHERE workspace_id = $1 AND agent_id = $2
                    AND bucket >= $3 AND bucket < $4";
    // Pending deltas are per agent: the workspace's are the sum of its agents'.
    let pending = format!(
        "FROM rollup_delta_runs WHERE workspace_id = $1 AND {agent_filter}
           AND bucket >= $3 AND bucket < $4"
    );
    let whole: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&workspace, &agent, &first_whole, &last_whole];

    let mut totals = RunTotals::default();
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut add = |row: &tokio_postgres::Row| -> Result<(), StoreError> {
        totals.runs += row.get::<_, i64>(0);
        totals.succeeded += row.get::<_, i64>(1);
        totals.failed += row.get::<_, i64>(2);
        totals.timeout += row.get::<_, i64>(3);
        totals.cancelled += row.get::<_, i64>(4);
        totals.runtime_us += int(row.get(5))?;
        totals.credits_micro += int(row.get(6))?;
        totals.tokens_in += int(row.get(7))?;
        totals.tokens_out += int(row.get(8))?;
        if let Some(v) = row.get::<_, Option<f64>>(9) {
            min = min.min(v);
        }
        if let Some(v) = row.get::<_, Option<f64>>(10) {
            max = max.max(v);
        }
        Ok(())
    };
    add(&tx
        .query_one(&format!("SELECT {RUN_SUMS} {rolled}"), &whole)
        .await?)?;
    add(&tx
        .query_one(&format!("SELECT {RUN_SUMS} {pending}"), &whole)
        .await?)?;
    add(&tx
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),
                        count(*) FILTER (WHERE status = 'failed'),
                        count(*) FILTER (WHERE status = 'timeout'),
                        count(*) FILTER (WHERE status = 'cancelled'),
                        coalesce(sum(round(runtime_ms * float8 '1000')::int8), 0)::text,
                        coalesce(sum(round(credits * float8 '1e6')::int8), 0)::text,
                        coalesce(sum(tokens_in), 0)::text, coalesce(sum(tokens_out), 0)::text,
                        min(runtime_ms), max(runtime_ms) {raw}"
            ),
            &raw_params,
        )
        .await?)?;

    // The runtime sketch: bins of the three parts, summed.
    let mut bins: HashMap<Option<i32>, u64> = HashMap::new();
    let sketch_rows = tx
        .query(
            &format!(
                "SELECT nullif(key, 'z')::int, sum(value::int8)::int8 FROM (
                   SELECT e.key, e.value {rolled_from}
                 ) AS r GROUP BY 1",
                rolled_from = rolled.replacen(
                    "FROM rollup_runs_hourly",
                    "FROM rollup_runs_hourly CROSS JOIN LATERAL jsonb_each_text(runtime_sketch) AS e",
                    1
                )
            ),
            &whole,
        )
        .await?;
    let pending_bins = tx
        .query(
            &format!(
                "SELECT b.bin, sum(b.n)::int8 FROM (SELECT unnest(sketch_bins) AS bin,
                   unnest(sketch_counts) AS n {pending}) AS b GROUP BY 1"
            ),
            &whole,
        )
        .await?;
    let raw_bins = tx
        .query(
            &format!("SELECT hub_sketch_key(runtime_ms), count(*) {raw} GROUP BY 1"),
            &raw_params,
        )
        .await?;
    for row in sketch_rows.iter().chain(&pending_bins).chain(&raw_bins) {
        *bins.entry(row.get(0)).or_default() += row.get::<_, i64>(1) as u64;
    }
    let zeros = bins.remove(&None).unwrap_or(0);
    totals.runtime = Sketch::from_bins(
        zeros,
        bins.into_iter().filter_map(|(k, n)| Some((k?, n))),
        totals.runtime_us as f64 / 1000.0,
        if min.is_finite() { min } else { 0.0 },
        if max.is_finite() { max } else { 0.0 },
    );

    // Distinct users: the stored sets, the pending deltas' hashes and the edges' runs.
    for row in tx
        .query(
            &format!("SELECT users {rolled} AND users IS NOT NULL"),
            &whole,
        )
        .await?
    {
        let set = UserSet::decode(row.get(0)).map_err(StoreError::Data)?;
        totals.users.merge(&set);
    }
    let pending_users = tx
        .query(
            &format!("SELECT DISTINCT unnest(users) {pending} AND users IS NOT NULL"),
            &whole,
        )
        .await?;
    let raw_users = tx
        .query(
            &format!("SELECT DISTINCT hub_user_hash(user_id) {raw} AND user_id IS NOT NULL"),
            &raw_params,
        )
        .await?;
    let hashes: Vec<_> = pending_users.iter().chain(&raw_users).collect();
    totals
        .users
        .extend(hashes.iter().map(|r| r.get::<_, i64>(0) as u64));
    tx.commit().await?;
    Ok(totals)
}

fn int(text: String) -> Result<i128, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Data(format!("not an integer sum: {text}")))
}

fn bad_time(e: chrono::RoundingError) -> StoreError {
    StoreError::Data(format!("a time out of range: {e}"))
}

/// Whether `agent` of `workspace` has any rollup (or pending delta) of runs, heartbeats or
/// feedback within retention: an agent the hub has never heard of is not one with no runs.
pub async fn agent_known(
    client: &deadpool_postgres::Object,
    workspace: &str,
    agent: &str,
) -> Result<bool, StoreError> {
    let mut parts = Vec::new();
    for kind in ["runs", "resources", "feedback"] {
        for table in [
            format!("rollup_{kind}_daily"),
            format!("rollup_delta_{kind}"),
        ] {
            parts.push(format!(
                "EXISTS (SELECT 1 FROM {table} WHERE workspace_id = $1 AND agent_id = $2)"
            ));
        }
    }
    let sql = format!("SELECT {}", parts.join(" OR "));
    Ok(client.query_one(&sql, &[&workspace, &agent]).await?.get(0))
}
