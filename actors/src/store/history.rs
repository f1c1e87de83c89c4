//! Reads of history that are exact up to now, from the rollups (see
//! `migrations/0005_rollups.sql`).
//!
//! A range `[from, to)`, cut into the buckets of a [`Timeline`], is read in one REPEATABLE
//! READ snapshot as parts that never overlap ([`Plan`]): whole UTC days inside one bucket from
//! the daily rollups, the other whole hours inside one bucket from the hourly rollups, **plus**
//! the deltas not folded yet for those days and hours (a fold moves a delta into the rollups
//! in one transaction, so in any snapshot each committed event is in exactly one of the two),
//! and the partial hours (the range's edges, and hours a bucket boundary cuts, as a day in
//! `Asia/Kolkata` does) from the raw rows. So the answer counts every event committed before
//! the snapshot, the one posted a second ago included, once.

use std::collections::HashMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::StoreError;
use crate::domain::sketch::Sketch;
use crate::domain::timeline::Timeline;
use crate::domain::users::UserSet;
use crate::rollup::{Kind, Merge, KINDS, RUNS};

/// Time ranges as the parallel arrays of their starts and ends (SQL parameters).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ranges {
    pub starts: Vec<DateTime<Utc>>,
    pub ends: Vec<DateTime<Utc>>,
}

impl Ranges {
    /// Adds `[start, end)`, merged with the last range when they touch.
    fn push(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) {
        if start >= end {
            return;
        }
        match self.ends.last_mut() {
            Some(last) if *last == start => *last = end,
            _ => {
                self.starts.push(start);
                self.ends.push(end);
            }
        }
    }

    fn extend(&mut self, other: &Ranges) {
        for (s, e) in other.starts.iter().zip(&other.ends) {
            self.push(*s, *e);
        }
    }
}

/// Where each part of a timeline is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Whole UTC days inside one bucket: daily rollups (and the deltas of their hours).
    pub days: Ranges,
    /// The other whole hours inside one bucket: hourly rollups (and their deltas).
    pub hours: Ranges,
    /// Everything else: raw rows.
    pub raw: Ranges,
    /// The timeline's bounds (`width_bucket` thresholds).
    pub bounds: Vec<DateTime<Utc>>,
}

impl Plan {
    pub fn new(timeline: &Timeline) -> Self {
        let bounds = timeline.bounds.clone();
        let (from, to) = (bounds[0], bounds[bounds.len() - 1]);
        let (hour, day) = (Duration::hours(1), Duration::days(1));
        let floor = |t: DateTime<Utc>, d: Duration| t.duration_trunc(d).unwrap_or(t);
        let first_whole = {
            let f = floor(from, hour);
            if f < from {
                f + hour
            } else {
                f
            }
        };
        let last_whole = floor(to, hour);
        let mut plan = Self {
            days: Ranges::default(),
            hours: Ranges::default(),
            raw: Ranges::default(),
            bounds,
        };
        if first_whole >= last_whole {
            plan.raw.push(from, to);
            return plan;
        }
        plan.raw.push(from, first_whole);
        // The boundaries inside the range, in order; `cut(a, b)`: one lies inside (a, b).
        let inner = &plan.bounds[1..plan.bounds.len() - 1];
        let mut next = 0;
        let mut h = first_whole;
        while h < last_whole {
            while next < inner.len() && inner[next] <= h {
                next += 1;
            }
            let cut = |end: DateTime<Utc>| next < inner.len() && inner[next] < end;
            if floor(h, day) == h && h + day <= last_whole && !cut(h + day) {
                plan.days.push(h, h + day);
                h += day;
            } else if cut(h + hour) {
                plan.raw.push(h, h + hour);
                h += hour;
            } else {
                plan.hours.push(h, h + hour);
                h += hour;
            }
        }
        plan.raw.push(last_whole, to);
        plan
    }
}

/// How the raw rows of a kind map onto its delta columns: the same sums, row by row.
struct RawSource {
    table: &'static str,
    time: &'static str,
    /// One expression per key of the kind.
    keys: &'static [&'static str],
    /// One expression per column of the kind (the sketch's left empty: read apart).
    columns: &'static [&'static str],
}

