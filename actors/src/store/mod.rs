//! PostgreSQL: pools, migrations, day partitions, the idempotent batch insert and the
//! window rebuild. SQL lives in `sql/*.sql`.

pub mod alerts;
pub mod anomalies;
pub mod channels;
pub mod deltas;
pub mod forecast;
pub mod history;
mod migrate;
mod snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use futures_util::{pin_mut, TryStreamExt};
use parking_lot::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config as PgConfig, GenericClient, NoTls};

use crate::config::DatabaseConfig;
use crate::domain::event::{Event, EventKind, Feedback, Heartbeat, Run, RunStatus};
use crate::domain::ids::{AgentId, EventId, WorkspaceId};

pub use migrate::{migrate, MIGRATIONS};
pub use snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("bad database url: {0}")]
    Url(String),
    #[error("unexpected data: {0}")]
    Data(String),
}

impl StoreError {
    /// Whether the database refused the data itself (SQLSTATE class 22, data exception, or
    /// 23, integrity constraint violation): the same statement would fail again.
    pub fn is_data_error(&self) -> bool {
        let Self::Db(e) = self else { return false };
        e.as_db_error()
            .and_then(|db| db.code().code().get(..2))
            .is_some_and(|class| class == "22" || class == "23")
    }
}

/// Builds a pool. Waiting for a connection, creating one and recycling one are all bounded
/// by `database.connect_timeout`, so a request never hangs on a database that is down.
pub fn create_pool(cfg: &DatabaseConfig, max_size: usize) -> Result<Pool, StoreError> {
    create_pool_with(cfg, max_size, None)
}

/// [`create_pool`] whose connections have the server-side `statement_timeout` given.
pub fn create_pool_with(
    cfg: &DatabaseConfig,
    max_size: usize,
    statement_timeout: Option<Duration>,
) -> Result<Pool, StoreError> {
    let mut pg: PgConfig = cfg
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Url(e.to_string()))?;
    if let Some(t) = statement_timeout.filter(|t| !t.is_zero()) {
        let options = pg
            .get_options()
            .map(|o| format!("{o} "))
            .unwrap_or_default();
        pg.options(format!("{options}-c statement_timeout={}", t.as_millis()));
    }
    pg.connect_timeout(cfg.connect_timeout.get());
    pg.application_name("shadower-hub");
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(cfg.connect_timeout.get());
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        })
        .build()
        .map_err(|e| StoreError::Url(e.to_string()))
}

/// Creates the configured database when the server answers that it does not exist, so a
/// fresh machine needs no manual `createdb`.
pub async fn ensure_database(cfg: &DatabaseConfig) -> Result<(), StoreError> {
    let pg: PgConfig = cfg
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Url(e.to_string()))?;
    let connect = |pg: PgConfig| async move {
        let (client, conn) = pg.connect(NoTls).await?;
        tokio::spawn(conn);
        Ok::<_, tokio_postgres::Error>(client)
    };
    match connect(pg.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            let name = pg.get_dbname().unwrap_or("postgres").to_owned();
            let mut admin = pg.clone();
            admin.dbname("postgres");
            let client = connect(admin).await?;
            let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    tracing::info!(database = %name, "Created the database.");
                    Ok(())
                }
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Day partitions known to exist, so the hot path asks the database only for new days.
#[derive(Debug, Default, Clone)]
pub struct Partitions(Arc<Mutex<HashSet<NaiveDate>>>);

