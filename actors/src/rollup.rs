//! The rollup actor: folds the deltas the writer appends with each batch into the hourly and
//! daily rollup tables (design: `migrations/0005_rollups.sql`).
//!
//! Each fold is one transaction per kind: a statement deletes up to `rollups.max_deltas`
//! deltas and upserts their sums (per agent and, with `agent_id = ''`, per workspace; per hour
//! and per UTC day); for runs, the distinct users of those deltas are then merged into the rows
//! they touched ([`UserSet`]). A transaction-scoped advisory lock keeps one fold at a time over
//! every node; a fold that finds it taken skips its turn.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, DurationRound, Utc};
use deadpool_postgres::Pool;

use crate::domain::users::UserSet;
use crate::metrics::HubMetrics;
use crate::store::StoreError;

/// Key of the advisory lock a fold holds ("ROLLUP").
const FOLD_LOCK: i64 = 0x524f_4c4c_5550;

/// How a column of a rollup combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    Sum,
    Min,
    Max,
    /// A `{bin: count}` runtime sketch (`hub_sketch_add`), carried by a delta as the arrays
    /// `sketch_bins` and `sketch_counts`.
    Sketch,
}

/// One kind of rollup: its tables are `rollup_<name>_hourly`, `rollup_<name>_daily` and
/// `rollup_delta_<name>`, keyed by (workspace_id, agent_id, `keys`…, bucket).
#[derive(Debug)]
pub struct Kind {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub columns: &'static [(&'static str, Merge)],
}

use Merge::{Max, Min, Sketch, Sum};

pub const RUNS: Kind = Kind {
    name: "runs",
    keys: &[],
    columns: &[
        ("runs", Sum),
        ("succeeded", Sum),
        ("failed", Sum),
        ("timeout", Sum),
        ("cancelled", Sum),
        ("runtime_us", Sum),
        ("runtime_min", Min),
        ("runtime_max", Max),
        ("runtime_sketch", Sketch),
        ("credits_micro", Sum),
        ("tokens_in", Sum),
        ("tokens_out", Sum),
    ],
};

pub const KINDS: [&Kind; 5] = [
    &RUNS,
    &Kind {
        name: "models",
        keys: &["model"],
        columns: &[
            ("runs", Sum),
            ("succeeded", Sum),
            ("runtime_us", Sum),
            ("credits_micro", Sum),
            ("tokens_in", Sum),
            ("tokens_out", Sum),
        ],
    },
    &Kind {
        name: "errors",
        keys: &["error_type", "category"],
        columns: &[("errors", Sum)],
    },
    &Kind {
        name: "resources",
        keys: &[],
        columns: &[
            ("samples", Sum),
            ("cpu_n", Sum),
            ("cpu_milli", Sum),
            ("cpu_max", Max),
            ("mem_n", Sum),
            ("mem_milli", Sum),
            ("mem_max", Max),
            ("cpu_limit_n", Sum),
            ("cpu_limit_milli", Sum),
            ("mem_limit_n", Sum),
            ("mem_limit_milli", Sum),
            ("cpu_use_n", Sum),
            ("cpu_use_micro", Sum),
            ("mem_use_n", Sum),
            ("mem_use_micro", Sum),
            ("concurrent_max", Max),
            ("queue_max", Max),
        ],
    },
    &Kind {
        name: "feedback",
        keys: &[],
        columns: &[
            ("feedback", Sum),
            ("rating_sum", Sum),
            ("r1", Sum),
            ("r2", Sum),
            ("r3", Sum),
            ("r4", Sum),
            ("r5", Sum),
        ],
    },
];