fn raw_source(kind: &Kind) -> &'static RawSource {
    const RUNS_RAW: RawSource = RawSource {
        table: "agent_runs",
        time: "completed_at",
        keys: &[],
        columns: &[
            "1",
            "(status = 'succeeded')::int",
            "(status = 'failed')::int",
            "(status = 'timeout')::int",
            "(status = 'cancelled')::int",
            "round(runtime_ms * float8 '1000')::int8",
            "runtime_ms",
            "runtime_ms",
            "",
            "round(credits * float8 '1e6')::int8",
            "tokens_in",
            "tokens_out",
        ],
    };
    const MODELS_RAW: RawSource = RawSource {
        table: "agent_runs",
        time: "completed_at",
        keys: &["coalesce(model, '')"],
        columns: &[
            "1",
            "(status = 'succeeded')::int",
            "round(runtime_ms * float8 '1000')::int8",
            "round(credits * float8 '1e6')::int8",
            "tokens_in",
            "tokens_out",
        ],
    };
    const ERRORS_RAW: RawSource = RawSource {
        table: "agent_errors",
        time: "occurred_at",
        keys: &["coalesce(error_type, '')", "coalesce(category, '')"],
        columns: &["1"],
    };
    const RESOURCES_RAW: RawSource = RawSource {
        table: "resource_samples",
        time: "ts",
        keys: &[],
        columns: &[
            "1",
            "(cpu_pct IS NOT NULL)::int",
            "coalesce(round(cpu_pct * 1000)::int8, 0)",
            "cpu_pct",
            "(mem_mb IS NOT NULL)::int",
            "coalesce(round(mem_mb * 1000)::int8, 0)",
            "mem_mb",
            "(cpu_limit_cores IS NOT NULL)::int",
            "coalesce(round(cpu_limit_cores * 1000)::int8, 0)",
            "(mem_limit_mb IS NOT NULL)::int",
            "coalesce(round(mem_limit_mb * 1000)::int8, 0)",
            "(cpu_pct IS NOT NULL AND cpu_limit_cores > 0)::int",
            "CASE WHEN cpu_pct IS NOT NULL AND cpu_limit_cores > 0
                  THEN round(least(cpu_pct / (100 * cpu_limit_cores), float8 '1e6') * float8 '1e6')::int8
                  ELSE 0 END",
            "(mem_mb IS NOT NULL AND mem_limit_mb > 0)::int",
            "CASE WHEN mem_mb IS NOT NULL AND mem_limit_mb > 0
                  THEN round(least(mem_mb / mem_limit_mb, float8 '1e6') * float8 '1e6')::int8
                  ELSE 0 END",
            "concurrent_runs",
            "queue_depth",
        ],
    };
    const FEEDBACK_RAW: RawSource = RawSource {
        table: "agent_user_feedback",
        time: "ts",
        keys: &[],
        columns: &[
            "1",
            "rating",
            "(rating = 1)::int",
            "(rating = 2)::int",
            "(rating = 3)::int",
            "(rating = 4)::int",
            "(rating = 5)::int",
        ],
    };
    match kind.name {
        "runs" => &RUNS_RAW,
        "models" => &MODELS_RAW,
        "errors" => &ERRORS_RAW,
        "resources" => &RESOURCES_RAW,
        _ => &FEEDBACK_RAW,
    }
}

/// A column's value over a bucket (and keys): an exact integer sum, or a min/max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i128),
    Float(Option<f64>),
}

