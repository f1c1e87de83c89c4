//! Finds or starts the actor that owns a workspace.
//!
//! Actors are spread over `workspace.arbiters` dedicated arbiters by a hash of the workspace
//! id, never on the System thread or an HTTP worker. An actor stops itself when idle and
//! leaves the map; the next request starts a fresh one, which rebuilds from PostgreSQL.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use actix::prelude::*;
use deadpool_postgres::Pool;
use parking_lot::Mutex;

use crate::domain::event::Event;
use crate::domain::ids::WorkspaceId;
use crate::domain::live::LiveRules;
use crate::messages::Apply;
use crate::metrics::HubMetrics;
use crate::workspace::WorkspaceActor;

/// What every workspace actor is built with.
pub struct WorkspaceDeps {
    /// Reads (window rebuild).
    pub pool: Pool,
    pub rules: LiveRules,
    pub mailbox: usize,
    pub idle_after: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub fanout: crate::fanout::FanOutRules,
    pub metrics: Arc<HubMetrics>,
    /// Woken when alert transitions queue webhook deliveries.
    pub notifier: Option<Recipient<crate::notifier::Wake>>,
    /// Live anomaly detection.
    pub anomaly: crate::domain::anomaly::track::TrackerConfig,
    /// Stored history replayed into the detectors at start.
    pub anomaly_history: chrono::Duration,
}

/// Events of late applies (past `writer.apply_timeout`) kept waiting for their actors, at
/// most; past it an apply is dropped and its workspace resyncs from storage instead.
pub const MAX_LATE_EVENTS: usize = 200_000;

pub struct Registry {
    arbiters: Vec<Arbiter>,
    /// Events held by late applies still waiting for their actors.
    late_events: Arc<std::sync::atomic::AtomicUsize>,
    actors: Mutex<HashMap<WorkspaceId, Addr<WorkspaceActor>>>,
    deps: Arc<WorkspaceDeps>,
    this: Weak<Registry>,
}