impl Partitions {
    /// Makes sure every day in `days` has its partitions.
    pub async fn ensure(
        &self,
        client: &impl GenericClient,
        days: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<(), StoreError> {
        let missing: Vec<NaiveDate> = {
            let known = self.0.lock();
            let mut m: Vec<_> = days.into_iter().filter(|d| !known.contains(d)).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        for day in missing {
            client
                .execute("SELECT hub_ensure_day_partitions($1)", &[&day])
                .await?;
            self.0.lock().insert(day);
        }
        Ok(())
    }
}

impl Partitions {
    /// Drops `day` from the cache (its partitions were dropped).
    pub fn forget(&self, day: NaiveDate) {
        self.0.lock().remove(&day);
    }
}

/// The raw tables, each range-partitioned by day.
pub const RAW_TABLES: [&str; 4] = [
    "agent_runs",
    "agent_errors",
    "resource_samples",
    "agent_user_feedback",
];

/// Longest a housekeeping statement waits for a lock. Creating or dropping a partition
/// takes an exclusive lock on its parent table, and inserts queue behind a waiting DDL
/// statement: one that cannot have its locks at once gives up (it is tried again on the next
/// pass) rather than stall ingest behind a long reader.
pub const MAINTENANCE_LOCK_TIMEOUT: &str = "100ms";

impl StoreError {
    /// Whether a statement gave up waiting for a lock (`lock_timeout`).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, Self::Db(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE))
    }
}

/// What a retention pass dropped.
#[derive(Debug, Default)]
pub struct Dropped {
    pub days: Vec<NaiveDate>,
    /// Partitions past the cutoff left for the next pass (their locks were busy).
    pub deferred: usize,
}

/// The partitions of the tables named `parents`.
async fn partitions_of(
    client: &impl GenericClient,
    parents: &[impl AsRef<str> + Sync],
) -> Result<Vec<String>, StoreError> {
    let parents: Vec<&str> = parents.iter().map(|p| p.as_ref()).collect();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = ANY($1)",
            &[&parents],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Drops every raw partition whose whole day is before `cutoff`. Run with a `lock_timeout`
/// ([`MAINTENANCE_LOCK_TIMEOUT`]): a partition whose locks are busy is left for later.
pub async fn drop_partitions_before(
    client: &impl GenericClient,
    cutoff: NaiveDate,
) -> Result<Dropped, StoreError> {
    let old: Vec<(String, NaiveDate)> = partitions_of(client, &RAW_TABLES)
        .await?
        .into_iter()
        .filter_map(|name| {
            let day = crate::maintenance::partition_day(&name)?;
            (day < cutoff).then_some((name, day))
        })
        .collect();
    let mut dropped = Dropped::default();
    if old.is_empty() {
        return Ok(dropped);
    }
    for (name, day) in old {
        match client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .await
            .map_err(StoreError::Db)
        {
            Ok(()) => dropped.days.push(day),
            Err(e) if e.is_lock_timeout() => dropped.deferred += 1,
            Err(e) => return Err(e),
        }
    }
    dropped.days.sort_unstable();
    dropped.days.dedup();
    Ok(dropped)
}

/// Drops every rollup month partition whose whole month is before `cutoff`; returns how many.
/// A partition whose locks are busy (under the caller's `lock_timeout`) waits for a later pass.
pub async fn drop_rollup_months_before(
    client: &impl GenericClient,
    cutoff: NaiveDate,
) -> Result<usize, StoreError> {
    let parents: Vec<String> = crate::rollup::KINDS
        .iter()
        .flat_map(|k| ["hourly", "daily"].map(|grain| format!("rollup_{}_{grain}", k.name)))
        .collect();
    let mut dropped = 0;
    for name in partitions_of(client, &parents).await? {
        let Some(month) = crate::maintenance::partition_month(&name) else {
            continue;
        };
        let Some(end) = month.checked_add_months(chrono::Months::new(1)) else {
            continue;
        };
        if end > cutoff {
            continue;
        }
        match client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .await
            .map_err(StoreError::Db)
        {
            Ok(()) => dropped += 1,
            Err(e) if e.is_lock_timeout() => {}
            Err(e) => return Err(e),
        }
    }
    // What is left begins with the cutoff's month: agents last heard from before it are
    // forgotten, the others' first hour is no older than it.
    let kept_from = cutoff.with_day(1).unwrap_or(cutoff);
    let kept_from = kept_from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    client
        .execute(
            "DELETE FROM rollup_agents WHERE last_hour < $1",
            &[&kept_from],
        )
        .await?;
    client
        .execute(
            "UPDATE rollup_agents SET first_hour = $1 WHERE first_hour < $1",
            &[&kept_from],
        )
        .await?;
    Ok(dropped)
}

/// Forgets the ids of events first received before `cutoff` whose event time is before
/// `dropped_before` (the partitions that held them are gone), in bounded batches so no
/// statement holds locks for long; returns how many were deleted. An id is never forgotten
/// while its row may still be stored: a resend then would store a second copy.
pub async fn forget_event_ids_before(
    client: &impl GenericClient,
    cutoff: DateTime<Utc>,
    dropped_before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    const BATCH: i64 = 10_000;
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM ingested_events WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM ingested_events
                     WHERE received_at < $1 AND event_time < $2 LIMIT $3))",
                &[&cutoff, &dropped_before, &BATCH],
            )
            .await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// One event of a batch, with its workspace.