/// The sums of a kind's columns over one bucket of a timeline (and one value of its keys).
#[derive(Debug, Clone)]
pub struct KindRow {
    pub bucket: usize,
    pub keys: Vec<String>,
    values: Vec<(&'static str, Value)>,
}

impl KindRow {
    /// An integer sum; 0 for a column the kind does not have.
    pub fn int(&self, column: &str) -> i128 {
        self.values
            .iter()
            .find_map(|(c, v)| match v {
                Value::Int(n) if *c == column => Some(*n),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// A min or max; `None` when nothing in the bucket carried it.
    pub fn float(&self, column: &str) -> Option<f64> {
        self.values.iter().find_map(|(c, v)| match v {
            Value::Float(x) if *c == column => *x,
            _ => None,
        })
    }
}

/// A plan bound to a workspace and agent. Its statements bind `$1` workspace, `$2` agent
/// (`''`: every agent of the workspace) and `$3` the bounds (`width_bucket`'s thresholds);
/// the ranges are written into the statement as literals, so PostgreSQL prunes the day and
/// month partitions outside them and scans only the index ranges inside them.
struct Bound<'a> {
    workspace: &'a str,
    agent: &'a str,
    plan: &'a Plan,
    /// Days and hours: where pending deltas count.
    folded: Ranges,
}

impl<'a> Bound<'a> {
    fn new(workspace: &'a str, agent: &'a str, plan: &'a Plan) -> Self {
        let mut folded = plan.days.clone();
        folded.extend(&plan.hours);
        // Days and hours interleave: keep the pending deltas' ranges in time order.
        let mut pairs: Vec<_> = folded.starts.into_iter().zip(folded.ends).collect();
        pairs.sort();
        let mut folded = Ranges::default();
        for (s, e) in pairs {
            folded.push(s, e);
        }
        Self {
            workspace,
            agent,
            plan,
            folded,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 3] {
        [&self.workspace, &self.agent, &self.plan.bounds]
    }
}

/// `column` inside one of `ranges`, as SQL (`false` for none).
fn in_ranges(column: &str, ranges: &Ranges) -> String {
    let lit =
        |t: &DateTime<Utc>| format!("'{}'::timestamptz", t.format("%Y-%m-%d %H:%M:%S%.6f+00"));
    let parts: Vec<String> = ranges
        .starts
        .iter()
        .zip(&ranges.ends)
        .map(|(s, e)| format!("({column} >= {} AND {column} < {})", lit(s), lit(e)))
        .collect();
    if parts.is_empty() {
        "false".into()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

/// How the sums of a read are split beyond their bucket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Split {
    /// Per agent (the read is of the whole workspace, agent `""`).
    pub agents: bool,
    /// Per value of the kind's keys (model; error type and category).
    pub keys: bool,
}

/// A kind's rollup rows in the plan's days (`daily`) or hours, as `r`: the rows of `$2`
/// (`''` being the workspace's), or with `each_agent` those of every agent.
fn rolled_from(b: &Bound, kind: &Kind, daily: bool, each_agent: bool) -> String {
    let (table, ranges) = if daily {
        ("daily", &b.plan.days)
    } else {
        ("hourly", &b.plan.hours)
    };
    // Every agent: by workspace and time (migration 0008's index for runs and resources).
    let agent = if each_agent {
        "agent_id <> ''"
    } else {
        "agent_id = $2"
    };
    format!(
        "(SELECT * FROM rollup_{name}_{table} WHERE workspace_id = $1 AND {agent} AND {ranges}) AS r",
        name = kind.name,
        ranges = in_ranges("bucket", ranges),
    )
}

/// A kind's pending deltas in the plan's days and hours, as `r`.
fn pending_from(b: &Bound, kind: &Kind) -> String {
    format!(
        "(SELECT * FROM rollup_delta_{name} WHERE workspace_id = $1 AND ($2 = '' OR agent_id = $2)
           AND {ranges}) AS r",
        name = kind.name,
        ranges = in_ranges("bucket", &b.folded),
    )
}

/// A kind's raw rows in the plan's raw ranges, as `r`.
fn raw_from(b: &Bound, kind: &Kind) -> String {
    let raw = raw_source(kind);
    format!(
        "(SELECT * FROM {table} WHERE workspace_id = $1 AND ($2 = '' OR agent_id = $2)
           AND {ranges}) AS r",
        table = raw.table,
        ranges = in_ranges(raw.time, &b.plan.raw),
    )
}

/// The names of the columns a read is grouped by beyond its bucket, and the raw rows'
/// expressions for them.
fn split_keys(kind: &Kind, split: Split) -> (Vec<&'static str>, Vec<&'static str>) {
    let raw = raw_source(kind);
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    if split.agents {
        names.push("agent_id");
        exprs.push("r.agent_id");
    }
    if split.keys {
        names.extend_from_slice(kind.keys);
        exprs.extend_from_slice(raw.keys);
    }
    (names, exprs)
}

/// The statement that sums `kind` over every bucket of a plan, split as asked.
fn kind_sql(b: &Bound, kind: &Kind, split: Split) -> String {
    let raw = raw_source(kind);
    let cols: Vec<_> = kind
        .columns
        .iter()
        .filter(|(_, m)| *m != Merge::Sketch)
        .collect();
    let (names, exprs) = split_keys(kind, split);
    let list = |items: Vec<String>| -> String { items.iter().map(|i| format!(", {i}")).collect() };
    let stored = list(
        names
            .iter()
            .map(|k| format!("r.{k}"))
            .chain(cols.iter().map(|(c, _)| format!("r.{c}")))
            .collect(),
    );
    let from_raw = list(
        exprs
            .iter()
            .zip(&names)
            .map(|(e, k)| format!("{e} AS {k}"))
            .chain(
                kind.columns
                    .iter()
                    .zip(raw.columns)
                    .filter(|((_, m), _)| *m != Merge::Sketch)
                    .map(|((c, _), e)| format!("{e} AS {c}")),
            )
            .collect(),
    );
    let group_keys: String = names.iter().map(|k| format!(", {k}")).collect();
    let aggs: String = cols
        .iter()
        .map(|(c, m)| match m {
            Merge::Sum => format!(", coalesce(sum({c}), 0)::text"),
            Merge::Min => format!(", min({c})::float8"),
            _ => format!(", max({c})::float8"),
        })
        .collect();
    let group_by: String = (1..=1 + names.len())
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT width_bucket(t, $3::timestamptz[]) - 1{group_keys}{aggs} FROM (
            SELECT r.bucket AS t{stored} FROM {daily}
            UNION ALL SELECT r.bucket{stored} FROM {hourly}
            UNION ALL SELECT r.bucket{stored} FROM {pending}
            UNION ALL SELECT r.{time}{from_raw} FROM {raw_from}
         ) AS u GROUP BY {group_by}",
        daily = rolled_from(b, kind, true, split.agents),
        hourly = rolled_from(b, kind, false, split.agents),
        pending = pending_from(b, kind),
        raw_from = raw_from(b, kind),
        time = raw.time,
    )
}

fn kind_rows(
    kind: &'static Kind,
    rows: Vec<tokio_postgres::Row>,
    split: Split,
) -> Result<Vec<KindRow>, StoreError> {
    let nkeys = split_keys(kind, split).0.len();
    rows.iter()
        .map(|row| {
            let mut values = Vec::with_capacity(kind.columns.len());
            let mut at = 1 + nkeys;
            for (c, m) in kind.columns {
                let v = match m {
                    Merge::Sketch => continue,
                    Merge::Sum => Value::Int(int(row.get(at))?),
                    Merge::Min | Merge::Max => Value::Float(row.get(at)),
                };
                values.push((*c, v));
                at += 1;
            }
            Ok(KindRow {
                bucket: row.get::<_, i32>(0).max(0) as usize,
                keys: (1..=nkeys).map(|i| row.get(i)).collect(),
                values,
            })
        })
        .collect()
}

/// The kind named `name` (`runs`, `models`, `errors`, `resources`, `feedback`).
pub fn kind(name: &str) -> &'static Kind {
    KINDS
        .iter()
        .copied()
        .find(|k| k.name == name)
        .unwrap_or(&RUNS)
}

/// Opens the snapshot every part of one answer is read in.
pub async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The sums of `kind` for `agent` (`""`: the whole workspace) over each bucket of `timeline`,
/// split as asked (`KindRow::keys`: the agent first, then the kind's keys); buckets (and
/// keys) with nothing are left out.
pub async fn kind_series(
    tx: &Transaction<'_>,
    kind: &'static Kind,
    workspace: &str,
    agent: &str,
    timeline: &Timeline,
    split: Split,
) -> Result<Vec<KindRow>, StoreError> {
    let plan = Plan::new(timeline);
    let bound = Bound::new(workspace, agent, &plan);
    let split = Split {
        agents: split.agents && agent.is_empty(),
        ..split
    };
    let rows = tx
        .query(&kind_sql(&bound, kind, split), &bound.params())
        .await?;
    kind_rows(kind, rows, split)
}

/// An agent's (or, with agent `""`, the workspace's) runs over a range or one bucket of it.
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
    /// Empty unless asked for ([`RunParts::sketch`]).
    pub runtime: Sketch,
    /// Empty unless asked for ([`RunParts::users`]).
    pub users: UserSet,
}

