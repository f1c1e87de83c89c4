//! The writer: group commit of ingest requests into PostgreSQL.
//!
//! Handlers reserve room in the backlog, then `try_send` a [`Submit`]. The writer queues
//! requests and keeps up to `writer.concurrency` transactions in flight; whenever one is free
//! it takes every queued request (up to `writer.max_batch_rows` rows) into one transaction.
//! So under load each commit carries many requests, and throughput comes from batching.
//!
//! A request is answered `Ok` only after its transaction committed and its new events were
//! applied to the workspace windows, so a client that reads after its 200 sees its events.
//! Failures answer `Unavailable` (503): nothing unacknowledged is ever reported stored, and
//! the client's retry is harmless because inserts are idempotent. When a failure happens
//! while committing, the outcome is unknown, so the touched workspaces rebuild their windows
//! from PostgreSQL (in the background, still serving) rather than guess.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::NaiveDate;
use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use crate::config::WriterConfig;
use crate::domain::event::Event;
use crate::domain::ids::WorkspaceId;
use crate::messages::{Drain, Submit};
use crate::metrics::{HubMetrics, OutcomeLabel};
use crate::registry::Registry;
use crate::store::{self, Partitions, StoreError};

/// Transactions that start as soon as anything is queued; see [`Writer::may_start`].
pub const EAGER_FLUSHES: usize = 2;

/// A PostgreSQL backend: its pid, and a time it was already running at (µs since the epoch).
type Backend = (i32, i64);

/// Longest wait for the backend of a commit with an unknown outcome to end.
pub const UNKNOWN_OUTCOME_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Requests the writer's mailbox holds before `try_send` fails (→ 503).
pub const WRITER_MAILBOX: usize = 16_384;

/// What a request is answered when its rows were not committed. The database's own words
/// go to the log only, never to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The database is away, slow or failed: a retry soon may succeed (503).
    #[error("the database cannot commit right now; retry shortly")]
    Unavailable,
    /// The database refused a value of this request (SQLSTATE class 22 or 23): retrying
    /// the same request will fail again (400).
    #[error("the database refused a value in this request; nothing was stored")]
    Rejected,
}

/// Rows accepted but not yet committed, shared by handlers and the writer.
#[derive(Debug, Clone)]
pub struct Backlog {
    rows: Arc<AtomicUsize>,
    max: usize,
}

impl Backlog {
    pub fn new(max: usize) -> Self {
        Self {
            rows: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Reserves room for `n` rows, or `None` when that would pass `writer.max_backlog_rows`.
    pub fn try_reserve(&self, n: usize) -> Option<Reservation> {
        self.rows
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur + n <= self.max).then_some(cur + n)
            })
            .ok()?;
        Some(Reservation {
            rows: self.rows.clone(),
            n,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows.load(Ordering::Acquire)
    }

    pub fn is_full(&self) -> bool {
        self.rows() >= self.max
    }
}

/// Room held in the backlog; given back when dropped, whatever happened to the request.
#[derive(Debug)]
pub struct Reservation {
    rows: Arc<AtomicUsize>,
    n: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.rows.fetch_sub(self.n, Ordering::AcqRel);
    }
}

pub struct Writer {
    pool: Pool,
    registry: Arc<Registry>,
    metrics: Arc<HubMetrics>,
    cfg: WriterConfig,
    partitions: Partitions,
    /// Requests not yet in a transaction, oldest first.
    queue: VecDeque<Submit>,
    /// Rows in `queue`.
    queued_rows: usize,
    /// Transactions in flight (≤ `cfg.concurrency`).
    in_flight: usize,
    /// Workspaces with a transaction in flight, and how many they have.
    flushing: HashMap<WorkspaceId, usize>,
    /// Committed batches whose events are still being applied and answered (no slot held).
    applying: usize,
    /// Answered when the queue is empty and nothing is in flight or applying.
    drains: Vec<oneshot::Sender<()>>,
}

impl Writer {
    pub fn new(
        pool: Pool,
        registry: Arc<Registry>,
        metrics: Arc<HubMetrics>,
        cfg: WriterConfig,
        partitions: Partitions,
    ) -> Self {
        Self {
            pool,
            registry,
            metrics,
            cfg,
            partitions,
            queue: VecDeque::new(),
            queued_rows: 0,
            in_flight: 0,
            flushing: HashMap::new(),
            applying: 0,
            drains: Vec::new(),
        }
    }

