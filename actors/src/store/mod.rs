//! PostgreSQL: pools, migrations, day partitions, the idempotent batch insert and the
//! window rebuild. SQL lives in `sql/*.sql`.

mod migrate;
mod snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
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

/// Builds a pool. Waiting for a connection, creating one and recycling one are all bounded
/// by `database.connect_timeout`, so a request never hangs on a database that is down.
pub fn create_pool(cfg: &DatabaseConfig, max_size: usize) -> Result<Pool, StoreError> {
    let mut pg: PgConfig = cfg
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Url(e.to_string()))?;
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
pub const RAW_TABLES: [&str; 4] = ["agent_runs", "agent_errors", "resource_samples", "agent_user_feedback"];

/// Drops every raw partition whose whole day is before `cutoff`; returns the days dropped.
pub async fn drop_partitions_before(client: &impl GenericClient, cutoff: NaiveDate) -> Result<Vec<NaiveDate>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = ANY($1)",
            &[&RAW_TABLES.as_slice()],
        )
        .await?;
    let mut days = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let Some(day) = crate::maintenance::partition_day(&name) else { continue };
        if day < cutoff {
            client.batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\"")).await?;
            days.push(day);
        }
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

/// Forgets event ids first received before `cutoff`, in bounded batches so no statement
/// holds locks for long; returns how many were deleted.
pub async fn forget_event_ids_before(client: &impl GenericClient, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    const BATCH: i64 = 10_000;
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM ingested_events WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM ingested_events WHERE received_at < $1 LIMIT $2))",
                &[&cutoff, &BATCH],
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

/// Inserts a batch idempotently in the caller's transaction. Returns, for each input row,
/// whether this insert was the first write of its `(workspace_id, event_id)`, and the
/// transaction id (to match against rebuild snapshots; 0 when nothing was new). Rows
/// repeated inside the batch count as new only once: the first occurrence.
pub async fn insert_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[Row<'_>],
) -> Result<(Vec<bool>, u64), StoreError> {
    let ids = tx
        .prepare_cached(include_str!("sql/insert_ids.sql"))
        .await?;
    let ws: Vec<&str> = rows.iter().map(|(w, _)| w.as_str()).collect();
    let eid: Vec<&str> = rows.iter().map(|(_, e)| e.event_id.as_str()).collect();
    let kind: Vec<i16> = rows.iter().map(|(_, e)| e.kind_code()).collect();
    let time: Vec<DateTime<Utc>> = rows.iter().map(|(_, e)| e.time()).collect();
    let inserted = tx.query(&ids, &[&ws, &eid, &kind, &time]).await?;
    // Where each key first occurs in the batch: a key repeated inside the batch is new at
    // most once, at its first occurrence (first write wins).
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(rows.len());
    for (i, (w, e)) in rows.iter().enumerate() {
        first.entry((w.as_str(), e.event_id.as_str())).or_insert(i);
    }
    let mut is_new = vec![false; rows.len()];
    for row in &inserted {
        if let Some(&i) = first.get(&(row.get::<_, &str>(0), row.get::<_, &str>(1))) {
            is_new[i] = true;
        }
    }
    let new_rows: Vec<Row> = rows
        .iter()
        .zip(&is_new)
        .filter(|(_, n)| **n)
        .map(|(r, _)| *r)
        .collect();
    let (runs, errors, heartbeats, feedback) = futures_util::future::join4(
        insert_runs(tx, &new_rows),
        insert_errors(tx, &new_rows),
        insert_heartbeats(tx, &new_rows),
        insert_feedback(tx, &new_rows),
    )
    .await;
    runs?;
    errors?;
    heartbeats?;
    feedback?;
    let xid: i64 = tx
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .await?
        .get(0);
    Ok((is_new, xid as u64))
}