/// What of the runs to read beyond the sums, which are always read.
#[derive(Debug, Clone, Copy)]
pub struct RunParts {
    /// The runtime sketch (quantiles).
    pub sketch: bool,
    /// The distinct users.
    pub users: bool,
}

impl RunParts {
    pub const ALL: Self = Self {
        sketch: true,
        users: true,
    };
    pub const SUMS: Self = Self {
        sketch: false,
        users: false,
    };
}

impl RunTotals {
    /// The sums of a row of the runs kind (no sketch, no users).
    pub fn from_sums(row: &KindRow) -> Self {
        let count = |c: &str| row.int(c) as i64;
        Self {
            runs: count("runs"),
            succeeded: count("succeeded"),
            failed: count("failed"),
            timeout: count("timeout"),
            cancelled: count("cancelled"),
            runtime_us: row.int("runtime_us"),
            credits_micro: row.int("credits_micro"),
            tokens_in: row.int("tokens_in"),
            tokens_out: row.int("tokens_out"),
            ..Self::default()
        }
    }

    /// Sets the runtime sketch from its bins (`None`: the zero bin) and the runs' extremes.
    fn set_sketch(&mut self, mut bins: HashMap<Option<i32>, u64>, min: f64, max: f64) {
        let zeros = bins.remove(&None).unwrap_or(0);
        self.runtime = Sketch::from_bins(
            zeros,
            bins.into_iter().filter_map(|(k, n)| Some((k?, n))),
            self.runtime_us as f64 / 1000.0,
            min,
            max,
        );
    }
}

/// Runtime sketch bins per bucket: `(bucket, bin or NULL for the zero bin, count)`.
fn sketch_sql(b: &Bound) -> String {
    format!(
        "SELECT width_bucket(t, $3::timestamptz[]) - 1, bin, sum(n)::int8 FROM (
            SELECT r.bucket AS t, nullif(e.key, 'z')::int AS bin, e.value::int8 AS n
              FROM {daily} CROSS JOIN LATERAL jsonb_each_text(r.runtime_sketch) AS e
            UNION ALL SELECT r.bucket, nullif(e.key, 'z')::int, e.value::int8
              FROM {hourly} CROSS JOIN LATERAL jsonb_each_text(r.runtime_sketch) AS e
            UNION ALL SELECT r.bucket, b.bin, b.n
              FROM {pending} CROSS JOIN LATERAL unnest(r.sketch_bins, r.sketch_counts) AS b(bin, n)
            UNION ALL SELECT r.completed_at, hub_sketch_key(r.runtime_ms), 1 FROM {raw}
         ) AS u GROUP BY 1, 2",
        daily = rolled_from(b, &RUNS, true, false),
        hourly = rolled_from(b, &RUNS, false, false),
        pending = pending_from(b, &RUNS),
        raw = raw_from(b, &RUNS),
    )
}

/// The stored user sets per bucket, then (with a NULL set) each distinct user hash of the
/// pending deltas and the raw rows.
fn users_sql(b: &Bound) -> String {
    format!(
        "SELECT width_bucket(r.bucket, $3::timestamptz[]) - 1, r.users, NULL::int8
           FROM {daily} WHERE r.users IS NOT NULL
         UNION ALL SELECT width_bucket(r.bucket, $3::timestamptz[]) - 1, r.users, NULL
           FROM {hourly} WHERE r.users IS NOT NULL
         UNION ALL SELECT DISTINCT wb, NULL::bytea, h FROM (
            SELECT width_bucket(r.bucket, $3::timestamptz[]) - 1 AS wb, unnest(r.users) AS h
              FROM {pending} WHERE r.users IS NOT NULL
            UNION ALL SELECT width_bucket(r.completed_at, $3::timestamptz[]) - 1,
                             hub_user_hash(r.user_id)
              FROM {raw} WHERE r.user_id IS NOT NULL
         ) AS h",
        daily = rolled_from(b, &RUNS, true, false),
        hourly = rolled_from(b, &RUNS, false, false),
        pending = pending_from(b, &RUNS),
        raw = raw_from(b, &RUNS),
    )
}