impl Kind {
    /// Every key column, in order.
    pub fn key_columns(&self) -> Vec<&'static str> {
        let mut keys = vec!["workspace_id", "agent_id"];
        keys.extend_from_slice(self.keys);
        keys.push("bucket");
        keys
    }

    /// Whether an event of this kind means its agent was heard from (`rollup_agents`): runs,
    /// heartbeats and feedback (errors come with runs).
    pub fn marks_seen(&self) -> bool {
        matches!(self.name, "runs" | "resources" | "feedback")
    }

    /// The fold statement: `$1` = most deltas to take. Returns one row with how many deltas it
    /// took and the oldest one's `noted_at`, then, for runs, the key and users of each delta
    /// that has users (the only ones the fold still has to read).
    pub fn fold_sql(&self) -> String {
        let name = self.name;
        let keys = self.key_columns();
        let extra: String = self.keys.iter().map(|k| format!("{k}, ")).collect();
        let d_extra: String = self.keys.iter().map(|k| format!("d.{k}, ")).collect();
        let plain: Vec<_> = self.columns.iter().filter(|(_, m)| *m != Sketch).collect();
        let sketches: Vec<_> = self.columns.iter().filter(|(_, m)| *m == Sketch).collect();
        let agg = |c: &str, m: Merge| match m {
            Sum => format!("sum({c}) AS {c}"),
            Min => format!("min({c}) AS {c}"),
            Max => format!("max({c}) AS {c}"),
            Sketch => unreachable!("sketches are summed bin by bin"),
        };
        let positions = |n: usize| {
            (1..=n)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let nkeys = keys.len();
        let key_list = keys.join(", ");
        let mut sql = String::new();
        let _ = write!(
            sql,
            "WITH d AS (\n    DELETE FROM rollup_delta_{name}\n    \
             WHERE ctid = ANY (ARRAY(SELECT ctid FROM rollup_delta_{name} LIMIT $1))\n    \
             RETURNING *\n)\n"
        );
        // Hourly sums, per agent and per workspace.
        let plain_aggs: String = plain
            .iter()
            .map(|(c, m)| format!(", {}", agg(c, *m)))
            .collect();
        let _ = write!(
            sql,
            ", g AS (\n    SELECT workspace_id, coalesce(agent_id, '') AS agent_id, {extra}bucket{plain_aggs}\n    \
             FROM d\n    GROUP BY GROUPING SETS ((workspace_id, agent_id, {extra}bucket), (workspace_id, {extra}bucket))\n)\n"
        );
        // The same by UTC day.
        let _ = write!(
            sql,
            ", gd AS (\n    SELECT workspace_id, agent_id, {extra}date_trunc('day', bucket, 'UTC') AS bucket{plain_aggs}\n    \
             FROM g GROUP BY {}\n)\n",
            positions(nkeys)
        );
        for (c, _) in &sketches {
            let _ = write!(
                sql,
                ", s_{c} AS (\n    SELECT d.workspace_id, coalesce(d.agent_id, '') AS agent_id, {d_extra}d.bucket, coalesce(e.bin::text, 'z') AS key, sum(e.n) AS n\n    \
                 FROM d CROSS JOIN LATERAL unnest(d.sketch_bins, d.sketch_counts) AS e(bin, n)\n    \
                 GROUP BY GROUPING SETS ((d.workspace_id, d.agent_id, {d_extra}d.bucket, e.bin), (d.workspace_id, {d_extra}d.bucket, e.bin))\n)\n\
                 , h_{c} AS (\n    SELECT {key_list}, jsonb_object_agg(key, n) AS {c} FROM s_{c} GROUP BY {p}\n)\n\
                 , dd_{c} AS (\n    SELECT workspace_id, agent_id, {extra}bucket, jsonb_object_agg(key, n) AS {c}\n    \
                 FROM (SELECT workspace_id, agent_id, {extra}date_trunc('day', bucket, 'UTC') AS bucket, key, sum(n) AS n\n          \
                 FROM s_{c} GROUP BY {p1}) AS per_day\n    GROUP BY {p}\n)\n",
                p = positions(nkeys),
                p1 = positions(nkeys + 1),
            );
        }
        let columns: Vec<&str> = self.columns.iter().map(|(c, _)| *c).collect();
        let updates = self
            .columns
            .iter()
            .map(|(c, m)| match m {
                Sum => format!("{c} = r.{c} + excluded.{c}"),
                Min => format!("{c} = least(r.{c}, excluded.{c})"),
                Max => format!("{c} = greatest(r.{c}, excluded.{c})"),
                Sketch => format!("{c} = hub_sketch_add(r.{c}, excluded.{c})"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        for (table, sums, sketch_prefix) in [("hourly", "g", "h_"), ("daily", "gd", "dd_")] {
            let select: Vec<String> = keys
                .iter()
                .map(|k| format!("{sums}.{k}"))
                .chain(self.columns.iter().map(|(c, m)| {
                    if *m == Sketch {
                        format!("{sketch_prefix}{c}.{c}")
                    } else {
                        format!("{sums}.{c}")
                    }
                }))
                .collect();
            let joins: String = sketches
                .iter()
                .map(|(c, _)| {
                    let on = keys
                        .iter()
                        .map(|k| format!("{sums}.{k} = {sketch_prefix}{c}.{k}"))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    format!(" JOIN {sketch_prefix}{c} ON {on}")
                })
                .collect();
            let _ = write!(
                sql,
                ", up_{table} AS (\n    INSERT INTO rollup_{name}_{table} AS r ({key_list}, {cols})\n    \
                 SELECT {select} FROM {sums}{joins}\n    \
                 ON CONFLICT ({key_list}) DO UPDATE SET {updates}\n)\n",
                cols = columns.join(", "),
                select = select.join(", "),
            );
        }
        if self.marks_seen() {
            sql.push_str(
                ", up_agents AS (\n    INSERT INTO rollup_agents AS a (workspace_id, agent_id, first_hour, last_hour)\n    \
                 SELECT workspace_id, agent_id, min(bucket), max(bucket) FROM d GROUP BY 1, 2\n    \
                 ON CONFLICT (workspace_id, agent_id) DO UPDATE\n    \
                 SET first_hour = least(a.first_hour, excluded.first_hour),\n        \
                 last_hour = greatest(a.last_hour, excluded.last_hour)\n)\n",
            );
        }
        sql.push_str(
            "SELECT count(*), min(noted_at), NULL::text, NULL::text, NULL::timestamptz, NULL::int8[] FROM d\n",
        );
        if self.name == RUNS.name {
            sql.push_str(
                "UNION ALL\nSELECT NULL, NULL, workspace_id, agent_id, bucket, users FROM d WHERE users IS NOT NULL\n",
            );
        }
        sql
    }
}

/// Appends the deltas of every raw row `workspace` has stored, computed by the writer's own
/// SQL fragments (as migration 5 did for the rows stored before the rollups): for rows written
/// straight into the raw tables, a seeding tool's, which the folds then take like any others.
/// Run it once per set of rows: the deltas are added, not replaced.
pub async fn backfill_deltas(
    client: &impl deadpool_postgres::GenericClient,
    workspace: &str,
) -> Result<(), StoreError> {
    let statements = [
        concat!(
            "WITH fresh AS (SELECT false AS all_new),\n",
            "runs AS (SELECT workspace_id, agent_id, user_id, status, completed_at, runtime_ms,\n",
            "                credits, tokens_in, tokens_out, model FROM agent_runs WHERE workspace_id = $1)\n",
            include_str!("store/sql/delta_runs.sql"),
            "SELECT 1",
        ),
        concat!(
            "WITH fresh AS (SELECT false AS all_new),\n",
            "errors AS (SELECT workspace_id, agent_id, occurred_at, error_type, category\n",
            "           FROM agent_errors WHERE workspace_id = $1)\n",
            include_str!("store/sql/delta_errors.sql"),
            "SELECT 1",
        ),
        concat!(
            "WITH fresh AS (SELECT false AS all_new),\n",
            "heartbeats AS (SELECT workspace_id, agent_id, ts, cpu_pct, mem_mb, mem_limit_mb,\n",
            "                      cpu_limit_cores, concurrent_runs, queue_depth\n",
            "               FROM resource_samples WHERE workspace_id = $1)\n",
            include_str!("store/sql/delta_heartbeats.sql"),
            "SELECT 1",
        ),
        concat!(
            "WITH fresh AS (SELECT false AS all_new),\n",
            "feedback AS (SELECT workspace_id, agent_id, ts, rating FROM agent_user_feedback\n",
            "             WHERE workspace_id = $1)\n",
            include_str!("store/sql/delta_feedback.sql"),
            "SELECT 1",
        ),
    ];
    for sql in statements {
        client.execute(sql, &[&workspace]).await?;
    }
    Ok(())
}

/// The fold statement of each kind, built once.
fn fold_statement(kind: usize) -> &'static str {
    static CACHE: [OnceLock<String>; 5] = [const { OnceLock::new() }; 5];
    CACHE[kind].get_or_init(|| KINDS[kind].fold_sql())
}

/// What one fold did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    pub deltas: u64,
    /// Age of the oldest delta taken, in milliseconds.
    pub lag_ms: i64,
    /// Another fold (another node) held the lock.
    pub skipped: bool,
}

/// Folds pending deltas of every kind, `max_deltas` at a time, until none is left or
/// `max_rounds` folds were made.
pub async fn fold_pending(
    pool: &Pool,
    max_deltas: i64,
    max_rounds: usize,
) -> Result<Folded, StoreError> {
    let mut client = pool.get().await?;
    let mut total = Folded::default();
    for kind in 0..KINDS.len() {
        for _ in 0..max_rounds {
            let folded = fold_kind(&mut client, kind, max_deltas).await?;
            total.deltas += folded.deltas;
            total.lag_ms = total.lag_ms.max(folded.lag_ms);
            if folded.skipped {
                total.skipped = true;
                return Ok(total);
            }
            if folded.deltas < max_deltas as u64 {
                break;
            }
        }
    }
    Ok(total)
}

async fn fold_kind(
    client: &mut deadpool_postgres::Object,
    kind: usize,
    max_deltas: i64,
) -> Result<Folded, StoreError> {
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(Folded {
            skipped: true,
            ..Folded::default()
        });
    }
    let stmt = tx.prepare_cached(fold_statement(kind)).await?;
    let rows = tx.query(&stmt, &[&max_deltas]).await?;
    let now = Utc::now();
    let (mut deltas, mut oldest) = (0i64, None::<DateTime<Utc>>);
    let mut users: Vec<UserDelta> = Vec::new();
    for row in &rows {
        match row.get::<_, Option<Vec<i64>>>(5) {
            Some(hashes) => users.push(UserDelta {
                workspace: row.get(2),
                agent: row.get(3),
                hour: row.get(4),
                hashes,
            }),
            None => {
                deltas = row.get::<_, Option<i64>>(0).unwrap_or(0);
                oldest = row.get(1);
            }
        }
    }
    if !users.is_empty() {
        merge_users(&tx, &users).await?;
    }
    tx.commit().await?;
    Ok(Folded {
        deltas: deltas as u64,
        lag_ms: oldest.map_or(0, |t| (now - t).num_milliseconds().max(0)),
        skipped: false,
    })
}