    /// Whether another transaction should start now. The first [`EAGER_FLUSHES`] start as soon
    /// as anything waits (low latency at low load). Past them, up to `writer.concurrency`,
    /// one starts for at least `writer.parallel_min_rows` waiting rows (big batches gain
    /// from PostgreSQL working on several at once, while small requests are cheaper merged
    /// into the next commit than spread over more, smaller ones), or for a request of a
    /// workspace that has no transaction in flight: a tenant whose big batches hold the
    /// eager slots does not make another tenant's single event wait for them.
    fn may_start(&self) -> bool {
        !self.queue.is_empty()
            && self.in_flight < self.cfg.concurrency.max(1)
            && (self.in_flight < EAGER_FLUSHES
                || self.queued_rows >= self.cfg.parallel_min_rows
                // Under `parallel_min_rows` rows, so a short scan.
                || self
                    .queue
                    .iter()
                    .any(|s| !self.flushing.contains_key(&s.workspace)))
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.may_start() {
            let mut batch = Vec::new();
            let mut rows = 0;
            while let Some(next) = self.queue.front() {
                if !batch.is_empty() && rows + next.events.len() > self.cfg.max_batch_rows {
                    break;
                }
                rows += next.events.len();
                batch.extend(self.queue.pop_front());
            }
            self.queued_rows -= rows;
            self.in_flight += 1;
            let mut workspaces: Vec<WorkspaceId> =
                batch.iter().map(|s| s.workspace.clone()).collect();
            workspaces.sort_unstable();
            workspaces.dedup();
            for ws in &workspaces {
                *self.flushing.entry(ws.clone()).or_default() += 1;
            }
            let job = Flush {
                pool: self.pool.clone(),
                registry: self.registry.clone(),
                metrics: self.metrics.clone(),
                partitions: self.partitions.clone(),
                timeout: self.cfg.commit_timeout.get(),
                apply_timeout: self.cfg.apply_timeout.get(),
            };
            // The slot is free once the transaction is over; applying the events to the
            // windows and answering goes on without it.
            ctx.spawn(
                job.run(batch)
                    .into_actor(self)
                    .map(move |settled, act, ctx| {
                        act.in_flight -= 1;
                        for ws in workspaces {
                            if let Some(n) = act.flushing.get_mut(&ws) {
                                *n -= 1;
                                if *n == 0 {
                                    act.flushing.remove(&ws);
                                }
                            }
                        }
                        act.applying += 1;
                        ctx.spawn(settled.finish().into_actor(act).map(|(), act, ctx| {
                            act.applying -= 1;
                            act.pump(ctx);
                        }));
                        act.pump(ctx);
                    }),
            );
        }
        self.metrics
            .writer_queue_requests
            .set(self.queue.len() as i64);
        if self.queue.is_empty() && self.in_flight == 0 && self.applying == 0 {
            for d in self.drains.drain(..) {
                let _ = d.send(());
            }
        }
    }
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The real bound is the backlog reservation each Submit carries; this only keeps a
        // flood of tiny requests from queueing without limit (past it: 503).
        ctx.set_mailbox_capacity(WRITER_MAILBOX);
    }
}

impl Supervised for Writer {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // The struct survives a restart: queued requests are still here. Transactions that
        // were in flight were dropped with their futures; their requests got 503.
        tracing::warn!(queued = self.queue.len(), "Writer restarting.");
        self.in_flight = 0;
        self.applying = 0;
        self.pump(ctx);
    }
}

impl Handler<Submit> for Writer {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) {
        self.queued_rows += msg.events.len();
        self.queue.push_back(msg);
        self.pump(ctx);
    }
}