/// The runs of `agent` (`""`: the whole workspace) over each bucket of `timeline`, one
/// [`RunTotals`] per bucket (zeros where nothing ran), read in `tx`'s snapshot.
pub async fn run_series(
    tx: &Transaction<'_>,
    workspace: &str,
    agent: &str,
    timeline: &Timeline,
    parts: RunParts,
) -> Result<Vec<RunTotals>, StoreError> {
    let plan = Plan::new(timeline);
    let bound = Bound::new(workspace, agent, &plan);
    let params = bound.params();
    let (sums_sql, sketch_sql, users_sql) = (
        kind_sql(&bound, &RUNS, Split::default()),
        sketch_sql(&bound),
        users_sql(&bound),
    );
    // One round trip: the statements are pipelined on the connection.
    let (sums, bins, users) = tokio::try_join!(
        tx.query(&sums_sql, &params),
        async {
            if parts.sketch {
                tx.query(&sketch_sql, &params).await
            } else {
                Ok(Vec::new())
            }
        },
        async {
            if parts.users {
                tx.query(&users_sql, &params).await
            } else {
                Ok(Vec::new())
            }
        },
    )?;
    let n = timeline.len();
    let mut series = vec![RunTotals::default(); n];
    let mut extremes = vec![(f64::INFINITY, f64::NEG_INFINITY); n];
    for row in kind_rows(&RUNS, sums, Split::default())? {
        let Some(t) = series.get_mut(row.bucket) else {
            continue;
        };
        *t = RunTotals::from_sums(&row);
        extremes[row.bucket] = (
            row.float("runtime_min").unwrap_or(f64::INFINITY),
            row.float("runtime_max").unwrap_or(f64::NEG_INFINITY),
        );
    }
    if parts.sketch {
        let mut per_bucket: Vec<HashMap<Option<i32>, u64>> = vec![HashMap::new(); n];
        for row in &bins {
            let b = row.get::<_, i32>(0).max(0) as usize;
            if let Some(bins) = per_bucket.get_mut(b) {
                *bins.entry(row.get(1)).or_default() += row.get::<_, i64>(2).max(0) as u64;
            }
        }
        for ((t, bins), (min, max)) in series.iter_mut().zip(per_bucket).zip(extremes) {
            let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
            t.set_sketch(bins, finite(min), finite(max));
        }
    }
    for row in &users {
        let b = row.get::<_, i32>(0).max(0) as usize;
        let Some(t) = series.get_mut(b) else {
            continue;
        };
        match row.get::<_, Option<&[u8]>>(1) {
            Some(set) => t
                .users
                .merge(&UserSet::decode(set).map_err(StoreError::Data)?),
            None => t
                .users
                .extend(row.get::<_, Option<i64>>(2).map(|h| h as u64)),
        }
    }
    Ok(series)
}

/// How many agents of `workspace` ran at least once in each bucket of `timeline`, counted in
/// SQL (one row per bucket comes back, however many agents there are).
pub async fn active_agents(
    tx: &Transaction<'_>,
    workspace: &str,
    timeline: &Timeline,
) -> Result<Vec<i64>, StoreError> {
    let plan = Plan::new(timeline);
    let bound = Bound::new(workspace, "", &plan);
    let split = Split {
        agents: true,
        keys: false,
    };
    let sql = format!(
        "SELECT b, count(*) FILTER (WHERE runs::int8 > 0)::int8
         FROM ({}) AS s(b, agent, runs) GROUP BY 1",
        kind_sql(&bound, &RUNS, split)
    );
    let mut counts = vec![0i64; timeline.len()];
    for row in tx.query(&sql, &bound.params()).await? {
        if let Some(n) = counts.get_mut(row.get::<_, i32>(0).max(0) as usize) {
            *n = row.get(1);
        }
    }
    Ok(counts)
}

/// The runs of each agent of `workspace` over the whole of `timeline` (its buckets ignored),
/// with their runtime sketches when `sketch`; agents that ran nothing are left out.
pub async fn runs_by_agent(
    tx: &Transaction<'_>,
    workspace: &str,
    timeline: &Timeline,
    sketch: bool,
) -> Result<Vec<(String, RunTotals)>, StoreError> {
    let whole = Timeline::whole(
        timeline.bounds[0],
        timeline.bounds[timeline.bounds.len() - 1],
    );
    let plan = Plan::new(&whole);
    let bound = Bound::new(workspace, "", &plan);
    let params = bound.params();
    let split = Split {
        agents: true,
        keys: false,
    };
    let sums_sql = kind_sql(&bound, &RUNS, split);
    let bins_sql = format!(
        "SELECT agent_id, bin, sum(n)::int8 FROM (
            SELECT r.agent_id, nullif(e.key, 'z')::int AS bin, e.value::int8 AS n
              FROM {daily} CROSS JOIN LATERAL jsonb_each_text(r.runtime_sketch) AS e
            UNION ALL SELECT r.agent_id, nullif(e.key, 'z')::int, e.value::int8
              FROM {hourly} CROSS JOIN LATERAL jsonb_each_text(r.runtime_sketch) AS e
            UNION ALL SELECT r.agent_id, b.bin, b.n
              FROM {pending} CROSS JOIN LATERAL unnest(r.sketch_bins, r.sketch_counts) AS b(bin, n)
            UNION ALL SELECT r.agent_id, hub_sketch_key(r.runtime_ms), 1 FROM {raw}
         ) AS u WHERE $3::timestamptz[] IS NOT NULL GROUP BY 1, 2",
        daily = rolled_from(&bound, &RUNS, true, true),
        hourly = rolled_from(&bound, &RUNS, false, true),
        pending = pending_from(&bound, &RUNS),
        raw = raw_from(&bound, &RUNS),
    );
    let (sums, bins) = tokio::try_join!(tx.query(&sums_sql, &params), async {
        if sketch {
            tx.query(&bins_sql, &params).await
        } else {
            Ok(Vec::new())
        }
    })?;
    let mut per_agent: HashMap<String, HashMap<Option<i32>, u64>> = HashMap::new();
    for row in &bins {
        *per_agent
            .entry(row.get(0))
            .or_default()
            .entry(row.get(1))
            .or_default() += row.get::<_, i64>(2).max(0) as u64;
    }
    kind_rows(&RUNS, sums, split)?
        .into_iter()
        .map(|row| {
            let agent = row.keys.first().cloned().unwrap_or_default();
            let mut t = RunTotals::from_sums(&row);
            if let Some(bins) = per_agent.remove(&agent) {
                t.set_sketch(
                    bins,
                    row.float("runtime_min").unwrap_or(0.0),
                    row.float("runtime_max").unwrap_or(0.0),
                );
            }
            Ok((agent, t))
        })
        .collect()
}