struct UserDelta {
    workspace: String,
    agent: String,
    hour: DateTime<Utc>,
    hashes: Vec<i64>,
}

/// Merges the deltas' users into the four runs rows each touches (agent and workspace, hour
/// and day); the fold statement has just upserted (and so locked) every one of them.
async fn merge_users(
    tx: &deadpool_postgres::Transaction<'_>,
    deltas: &[UserDelta],
) -> Result<(), StoreError> {
    for table in ["hourly", "daily"] {
        let mut added: HashMap<(&str, &str, DateTime<Utc>), Vec<u64>> = HashMap::new();
        for d in deltas {
            let bucket = if table == "daily" {
                d.hour
                    .duration_trunc(chrono::Duration::days(1))
                    .unwrap_or(d.hour)
            } else {
                d.hour
            };
            let hashes = d.hashes.iter().map(|&h| h as u64);
            for agent in [d.agent.as_str(), ""] {
                added
                    .entry((d.workspace.as_str(), agent, bucket))
                    .or_default()
                    .extend(hashes.clone());
            }
        }
        let (mut ws, mut agents, mut buckets) = (Vec::new(), Vec::new(), Vec::new());
        for (w, a, b) in added.keys() {
            ws.push(*w);
            agents.push(*a);
            buckets.push(*b);
        }
        let current = tx
            .query(
                &format!(
                    "SELECT r.workspace_id, r.agent_id, r.bucket, r.users FROM rollup_runs_{table} AS r
                     JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(w, a, b)
                       ON r.workspace_id = k.w AND r.agent_id = k.a AND r.bucket = k.b"
                ),
                &[&ws, &agents, &buckets],
            )
            .await?;
        let mut merged_users: Vec<Vec<u8>> = Vec::with_capacity(current.len());
        let (mut uw, mut ua, mut ub) = (Vec::new(), Vec::new(), Vec::new());
        for row in &current {
            let (w, a, b): (String, String, DateTime<Utc>) = (row.get(0), row.get(1), row.get(2));
            let mut set = match row.get::<_, Option<&[u8]>>(3) {
                Some(bytes) => UserSet::decode(bytes).map_err(StoreError::Data)?,
                None => UserSet::default(),
            };
            if let Some(hashes) = added.get(&(w.as_str(), a.as_str(), b)) {
                set.extend(hashes.iter().copied());
            }
            merged_users.push(set.encode());
            uw.push(w);
            ua.push(a);
            ub.push(b);
        }
        tx.execute(
            &format!(
                "UPDATE rollup_runs_{table} AS r SET users = u.users
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bytea[]) AS u(w, a, b, users)
                 WHERE r.workspace_id = u.w AND r.agent_id = u.a AND r.bucket = u.b"
            ),
            &[&uw, &ua, &ub, &merged_users],
        )
        .await?;
    }
    Ok(())
}