pub type Row<'a> = (&'a WorkspaceId, &'a Event);

/// Inserts a batch idempotently, in one statement (its own transaction). Returns, for each
/// input row, whether this insert was the first write of its `(workspace_id, event_id)`, and
/// the transaction id (to match against rebuild snapshots; 0 when nothing was new). A key
/// repeated inside the batch is new at most once, at its first occurrence.
pub async fn insert_batch(
    client: &deadpool_postgres::Object,
    rows: &[Row<'_>],
) -> Result<(Vec<bool>, u64), StoreError> {
    // Where each key first occurs; later occurrences are not sent at all.
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(rows.len());
    for (i, (w, e)) in rows.iter().enumerate() {
        first.entry((w.as_str(), e.event_id.as_str())).or_insert(i);
    }
    let unique: Vec<Row> = rows
        .iter()
        .enumerate()
        .filter(|(i, (w, e))| first[&(w.as_str(), e.event_id.as_str())] == *i)
        .map(|(_, r)| *r)
        .collect();
    let cols = Columns::of(&unique);
    let (sql, params) = cols.statement();
    let stmt = client.prepare_cached(sql).await?;
    let inserted = client.query(&stmt, &params).await?;
    let mut is_new = vec![false; rows.len()];
    for row in &inserted {
        if let Some(&i) = first.get(&(row.get::<_, &str>(0), row.get::<_, &str>(1))) {
            is_new[i] = true;
        }
    }
    let xid: i64 = inserted.first().map_or(0, |r| r.get(2));
    Ok((is_new, xid as u64))
}

/// The batch as column arrays, one set per table, in `insert_batch.sql`'s parameter order.
#[derive(Default)]
struct Columns<'a> {
    id_ws: Vec<&'a str>,
    id_event: Vec<&'a str>,
    id_kind: Vec<i16>,
    id_time: Vec<DateTime<Utc>>,

    run_ws: Vec<&'a str>,
    run_event: Vec<&'a str>,
    run_agent: Vec<&'a str>,
    run_id: Vec<Option<&'a str>>,
    run_user: Vec<Option<&'a str>>,
    run_status: Vec<&'static str>,
    run_started: Vec<Option<DateTime<Utc>>>,
    run_completed: Vec<DateTime<Utc>>,
    run_runtime: Vec<f64>,
    run_credits: Vec<f64>,
    run_tokens_in: Vec<i64>,
    run_tokens_out: Vec<i64>,
    run_model: Vec<Option<&'a str>>,

    err_ws: Vec<&'a str>,
    err_event: Vec<&'a str>,
    err_agent: Vec<&'a str>,
    err_run: Vec<Option<&'a str>>,
    err_at: Vec<DateTime<Utc>>,
    err_type: Vec<Option<&'a str>>,
    err_category: Vec<Option<&'a str>>,
    err_severity: Vec<Option<&'static str>>,
    err_message: Vec<Option<&'a str>>,

    hb_ws: Vec<&'a str>,
    hb_event: Vec<&'a str>,
    hb_agent: Vec<&'a str>,
    hb_ts: Vec<DateTime<Utc>>,
    hb_cpu: Vec<Option<f64>>,
    hb_mem: Vec<Option<f64>>,
    hb_mem_limit: Vec<Option<f64>>,
    hb_cores: Vec<Option<f64>>,
    hb_concurrent: Vec<Option<i64>>,
    hb_queue: Vec<Option<i64>>,

    fb_ws: Vec<&'a str>,
    fb_event: Vec<&'a str>,
    fb_agent: Vec<&'a str>,
    fb_user: Vec<Option<&'a str>>,
    fb_ts: Vec<DateTime<Utc>>,
    fb_rating: Vec<i16>,
    fb_text: Vec<Option<&'a str>>,

    /// Events sent (each key once), and the batch's rollup deltas should every one be new.
    sent: i64,
    deltas: [serde_json::Value; 5],
}