/// The runs of each user of `workspace` in `[from, to)`, from the raw rows (rollups keep
/// distinct users, not figures per user), with their runtime sketches.
pub async fn runs_by_user(
    client: &deadpool_postgres::Object,
    workspace: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, RunTotals)>, StoreError> {
    let filter = "FROM agent_runs WHERE workspace_id = $1 AND completed_at >= $2
                  AND completed_at < $3 AND user_id IS NOT NULL";
    let sums_sql = format!(
        "SELECT user_id, count(*), count(*) FILTER (WHERE status = 'succeeded'),
                count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'timeout'),
                count(*) FILTER (WHERE status = 'cancelled'),
                sum(round(runtime_ms * float8 '1000')::int8)::text,
                sum(round(credits * float8 '1e6')::int8)::text,
                sum(tokens_in)::text, sum(tokens_out)::text, min(runtime_ms), max(runtime_ms)
         {filter} GROUP BY 1"
    );
    let bins_sql =
        format!("SELECT user_id, hub_sketch_key(runtime_ms), count(*) {filter} GROUP BY 1, 2");
    let params: [&(dyn ToSql + Sync); 3] = [&workspace, &from, &to];
    let (sums, bins) = tokio::try_join!(
        client.query(&sums_sql, &params),
        client.query(&bins_sql, &params),
    )?;
    let mut per_user: HashMap<String, HashMap<Option<i32>, u64>> = HashMap::new();
    for row in &bins {
        *per_user
            .entry(row.get(0))
            .or_default()
            .entry(row.get(1))
            .or_default() += row.get::<_, i64>(2).max(0) as u64;
    }
    sums.iter()
        .map(|row| {
            let user: String = row.get(0);
            let mut t = RunTotals {
                runs: row.get(1),
                succeeded: row.get(2),
                failed: row.get(3),
                timeout: row.get(4),
                cancelled: row.get(5),
                runtime_us: int(row.get(6))?,
                credits_micro: int(row.get(7))?,
                tokens_in: int(row.get(8))?,
                tokens_out: int(row.get(9))?,
                ..RunTotals::default()
            };
            t.set_sketch(
                per_user.remove(&user).unwrap_or_default(),
                row.get(10),
                row.get(11),
            );
            Ok((user, t))
        })
        .collect()
}

/// The runs of `agent` (`""`: the whole workspace) of `workspace` in `[from, to)`.
pub async fn run_totals(
    client: &mut deadpool_postgres::Object,
    workspace: &str,
    agent: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<RunTotals, StoreError> {
    let tx = snapshot(client).await?;
    let mut series = run_series(
        &tx,
        workspace,
        agent,
        &Timeline::whole(from, to),
        RunParts::ALL,
    )
    .await?;
    tx.commit().await?;
    Ok(series.pop().unwrap_or_default())
}

fn int(text: String) -> Result<i128, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Data(format!("not an integer sum: {text}")))
}

/// A run as stored, with its error object when it carried one.
#[derive(Debug, Clone)]
pub struct Execution {
    pub event_id: String,
    pub run_id: Option<String>,
    pub user_id: Option<String>,
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: DateTime<Utc>,
    pub runtime_ms: f64,
    pub credits: f64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub model: Option<String>,
    pub error: Option<ExecutionError>,
}

#[derive(Debug, Clone)]
pub struct ExecutionError {
    pub error_type: Option<String>,
    pub category: Option<String>,
    pub severity: Option<String>,
    pub message: Option<String>,
}

/// Which runs of an agent a page holds: completed in `[from, to)`, with the given statuses
/// (all when empty), model and user, strictly before the cursor `(completed_at, event_id)`
/// (the last run of the previous page) when there is one.
#[derive(Debug, Clone)]
pub struct ExecutionQuery<'a> {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub statuses: Vec<&'a str>,
    pub model: Option<&'a str>,
    pub user: Option<&'a str>,
    pub before: Option<(DateTime<Utc>, &'a str)>,
    pub limit: i64,
}