/// Folds on a timer (`rollups.fold_every`), one fold at a time.
pub struct Rollups {
    pool: Pool,
    metrics: Arc<HubMetrics>,
    every: Duration,
    max_deltas: i64,
    busy: bool,
}

impl Rollups {
    pub fn new(pool: Pool, metrics: Arc<HubMetrics>, every: Duration, max_deltas: usize) -> Self {
        Self {
            pool,
            metrics,
            every,
            max_deltas: max_deltas.max(1) as i64,
            busy: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let (pool, max) = (self.pool.clone(), self.max_deltas);
        ctx.spawn(
            async move { fold_pending(&pool, max, 16).await }
                .into_actor(self)
                .map(|result, act, _| {
                    act.busy = false;
                    match result {
                        Ok(folded) => {
                            act.metrics.rollup_deltas_folded.inc_by(folded.deltas);
                            if !folded.skipped {
                                act.metrics.rollup_lag_ms.set(folded.lag_ms);
                            }
                        }
                        Err(e) => {
                            act.metrics.rollup_fold_failures.inc();
                            tracing::warn!(error = %e, "Rollup fold failed; will retry.");
                        }
                    }
                }),
        );
    }
}

impl Actor for Rollups {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        ctx.run_interval(self.every, |act, ctx| act.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_statements_name_every_column_and_no_placeholder_but_the_limit() {
        for kind in KINDS {
            let sql = kind.fold_sql();
            for (c, _) in kind.columns {
                assert!(sql.contains(c), "{}: {c} missing", kind.name);
            }
            assert!(sql.contains("$1"));
            assert!(!sql.contains("$2"), "{}", kind.name);
            assert!(sql.contains(&format!("rollup_{}_daily", kind.name)));
        }
    }
}