impl<'a> Columns<'a> {
    fn of(rows: &[Row<'a>]) -> Self {
        let mut c = Self::default();
        for &(ws, e) in rows {
            let (ws, id, agent) = (ws.as_str(), e.event_id.as_str(), e.agent_id.as_str());
            c.id_ws.push(ws);
            c.id_event.push(id);
            c.id_kind.push(e.kind_code());
            c.id_time.push(e.time());
            match &e.kind {
                EventKind::Run(r) => {
                    c.run_ws.push(ws);
                    c.run_event.push(id);
                    c.run_agent.push(agent);
                    c.run_id.push(r.run_id.as_deref());
                    c.run_user.push(r.user_id.as_deref());
                    c.run_status.push(r.status.as_str());
                    c.run_started.push(r.started_at);
                    c.run_completed.push(r.completed_at);
                    c.run_runtime.push(r.runtime_ms);
                    c.run_credits.push(r.credits);
                    c.run_tokens_in.push(r.tokens_in);
                    c.run_tokens_out.push(r.tokens_out);
                    c.run_model.push(r.model.as_deref());
                    if let Some(err) = &r.error {
                        c.err_ws.push(ws);
                        c.err_event.push(id);
                        c.err_agent.push(agent);
                        c.err_run.push(r.run_id.as_deref());
                        c.err_at.push(r.completed_at);
                        c.err_type.push(err.error_type.as_deref());
                        c.err_category.push(err.category.as_deref());
                        c.err_severity.push(err.severity.map(|s| s.as_str()));
                        c.err_message.push(err.message.as_deref());
                    }
                }
                EventKind::Heartbeat(h) => {
                    c.hb_ws.push(ws);
                    c.hb_event.push(id);
                    c.hb_agent.push(agent);
                    c.hb_ts.push(h.ts);
                    c.hb_cpu.push(h.cpu_pct);
                    c.hb_mem.push(h.mem_mb);
                    c.hb_mem_limit.push(h.mem_limit_mb);
                    c.hb_cores.push(h.cpu_limit_cores);
                    c.hb_concurrent.push(h.concurrent_runs);
                    c.hb_queue.push(h.queue_depth);
                }
                EventKind::Feedback(f) => {
                    c.fb_ws.push(ws);
                    c.fb_event.push(id);
                    c.fb_agent.push(agent);
                    c.fb_user.push(f.user_id.as_deref());
                    c.fb_ts.push(f.ts);
                    c.fb_rating.push(f.rating);
                    c.fb_text.push(f.text.as_deref());
                }
            }
        }
        c.sent = rows.len() as i64;
        c.deltas = deltas::of(rows);
        c
    }

    /// The statement for the kinds present in this batch, and its parameters. Leaving out
    /// the kinds that are absent keeps the common batch (runs only) a two-insert statement.
    fn statement(&self) -> (&'static str, Vec<&(dyn ToSql + Sync)>) {
        let ids: [&(dyn ToSql + Sync); 5] = [
            &self.id_ws,
            &self.id_event,
            &self.id_kind,
            &self.id_time,
            &self.sent,
        ];
        let runs: [&(dyn ToSql + Sync); 13] = [
            &self.run_ws,
            &self.run_event,
            &self.run_agent,
            &self.run_id,
            &self.run_user,
            &self.run_status,
            &self.run_started,
            &self.run_completed,
            &self.run_runtime,
            &self.run_credits,
            &self.run_tokens_in,
            &self.run_tokens_out,
            &self.run_model,
        ];
        let errors: [&(dyn ToSql + Sync); 9] = [
            &self.err_ws,
            &self.err_event,
            &self.err_agent,
            &self.err_run,
            &self.err_at,
            &self.err_type,
            &self.err_category,
            &self.err_severity,
            &self.err_message,
        ];
        let heartbeats: [&(dyn ToSql + Sync); 10] = [
            &self.hb_ws,
            &self.hb_event,
            &self.hb_agent,
            &self.hb_ts,
            &self.hb_cpu,
            &self.hb_mem,
            &self.hb_mem_limit,
            &self.hb_cores,
            &self.hb_concurrent,
            &self.hb_queue,
        ];
        let feedback: [&(dyn ToSql + Sync); 7] = [
            &self.fb_ws,
            &self.fb_event,
            &self.fb_agent,
            &self.fb_user,
            &self.fb_ts,
            &self.fb_rating,
            &self.fb_text,
        ];
        let present = [
            !self.run_ws.is_empty(),
            !self.err_ws.is_empty(),
            !self.hb_ws.is_empty(),
            !self.fb_ws.is_empty(),
        ];
        let mut params: Vec<&(dyn ToSql + Sync)> = ids.to_vec();
        for (on, group) in
            present
                .iter()
                .zip([&runs[..], &errors[..], &heartbeats[..], &feedback[..]])
        {
            if *on {
                params.extend_from_slice(group);
            }
        }
        params.extend(self.deltas.iter().map(|d| d as &(dyn ToSql + Sync)));
        let mask = present
            .iter()
            .enumerate()
            .fold(0, |m, (i, on)| m | (usize::from(*on) << i));
        (batch_sql(mask), params)
    }
}

/// The batch statement for a set of present kinds (bit 0 runs, 1 errors, 2 heartbeats,
/// 3 feedback), assembled once per set from the `sql/batch_*.sql` fragments.
fn batch_sql(mask: usize) -> &'static str {
    static CACHE: [std::sync::OnceLock<String>; 16] = [const { std::sync::OnceLock::new() }; 16];
    CACHE[mask].get_or_init(|| {
        // Each kind's insert, then the rollup deltas of the rows it inserted.
        let fragments = [
            concat!(
                include_str!("sql/batch_runs.sql"),
                include_str!("sql/delta_runs.sql")
            ),
            concat!(
                include_str!("sql/batch_errors.sql"),
                include_str!("sql/delta_errors.sql")
            ),
            concat!(
                include_str!("sql/batch_heartbeats.sql"),
                include_str!("sql/delta_heartbeats.sql")
            ),
            concat!(
                include_str!("sql/batch_feedback.sql"),
                include_str!("sql/delta_feedback.sql")
            ),
        ];
        let mut sql = String::new();
        let mut next = 1;
        let parts = std::iter::once(include_str!("sql/batch_ids.sql"))
            .chain(
                fragments
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, f)| *f),
            )
            .chain(std::iter::once(include_str!("sql/delta_fast.sql")));
        for part in parts {
            // Number this fragment's `{n}` placeholders after the previous fragments' ones.
            let mut n = 1;
            let mut text = part.to_owned();
            while text.contains(&format!("{{{n}}}")) {
                text = text.replace(&format!("{{{n}}}"), &format!("${}", next + n - 1));
                n += 1;
            }
            next += n - 1;
            sql.push_str(&text);
        }
        sql.push_str("SELECT workspace_id, event_id, pg_current_xact_id()::text::int8 FROM ids\n");
        sql
    })
}