/// A page of `agent`'s runs, newest first (ties by event id, descending).
pub async fn executions(
    client: &deadpool_postgres::Object,
    workspace: &str,
    agent: &str,
    q: &ExecutionQuery<'_>,
) -> Result<Vec<Execution>, StoreError> {
    // Without a cursor the page starts at `to`: every event id sorts after ''.
    let (before_at, before_id) = q.before.unwrap_or((q.to, ""));
    let (before_at, before_id) = if before_at > q.to {
        (q.to, "")
    } else {
        (before_at, before_id)
    };
    let rows = client
        .query(
            "SELECT r.event_id, r.run_id, r.user_id, r.status, r.started_at, r.completed_at,
                    r.runtime_ms, r.credits, r.tokens_in, r.tokens_out, r.model,
                    e.event_id IS NOT NULL, e.error_type, e.category, e.severity, e.message
             FROM agent_runs AS r
             LEFT JOIN agent_errors AS e ON e.workspace_id = r.workspace_id
              AND e.event_id = r.event_id AND e.occurred_at = r.completed_at
             WHERE r.workspace_id = $1 AND r.agent_id = $2 AND r.completed_at >= $3
               AND (r.completed_at, r.event_id) < ($4, $5)
               AND (cardinality($6::text[]) = 0 OR r.status = ANY($6))
               AND ($7::text IS NULL OR r.model = $7)
               AND ($8::text IS NULL OR r.user_id = $8)
             ORDER BY r.completed_at DESC, r.event_id DESC
             LIMIT $9",
            &[
                &workspace,
                &agent,
                &q.from,
                &before_at,
                &before_id,
                &q.statuses,
                &q.model,
                &q.user,
                &q.limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Execution {
            event_id: r.get(0),
            run_id: r.get(1),
            user_id: r.get(2),
            status: r.get(3),
            started_at: r.get(4),
            completed_at: r.get(5),
            runtime_ms: r.get(6),
            credits: r.get(7),
            tokens_in: r.get(8),
            tokens_out: r.get(9),
            model: r.get(10),
            error: r.get::<_, bool>(11).then(|| ExecutionError {
                error_type: r.get(12),
                category: r.get(13),
                severity: r.get(14),
                message: r.get(15),
            }),
        })
        .collect())
}

/// Whether `agent` of `workspace` was heard from (runs, heartbeats or feedback) within
/// retention: an agent the hub has never heard of is not one with no runs.
pub async fn agent_known(
    client: &impl deadpool_postgres::GenericClient,
    workspace: &str,
    agent: &str,
) -> Result<bool, StoreError> {
    let mut parts = vec![
        "EXISTS (SELECT 1 FROM rollup_agents WHERE workspace_id = $1 AND agent_id = $2)".to_owned(),
    ];
    for kind in KINDS.iter().filter(|k| k.marks_seen()) {
        parts.push(format!(
            "EXISTS (SELECT 1 FROM rollup_delta_{} WHERE workspace_id = $1 AND agent_id = $2)",
            kind.name
        ));
    }
    let sql = format!("SELECT {}", parts.join(" OR "));
    Ok(client.query_one(&sql, &[&workspace, &agent]).await?.get(0))
}

/// `(agent_id, first_hour, last_hour)` of the agents of workspace `$1` (and `filter`), folded
/// (`rollup_agents`) and in the deltas not folded yet, one row per source.
fn seen_sql(filter: &str) -> String {
    let mut parts = vec![format!(
        "SELECT agent_id, first_hour, last_hour FROM rollup_agents WHERE workspace_id = $1 {filter}"
    )];
    for kind in KINDS.iter().filter(|k| k.marks_seen()) {
        parts.push(format!(
            "SELECT agent_id, min(bucket), max(bucket) FROM rollup_delta_{}
             WHERE workspace_id = $1 {filter} GROUP BY 1",
            kind.name
        ));
    }
    parts.join(" UNION ALL ")
}

/// An agent the workspace has heard from, and the first and last hour it did.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownAgent {
    pub agent_id: String,
    pub first_hour: DateTime<Utc>,
    pub last_hour: DateTime<Utc>,
}

/// Every agent `workspace` has heard from within retention, exact up to now (the folded ones
/// and those of the deltas not folded yet), in id order.
pub async fn known_agents(
    tx: &Transaction<'_>,
    workspace: &str,
) -> Result<Vec<KnownAgent>, StoreError> {
    let sql = format!(
        "SELECT agent_id, min(first_hour), max(last_hour) FROM ({}) AS a GROUP BY 1 ORDER BY 1",
        seen_sql("")
    );
    Ok(tx
        .query(&sql, &[&workspace])
        .await?
        .iter()
        .map(|r| KnownAgent {
            agent_id: r.get(0),
            first_hour: r.get(1),
            last_hour: r.get(2),
        })
        .collect())
}

/// When `agent` was first and last heard from, to the event: the earliest and latest event
/// time (runs, heartbeats, feedback) in its first and last hour; the hour itself where its raw
/// rows are past `retention.raw`.
pub async fn agent_seen(
    tx: &Transaction<'_>,
    workspace: &str,
    agent: &str,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
    let Some(known) = known_agents_of(tx, workspace, agent).await? else {
        return Ok(None);
    };
    let hour = Duration::hours(1);
    let edge = |agg: &str| {
        format!(
            "SELECT {agg}(t) FROM (
               SELECT {agg}(completed_at) FROM agent_runs
                WHERE workspace_id = $1 AND agent_id = $2 AND completed_at >= $3 AND completed_at < $4
               UNION ALL SELECT {agg}(ts) FROM resource_samples
                WHERE workspace_id = $1 AND agent_id = $2 AND ts >= $3 AND ts < $4
               UNION ALL SELECT {agg}(ts) FROM agent_user_feedback
                WHERE workspace_id = $1 AND agent_id = $2 AND ts >= $3 AND ts < $4
             ) AS e(t)"
        )
    };
    let (first_sql, last_sql) = (edge("min"), edge("max"));
    let (first_end, last_end) = (known.first_hour + hour, known.last_hour + hour);
    let first_params: [&(dyn ToSql + Sync); 4] =
        [&workspace, &agent, &known.first_hour, &first_end];
    let last_params: [&(dyn ToSql + Sync); 4] = [&workspace, &agent, &known.last_hour, &last_end];
    let (first, last) = tokio::try_join!(
        tx.query_one(&first_sql, &first_params),
        tx.query_one(&last_sql, &last_params),
    )?;
    Ok(Some((
        first
            .get::<_, Option<DateTime<Utc>>>(0)
            .unwrap_or(known.first_hour),
        last.get::<_, Option<DateTime<Utc>>>(0)
            .unwrap_or(known.last_hour),
    )))
}