impl Registry {
    /// Starts `arbiters` threads for workspace actors. Call inside the actix System.
    pub fn new(arbiters: usize, deps: WorkspaceDeps) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            arbiters: (0..arbiters.max(1)).map(|_| Arbiter::new()).collect(),
            actors: Mutex::new(HashMap::new()),
            late_events: Arc::default(),
            deps: Arc::new(deps),
            this: this.clone(),
        })
    }

    pub fn deps(&self) -> &WorkspaceDeps {
        &self.deps
    }

    /// The running actor of `ws`, started (and so rebuilt) when there is none.
    pub fn get(&self, ws: &WorkspaceId) -> Addr<WorkspaceActor> {
        let mut actors = self.actors.lock();
        if let Some(addr) = actors.get(ws).filter(|a| a.connected()) {
            return addr.clone();
        }
        let mut h = std::hash::DefaultHasher::new();
        ws.hash(&mut h);
        let arbiter = &self.arbiters[(h.finish() as usize) % self.arbiters.len()];
        let (deps, id, registry) = (self.deps.clone(), ws.clone(), self.this.clone());
        let addr = WorkspaceActor::start_in_arbiter(&arbiter.handle(), move |_| {
            WorkspaceActor::new(id, deps, registry)
        });
        actors.insert(ws.clone(), addr.clone());
        self.deps.metrics.workspace_actors.set(actors.len() as i64);
        addr
    }

    /// The running actor of `ws`, if any; never starts one.
    fn running(&self, ws: &WorkspaceId) -> Option<Addr<WorkspaceActor>> {
        self.actors
            .lock()
            .get(ws)
            .filter(|a| a.connected())
            .cloned()
    }

    /// Applies the newly committed events of transaction `xid` to the actor of `ws`
    /// (started when none runs: its rebuild begins after the commit, and its snapshot tells
    /// it to skip this apply), waiting at most `timeout` for it to take them. Past
    /// `timeout` the apply stays queued (actix drops a message whose asker stopped waiting,
    /// so the wait goes on in a task of its own) and lands behind whatever the actor is
    /// busy with (a rebuild, a full mailbox), ahead of any read sent later. An actor that
    /// stops twice before taking them leaves them to the next one's rebuild.
    pub async fn apply(
        &self,
        ws: WorkspaceId,
        events: Vec<Event>,
        xid: u64,
        timeout: std::time::Duration,
    ) {
        for attempt in 0..2 {
            let addr = self.get(&ws);
            self.mailbox_sent();
            let n = events.len();
            let mut sent = Box::pin(addr.send(Apply {
                events: events.clone(),
                xid,
            }));
            let answer = match tokio::time::timeout(timeout, &mut sent).await {
                Ok(answer) => answer,
                Err(_) => {
                    use std::sync::atomic::Ordering;
                    self.deps.metrics.writer_apply_late.inc();
                    let late = self.late_events.clone();
                    if late.fetch_add(n, Ordering::AcqRel) + n > MAX_LATE_EVENTS {
                        // Too much already waits: drop this apply (actix skips a message
                        // whose asker is gone) and let the actor read storage instead.
                        late.fetch_sub(n, Ordering::AcqRel);
                        drop(sent);
                        self.mailbox_unsent();
                        self.resync(&ws);
                        return;
                    }
                    actix::spawn(async move {
                        let _ = sent.await;
                        late.fetch_sub(n, Ordering::AcqRel);
                    });
                    return;
                }
            };
            match answer {
                Ok(()) => return,
                Err(_) => {
                    // The actor stopped before taking it; a fresh one rebuilds from storage.
                    self.mailbox_unsent();
                    tracing::debug!(workspace = %ws, attempt, "Apply not delivered; retrying on a fresh actor.");
                    self.remove(&ws, &addr);
                }
            }
        }
    }

    /// Sends `msg` to the workspace's actor and waits up to `timeout` for the answer.
    pub async fn ask<M>(
        &self,
        ws: &WorkspaceId,
        msg: M,
        timeout: std::time::Duration,
    ) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        WorkspaceActor: Handler<M>,
    {
        let addr = self.get(ws);
        self.mailbox_sent();
        let answer = addr.send(msg).timeout(timeout).await;
        if let Err(MailboxError::Closed) = answer {
            // Never delivered, so never counted down by the actor.
            self.mailbox_unsent();
        }
        answer
    }

    /// Asks the running actor of `ws`, if any, to rebuild from storage in the background
    /// (a commit's outcome is unknown), without waiting for it. With no actor running there
    /// is nothing to correct.
    pub fn resync(&self, ws: &WorkspaceId) {
        if let Some(addr) = self.running(ws) {
            self.mailbox_sent();
            // Queued past the mailbox's capacity on purpose: one small message per failed
            // commit, and a resync must not be lost to a busy actor.
            addr.do_send(crate::workspace::Resync);
        }
    }

    /// Stops and forgets the actor of `ws`, so the next request rebuilds it from storage.
    pub fn forget(&self, ws: &WorkspaceId) {
        let mut actors = self.actors.lock();
        if let Some(addr) = actors.remove(ws) {
            addr.do_send(crate::workspace::Stop);
        }
        self.deps.metrics.workspace_actors.set(actors.len() as i64);
    }

    /// Called by an actor that stopped itself; removes it unless a newer one took its place.
    pub(crate) fn remove(&self, ws: &WorkspaceId, addr: &Addr<WorkspaceActor>) {
        let mut actors = self.actors.lock();
        if actors.get(ws) == Some(addr) {
            actors.remove(ws);
        }
        self.deps.metrics.workspace_actors.set(actors.len() as i64);
    }

    /// Closes every WebSocket session of every workspace with 1001 (hub shutdown).
    pub async fn close_all_sessions(&self) {
        let actors: Vec<Addr<WorkspaceActor>> = self.actors.lock().values().cloned().collect();
        let closing = actors.iter().map(|a| {
            self.mailbox_sent();
            a.send(crate::messages::CloseSessions)
        });
        futures_util::future::join_all(closing).await;
    }

    /// Counts a message handed to a workspace actor in `hub_workspace_mailbox_messages`;
    /// the actor counts it down when it handles it.
    pub fn mailbox_sent(&self) {
        self.deps.metrics.workspace_mailbox_messages.inc();
    }

    /// Takes back [`Registry::mailbox_sent`] for a message that was never delivered.
    pub fn mailbox_unsent(&self) {
        self.deps.metrics.workspace_mailbox_messages.dec();
    }

    pub fn len(&self) -> usize {
        self.actors.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