/// Everything a workspace actor needs to rebuild its windows: the stored events since
/// `since`, and the snapshot they were read under (to skip later applies it already holds).
pub struct Recent {
    pub snapshot: Snapshot,
    pub events: Vec<Event>,
    /// Detector buckets older than the events, read in the same snapshot (when asked).
    pub history: anomalies::History,
}

/// Detector history to read with the recent events: buckets of `bucket_ms` over
/// `[from, to)`.
#[derive(Debug, Clone, Copy)]
pub struct HistoryRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_ms: i64,
}

/// Reads a workspace's events since `since` in one REPEATABLE READ transaction, and the
/// detector history of `history` in the same snapshot.
pub async fn load_recent(
    pool: &Pool,
    ws: &WorkspaceId,
    since: DateTime<Utc>,
    history: Option<HistoryRange>,
) -> Result<Recent, StoreError> {
    let mut client = pool.get().await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot: String = tx
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    let snapshot = Snapshot::parse(&snapshot)
        .ok_or_else(|| StoreError::Data(format!("snapshot {snapshot}")))?;
    let mut events = Vec::new();
    let params: [&(dyn ToSql + Sync); 2] = [&ws.as_str(), &since];

    read_events(
        &tx,
        include_str!("sql/recent_runs.sql"),
        params,
        &mut events,
        |row| {
            let status: &str = row.get(2);
            Ok(EventKind::Run(Run {
                run_id: None,
                user_id: None,
                status: RunStatus::parse(status)
                    .ok_or_else(|| StoreError::Data(format!("status {status}")))?,
                started_at: None,
                completed_at: row.get(3),
                runtime_ms: row.get(4),
                credits: row.get(5),
                tokens_in: row.get(6),
                tokens_out: row.get(7),
                model: row.get(8),
                error: None,
            }))
        },
    )
    .await?;
    read_events(
        &tx,
        include_str!("sql/recent_heartbeats.sql"),
        params,
        &mut events,
        |row| {
            Ok(EventKind::Heartbeat(Heartbeat {
                ts: row.get(2),
                cpu_pct: row.get(3),
                mem_mb: row.get(4),
                mem_limit_mb: row.get(5),
                cpu_limit_cores: row.get(6),
                concurrent_runs: row.get(7),
                queue_depth: row.get(8),
            }))
        },
    )
    .await?;
    read_events(
        &tx,
        include_str!("sql/recent_feedback.sql"),
        params,
        &mut events,
        |row| {
            Ok(EventKind::Feedback(Feedback {
                user_id: None,
                ts: row.get(2),
                rating: row.get(3),
                text: None,
            }))
        },
    )
    .await?;
    let history = match history {
        Some(h) if h.from < h.to => {
            anomalies::history(&tx, ws, h.from, h.to, h.bucket_ms, None).await?
        }
        _ => anomalies::History::new(),
    };
    tx.commit().await?;
    Ok(Recent {
        snapshot,
        events,
        history,
    })
}