async fn insert_runs(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[Row<'_>],
) -> Result<(), StoreError> {
    let runs: Vec<(&WorkspaceId, &Event, &Run)> = rows
        .iter()
        .filter_map(|(w, e)| match &e.kind {
            EventKind::Run(r) => Some((*w, *e, r)),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(include_str!("sql/insert_runs.sql"))
        .await?;
    let ws: Vec<&str> = runs.iter().map(|(w, _, _)| w.as_str()).collect();
    let eid: Vec<&str> = runs.iter().map(|(_, e, _)| e.event_id.as_str()).collect();
    let agent: Vec<&str> = runs.iter().map(|(_, e, _)| e.agent_id.as_str()).collect();
    let run_id: Vec<Option<&str>> = runs.iter().map(|(_, _, r)| r.run_id.as_deref()).collect();
    let user_id: Vec<Option<&str>> = runs.iter().map(|(_, _, r)| r.user_id.as_deref()).collect();
    let status: Vec<&str> = runs.iter().map(|(_, _, r)| r.status.as_str()).collect();
    let started: Vec<Option<DateTime<Utc>>> = runs.iter().map(|(_, _, r)| r.started_at).collect();
    let completed: Vec<DateTime<Utc>> = runs.iter().map(|(_, _, r)| r.completed_at).collect();
    let runtime: Vec<f64> = runs.iter().map(|(_, _, r)| r.runtime_ms).collect();
    let credits: Vec<f64> = runs.iter().map(|(_, _, r)| r.credits).collect();
    let t_in: Vec<i64> = runs.iter().map(|(_, _, r)| r.tokens_in).collect();
    let t_out: Vec<i64> = runs.iter().map(|(_, _, r)| r.tokens_out).collect();
    let model: Vec<Option<&str>> = runs.iter().map(|(_, _, r)| r.model.as_deref()).collect();
    let params: [&(dyn ToSql + Sync); 13] = [
        &ws, &eid, &agent, &run_id, &user_id, &status, &started, &completed, &runtime, &credits,
        &t_in, &t_out, &model,
    ];
    tx.execute(&stmt, &params).await?;
    Ok(())
}

async fn insert_errors(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[Row<'_>],
) -> Result<(), StoreError> {
    let errs: Vec<_> = rows
        .iter()
        .filter_map(|(w, e)| match &e.kind {
            EventKind::Run(r) => r.error.as_ref().map(|err| (*w, *e, r, err)),
            _ => None,
        })
        .collect();
    if errs.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(include_str!("sql/insert_errors.sql"))
        .await?;
    let ws: Vec<&str> = errs.iter().map(|x| x.0.as_str()).collect();
    let eid: Vec<&str> = errs.iter().map(|x| x.1.event_id.as_str()).collect();
    let agent: Vec<&str> = errs.iter().map(|x| x.1.agent_id.as_str()).collect();
    let run_id: Vec<Option<&str>> = errs.iter().map(|x| x.2.run_id.as_deref()).collect();
    let at: Vec<DateTime<Utc>> = errs.iter().map(|x| x.2.completed_at).collect();
    let ty: Vec<Option<&str>> = errs.iter().map(|x| x.3.error_type.as_deref()).collect();
    let cat: Vec<Option<&str>> = errs.iter().map(|x| x.3.category.as_deref()).collect();
    let sev: Vec<Option<&str>> = errs
        .iter()
        .map(|x| x.3.severity.map(|s| s.as_str()))
        .collect();
    let msg: Vec<Option<&str>> = errs.iter().map(|x| x.3.message.as_deref()).collect();
    tx.execute(
        &stmt,
        &[&ws, &eid, &agent, &run_id, &at, &ty, &cat, &sev, &msg],
    )
    .await?;
    Ok(())
}

async fn insert_heartbeats(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[Row<'_>],
) -> Result<(), StoreError> {
    let hbs: Vec<(&WorkspaceId, &Event, &Heartbeat)> = rows
        .iter()
        .filter_map(|(w, e)| match &e.kind {
            EventKind::Heartbeat(h) => Some((*w, *e, h)),
            _ => None,
        })
        .collect();
    if hbs.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(include_str!("sql/insert_heartbeats.sql"))
        .await?;
    let ws: Vec<&str> = hbs.iter().map(|x| x.0.as_str()).collect();
    let eid: Vec<&str> = hbs.iter().map(|x| x.1.event_id.as_str()).collect();
    let agent: Vec<&str> = hbs.iter().map(|x| x.1.agent_id.as_str()).collect();
    let ts: Vec<DateTime<Utc>> = hbs.iter().map(|x| x.2.ts).collect();
    let cpu: Vec<Option<f64>> = hbs.iter().map(|x| x.2.cpu_pct).collect();
    let mem: Vec<Option<f64>> = hbs.iter().map(|x| x.2.mem_mb).collect();
    let mem_limit: Vec<Option<f64>> = hbs.iter().map(|x| x.2.mem_limit_mb).collect();
    let cores: Vec<Option<f64>> = hbs.iter().map(|x| x.2.cpu_limit_cores).collect();
    let conc: Vec<Option<i64>> = hbs.iter().map(|x| x.2.concurrent_runs).collect();
    let queue: Vec<Option<i64>> = hbs.iter().map(|x| x.2.queue_depth).collect();
    tx.execute(
        &stmt,
        &[
            &ws, &eid, &agent, &ts, &cpu, &mem, &mem_limit, &cores, &conc, &queue,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_feedback(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[Row<'_>],
) -> Result<(), StoreError> {
    let fbs: Vec<(&WorkspaceId, &Event, &Feedback)> = rows
        .iter()
        .filter_map(|(w, e)| match &e.kind {
            EventKind::Feedback(f) => Some((*w, *e, f)),
            _ => None,
        })
        .collect();
    if fbs.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(include_str!("sql/insert_feedback.sql"))
        .await?;
    let ws: Vec<&str> = fbs.iter().map(|x| x.0.as_str()).collect();
    let eid: Vec<&str> = fbs.iter().map(|x| x.1.event_id.as_str()).collect();
    let agent: Vec<&str> = fbs.iter().map(|x| x.1.agent_id.as_str()).collect();
    let user: Vec<Option<&str>> = fbs.iter().map(|x| x.2.user_id.as_deref()).collect();
    let ts: Vec<DateTime<Utc>> = fbs.iter().map(|x| x.2.ts).collect();
    let rating: Vec<i16> = fbs.iter().map(|x| x.2.rating).collect();
    let text: Vec<Option<&str>> = fbs.iter().map(|x| x.2.text.as_deref()).collect();
    tx.execute(&stmt, &[&ws, &eid, &agent, &user, &ts, &rating, &text])
        .await?;
    Ok(())
}

/// Everything a workspace actor needs to rebuild its windows: the stored events since
/// `since`, and the snapshot they were read under (to skip later applies it already holds).
pub struct Recent {
    pub snapshot: Snapshot,
    pub events: Vec<Event>,
}

/// Reads a workspace's events since `since` in one REPEATABLE READ transaction.
pub async fn load_recent(
    pool: &Pool,
    ws: &WorkspaceId,
    since: DateTime<Utc>,
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

    let stream = tx
        .query_raw(include_str!("sql/recent_runs.sql"), params)
        .await?;
    pin_mut!(stream);
    while let Some(row) = stream.try_next().await? {
        let status: &str = row.get(2);
        events.push(Event {
            event_id: stored_event_id(row.get(0))?,
            agent_id: stored_agent_id(row.get(1))?,
            kind: EventKind::Run(Run {
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
            }),
        });
    }
    let stream = tx
        .query_raw(include_str!("sql/recent_heartbeats.sql"), params)
        .await?;
    pin_mut!(stream);
    while let Some(row) = stream.try_next().await? {
        events.push(Event {
            event_id: stored_event_id(row.get(0))?,
            agent_id: stored_agent_id(row.get(1))?,
            kind: EventKind::Heartbeat(Heartbeat {
                ts: row.get(2),
                cpu_pct: row.get(3),
                mem_mb: row.get(4),
                mem_limit_mb: row.get(5),
                cpu_limit_cores: row.get(6),
                concurrent_runs: row.get(7),
                queue_depth: row.get(8),
            }),
        });
    }
    let stream = tx
        .query_raw(include_str!("sql/recent_feedback.sql"), params)
        .await?;
    pin_mut!(stream);
    while let Some(row) = stream.try_next().await? {
        events.push(Event {
            event_id: stored_event_id(row.get(0))?,
            agent_id: stored_agent_id(row.get(1))?,
            kind: EventKind::Feedback(Feedback {
                user_id: None,
                ts: row.get(2),
                rating: row.get(3),
                text: None,
            }),
        });
    }
    tx.commit().await?;
    Ok(Recent { snapshot, events })
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