impl Handler<Drain> for Writer {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drains.push(tx);
        self.pump(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// One transaction's worth of work, run off the actor's state.
struct Flush {
    pool: Pool,
    registry: Arc<Registry>,
    metrics: Arc<HubMetrics>,
    partitions: Partitions,
    timeout: std::time::Duration,
    apply_timeout: std::time::Duration,
}

/// A transaction that committed: which of its rows were new, and its id.
struct Committed {
    is_new: Vec<bool>,
    xid: u64,
}

/// What a flush leaves once its transactions are over: requests with their outcome, to
/// apply to the windows and answer without holding a commit slot.
struct Settled {
    flush: Flush,
    parts: Vec<(Vec<Submit>, Result<Committed, WriteError>)>,
}

/// Answers one request. Room is given back before the answer, so a client that saw its 200
/// never sees its own rows still counted in the backlog.
fn reply(submit: Submit, answer: Result<(), WriteError>) {
    let Submit {
        reservation, reply, ..
    } = submit;
    drop(reservation);
    let _ = reply.send(answer);
}

enum FlushError {
    /// Nothing was committed.
    RolledBack(StoreError),
    /// The failure came while committing: the rows may or may not be stored.
    Unknown(String),
}

impl Flush {
    /// Commits `batch` in one transaction. When a value of one request poisons it, each
    /// request is committed alone, so only the one that holds the bad value is refused.
    async fn run(self, batch: Vec<Submit>) -> Settled {
        let outcome = self.settle(&batch).await;
        let parts = if matches!(outcome, Err(WriteError::Rejected)) && batch.len() > 1 {
            self.metrics.writer_split_batches.inc();
            tracing::warn!(
                requests = batch.len(),
                "A value was refused in a group commit; committing its requests one by one."
            );
            let mut parts = Vec::with_capacity(batch.len());
            for submit in batch {
                let outcome = self.settle(std::slice::from_ref(&submit)).await;
                parts.push((vec![submit], outcome));
            }
            parts
        } else {
            vec![(batch, outcome)]
        };
        Settled { flush: self, parts }
    }

    /// Commits the requests of `batch` in one transaction.
    async fn settle(&self, batch: &[Submit]) -> Result<Committed, WriteError> {
        let started = Instant::now();
        let rows: Vec<(&WorkspaceId, &Event)> = batch
            .iter()
            .flat_map(|s| s.events.iter().map(move |e| (&s.workspace, e)))
            .collect();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let outcome = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => self.commit_on(client, &rows, deadline).await,
            Ok(Err(e)) => Err(FlushError::RolledBack(e.into())),
            Err(_) => Err(FlushError::RolledBack(StoreError::Data(
                "no connection within writer.commit_timeout".into(),
            ))),
        };
        match outcome {
            Ok((is_new, xid)) => {
                let new_count = is_new.iter().filter(|n| **n).count();
                self.metrics.writer_batches.inc();
                self.metrics.writer_batch_rows.observe(rows.len() as f64);
                self.metrics
                    .writer_flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                let m = &self.metrics.ingest_events;
                m.get_or_create(&OutcomeLabel { outcome: "new" })
                    .inc_by(new_count as u64);
                m.get_or_create(&OutcomeLabel {
                    outcome: "duplicate",
                })
                .inc_by((rows.len() - new_count) as u64);
                Ok(Committed { is_new, xid })
            }
            Err(FlushError::RolledBack(e)) if e.is_data_error() => {
                tracing::warn!(error = %e, rows = rows.len(), requests = batch.len(),
                    "The database refused a value; nothing of the batch was committed.");
                Err(WriteError::Rejected)
            }
            Err(err) => {
                self.metrics.writer_failures.inc();
                let message = match &err {
                    FlushError::RolledBack(e) => e.to_string(),
                    FlushError::Unknown(e) => e.clone(),
                };
                tracing::warn!(error = %message, rows = rows.len(), "Batch not committed; answering 503.");
                if let FlushError::Unknown(_) = err {
                    let mut touched: Vec<&WorkspaceId> = rows.iter().map(|(w, _)| *w).collect();
                    touched.sort();
                    touched.dedup();
                    for ws in touched {
                        self.registry.resync(ws);
                    }
                }
                Err(WriteError::Unavailable)
            }
        }
    }

    /// Commits on `client` before `deadline`. When the outcome is unknown (the hub stopped
    /// waiting, or the connection broke while committing), the connection never goes back
    /// to the pool, and the statement's backend is ended and waited out, so the resync that
    /// follows reads a final outcome, not a transaction still in progress.
    async fn commit_on(
        &self,
        client: deadpool_postgres::Object,
        rows: &[(&WorkspaceId, &Event)],
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<bool>, u64), FlushError> {
        let committing = std::cell::Cell::new(false);
        let pid = std::cell::Cell::new(None);
        let timed =
            tokio::time::timeout_at(deadline, self.commit(&client, rows, &committing, &pid));
        let (outcome, timed_out) = match timed.await {
            Ok(result) => (result, false),
            Err(_) if committing.get() => {
                (Err(FlushError::Unknown("commit timed out".into())), true)
            }
            Err(_) => (
                Err(FlushError::RolledBack(StoreError::Data(
                    "batch timed out".into(),
                ))),
                true,
            ),
        };
        let unknown = matches!(outcome, Err(FlushError::Unknown(_)));
        if timed_out || unknown {
            // A statement may still run on it: no one else gets this connection.
            drop(deadpool_postgres::Object::take(client));
        }
        if unknown {
            self.end_backend(pid.get()).await;
        }
        outcome
    }

    /// Ends `backend` (whose statement's outcome is unknown) and waits until it is gone, at
    /// most [`UNKNOWN_OUTCOME_WAIT`]: past that its transaction is over either way.
    async fn end_backend(&self, backend: Option<Backend>) {
        let Some((pid, started)) = backend else {
            tracing::warn!("Commit outcome unknown and the backend unknown; resyncing as is.");
            return;
        };
        let ended = tokio::time::timeout(UNKNOWN_OUTCOME_WAIT, async {
            let client = self.pool.get().await?;
            const SAME: &str = "pid = $1 AND (extract(epoch FROM backend_start) * 1e6)::int8 <= $2";
            client
                .execute(
                    &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {SAME}"),
                    &[&pid, &started],
                )
                .await?;
            loop {
                let left: i64 = client
                    .query_one(
                        &format!("SELECT count(*) FROM pg_stat_activity WHERE {SAME}"),
                        &[&pid, &started],
                    )
                    .await?
                    .get(0);
                if left == 0 {
                    return Ok::<_, StoreError>(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        match ended {
            Ok(Ok(())) => tracing::info!(pid, "Backend of an unknown commit ended."),
            Ok(Err(e)) => {
                tracing::warn!(pid, error = %e, "Could not end the backend of an unknown commit.")
            }
            Err(_) => tracing::warn!(pid, "The backend of an unknown commit did not end in time."),
        }
    }

    async fn commit(
        &self,
        client: &deadpool_postgres::Object,
        rows: &[(&WorkspaceId, &Event)],
        committing: &std::cell::Cell<bool>,
        pid: &std::cell::Cell<Option<Backend>>,
    ) -> Result<(Vec<bool>, u64), FlushError> {
        let rolled_back = FlushError::RolledBack;
        // The backend's pid, for an unknown outcome to be ended and waited out, travels in the
        // same round trip as the work: a simple query is one message, sent at the first poll,
        // ahead of the insert. With the statement's start, so that a backend reusing the pid
        // later (it started after this) is never mistaken for this one; no view is read, as
        // this runs every batch.
        let ask_pid = async {
            let asked = client
                .simple_query(
                    "SELECT pg_backend_pid(), (extract(epoch FROM statement_timestamp()) * 1e6)::int8",
                )
                .await;
            if let Ok(messages) = asked {
                let found = messages.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((row.get(0)?.parse().ok()?, row.get(1)?.parse().ok()?))
                    }
                    _ => None,
                });
                pid.set(found);
            }
        };
        let work = async {
            let days: Vec<NaiveDate> = rows.iter().map(|(_, e)| e.time().date_naive()).collect();
            self.partitions
                .ensure(&***client, days)
                .await
                .map_err(rolled_back)?;
            // The insert is one statement, so it commits when it returns: from here on, a
            // failure (a dropped connection, a timeout) leaves the outcome unknown.
            committing.set(true);
            store::insert_batch(client, rows)
                .await
                .map_err(|e| match &e {
                    // The server answered with an error: the statement, and so the batch, rolled back.
                    StoreError::Db(db) if db.as_db_error().is_some() => FlushError::RolledBack(e),
                    _ => FlushError::Unknown(e.to_string()),
                })
        };
        let ((), outcome) = tokio::join!(ask_pid, work);
        outcome
    }
}

impl Settled {
    /// Applies each committed request's new events to its workspace's windows, then answers
    /// it. Workspaces are served side by side, and each request waits only for its own
    /// workspace's apply (at most `writer.apply_timeout`).
    async fn finish(self) {
        let Settled { flush, parts } = self;
        // By workspace and transaction (a split batch commits its requests separately).
        let mut by_workspace: HashMap<(WorkspaceId, u64), (Vec<Event>, Vec<Submit>)> =
            HashMap::new();
        for (members, outcome) in parts {
            let committed = match outcome {
                Ok(committed) => committed,
                Err(e) => {
                    members.into_iter().for_each(|m| reply(m, Err(e)));
                    continue;
                }
            };
            let mut is_new = committed.is_new.into_iter();
            for submit in members {
                let entry = by_workspace
                    .entry((submit.workspace.clone(), committed.xid))
                    .or_default();
                for event in &submit.events {
                    if is_new.next() == Some(true) {
                        entry.0.push(event.clone());
                    }
                }
                entry.1.push(submit);
            }
        }
        let registry = &flush.registry;
        let timeout = flush.apply_timeout;
        futures_util::future::join_all(by_workspace.into_iter().map(
            |((ws, xid), (events, members))| async move {
                if !events.is_empty() {
                    registry.apply(ws, events, xid, timeout).await;
                }
                members.into_iter().for_each(|m| reply(m, Ok(())));
            },
        ))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_reserves_up_to_its_limit_and_releases_on_drop() {
        let backlog = Backlog::new(100);
        let a = backlog.try_reserve(60).expect("room for 60");
        assert!(backlog.try_reserve(41).is_none(), "61 + 41 > 100");
        let b = backlog.try_reserve(40).expect("exactly full");
        assert!(backlog.is_full());
        assert!(backlog.try_reserve(1).is_none());
        drop(a);
        assert_eq!(backlog.rows(), 40);
        assert!(
            backlog.try_reserve(60).is_some(),
            "a dropped reservation gives its room back"
        );
        drop(b);
        assert_eq!(backlog.rows(), 0);
        assert!(
            backlog.try_reserve(101).is_none(),
            "never more than the limit at once"
        );
    }
}