/// Streams `sql`'s rows (columns 0 and 1: event_id, agent_id) into `events`.
async fn read_events(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: [&(dyn ToSql + Sync); 2],
    events: &mut Vec<Event>,
    kind: impl Fn(&tokio_postgres::Row) -> Result<EventKind, StoreError>,
) -> Result<(), StoreError> {
    let stream = tx.query_raw(sql, params).await?;
    pin_mut!(stream);
    while let Some(row) = stream.try_next().await? {
        events.push(Event {
            event_id: stored_event_id(row.get(0))?,
            agent_id: stored_agent_id(row.get(1))?,
            kind: kind(&row)?,
        });
    }
    Ok(())
}

fn stored_event_id(s: &str) -> Result<EventId, StoreError> {
    EventId::parse(s).map_err(|e| StoreError::Data(format!("event_id {s:?}: {e}")))
}

fn stored_agent_id(s: &str) -> Result<AgentId, StoreError> {
    AgentId::parse(s).map_err(|e| StoreError::Data(format!("agent_id {s:?}: {e}")))
}

/// A cheap write probe for readiness: fails when the server is down or read-only.
pub async fn probe_writable(pool: &Pool) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let read_only: String = client
        .query_one("SHOW transaction_read_only", &[])
        .await?
        .get(0);
    if read_only == "on" {
        return Err(StoreError::Data("the database is read-only".into()));
    }
    Ok(())
}

/// Bound on how long the hub waits for one batch to commit before answering 503.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_statements_number_every_parameter_once() {
        let sizes = [13, 9, 10, 7];
        for mask in 0..16 {
            let sql = batch_sql(mask);
            // ids (4) and the count sent, each kind's columns, the five delta arrays.
            let want = 5
                + 5
                + (0..4)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| sizes[i])
                    .sum::<usize>();
            for n in 1..=want {
                assert!(
                    sql.contains(&format!("${n}::")),
                    "mask {mask}: ${n} missing"
                );
            }
            assert!(
                !sql.contains(&format!("${}::", want + 1)),
                "mask {mask}: extra parameter"
            );
            assert!(!sql.contains('{'), "mask {mask}: placeholder left");
        }
    }
}