async fn known_agents_of(
    tx: &Transaction<'_>,
    workspace: &str,
    agent: &str,
) -> Result<Option<KnownAgent>, StoreError> {
    let sql = format!(
        "SELECT min(first_hour), max(last_hour) FROM ({}) AS a",
        seen_sql("AND agent_id = $2")
    );
    let row = tx.query_one(&sql, &[&workspace, &agent]).await?;
    Ok(row
        .get::<_, Option<DateTime<Utc>>>(0)
        .zip(row.get::<_, Option<DateTime<Utc>>>(1))
        .map(|(first_hour, last_hour)| KnownAgent {
            agent_id: agent.to_owned(),
            first_hour,
            last_hour,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timeline::Granularity;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn pieces(r: &Ranges) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        r.starts
            .iter()
            .copied()
            .zip(r.ends.iter().copied())
            .collect()
    }

    /// The parts of a plan tile the range exactly, rollup parts are whole UTC hours (days)
    /// that no bucket boundary cuts, and raw parts are no longer than they must be.
    fn check(timeline: &Timeline) -> Plan {
        let plan = Plan::new(timeline);
        let (from, to) = (timeline.bounds[0], *timeline.bounds.last().unwrap());
        let mut all: Vec<_> = [&plan.days, &plan.hours, &plan.raw]
            .iter()
            .flat_map(|r| pieces(r))
            .collect();
        all.sort();
        assert_eq!(all.first().unwrap().0, from);
        assert_eq!(all.last().unwrap().1, to);
        for w in all.windows(2) {
            assert_eq!(w[0].1, w[1].0, "gap or overlap in {all:?}");
        }
        let inner = &timeline.bounds[1..timeline.bounds.len() - 1];
        let cut = |s: DateTime<Utc>, e: DateTime<Utc>| inner.iter().any(|b| s < *b && *b < e);
        for (s, e) in pieces(&plan.days) {
            assert_eq!(s.duration_trunc(Duration::days(1)).unwrap(), s);
            assert_eq!((e - s).num_seconds() % 86_400, 0);
            let mut d = s;
            while d < e {
                assert!(!cut(d, d + Duration::days(1)), "a day cut at {d}");
                d += Duration::days(1);
            }
        }
        for (s, e) in pieces(&plan.hours) {
            assert_eq!(s.duration_trunc(Duration::hours(1)).unwrap(), s);
            let mut h = s;
            while h < e {
                assert!(!cut(h, h + Duration::hours(1)), "an hour cut at {h}");
                h += Duration::hours(1);
            }
        }
        let raw_secs: i64 = pieces(&plan.raw)
            .iter()
            .map(|(s, e)| (*e - *s).num_seconds())
            .sum();
        // At most the two edges and one hour per inner boundary off the hour.
        let off_hour = inner
            .iter()
            .filter(|b| b.duration_trunc(Duration::hours(1)).unwrap() != **b)
            .count() as i64;
        assert!(raw_secs <= 2 * 3600 + off_hour * 3600, "{raw_secs} s raw");
        plan
    }

    #[test]
    fn a_utc_month_of_days_reads_daily_rollups_and_two_raw_edges() {
        let tl = Timeline::new(
            t("2026-11-03T10:20:00Z"),
            t("2026-12-03T10:20:00Z"),
            Granularity::Day,
            chrono_tz::UTC,
        );
        let plan = check(&tl);
        assert_eq!(
            pieces(&plan.days),
            vec![(t("2026-11-04T00:00:00Z"), t("2026-12-03T00:00:00Z"))]
        );
        assert_eq!(
            pieces(&plan.raw),
            vec![
                (t("2026-11-03T10:20:00Z"), t("2026-11-03T11:00:00Z")),
                (t("2026-12-03T10:00:00Z"), t("2026-12-03T10:20:00Z"))
            ]
        );
    }

    #[test]
    fn half_hour_zones_read_the_cut_hours_raw() {
        let tl = Timeline::new(
            t("2026-11-01T00:00:00Z"),
            t("2026-11-05T00:00:00Z"),
            Granularity::Day,
            chrono_tz::Asia::Kolkata,
        );
        let plan = check(&tl);
        assert!(plan.days.starts.is_empty());
        assert_eq!(plan.raw.starts.len(), 4);
        assert_eq!(plan.raw.starts[0], t("2026-11-01T18:00:00Z"));
    }

    #[test]
    fn plans_tile_every_kind_of_timeline() {
        let ends = [
            ("2026-10-01T00:00:00Z", "2026-12-03T17:45:12Z"),
            ("2026-12-03T17:05:00Z", "2026-12-03T17:45:00Z"),
            ("2026-12-02T17:00:00Z", "2026-12-03T17:00:00Z"),
            ("2026-03-20T00:00:00Z", "2026-04-02T00:00:01Z"),
        ];
        for (from, to) in ends {
            for g in [
                Granularity::Hour,
                Granularity::Day,
                Granularity::Week,
                Granularity::Month,
            ] {
                for tz in [
                    chrono_tz::UTC,
                    chrono_tz::Europe::Paris,
                    chrono_tz::Asia::Kolkata,
                    chrono_tz::Pacific::Chatham,
                ] {
                    check(&Timeline::new(t(from), t(to), g, tz));
                }
            }
            check(&Timeline::whole(t(from), t(to)));
        }
    }
}
