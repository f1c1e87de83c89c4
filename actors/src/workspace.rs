//! The actor that owns one workspace's live state.
//!
//! On start it rebuilds its windows from PostgreSQL (the last 24 h of events) before it
//! handles any message: `ctx.wait` holds the mailbox until the rebuild is done, so an apply
//! or a read never sees a half-built state. The rebuild's snapshot then decides, per apply,
//! whether the rebuild already counted that transaction (see [`crate::store::Snapshot`]).
//!
//! When a batch's commit outcome is unknown (the connection broke mid-statement), the writer
//! sends [`Resync`]: the actor keeps serving what it has, rebuilds in the background (retrying
//! while PostgreSQL is away), then swaps in the rebuilt state plus the applies that arrived
//! meanwhile and that the new snapshot does not see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;

use crate::domain::alert::{AlertEngine, Scope, Transition};
use crate::domain::anomaly::track::Tracker;
use crate::domain::event::EventKind;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::live::{ms_to_time, ExecView, LiveState, ResourceView, ViewCache};
use crate::domain::subscription::Channel;
use crate::domain::window::Window;
use crate::fanout::{FanOut, Joined, CLOSE_GOING_AWAY};
use crate::messages::{
    Apply, CloseSessions, Emit, GetExecution, GetResources, Join, Leave, ReloadRules, Resubscribe,
};
use crate::metrics::{KindLabel, StateLabel};
use crate::registry::{Registry, WorkspaceDeps};
use crate::store::{self, Snapshot};

/// How often expired sub-buckets are dropped and idleness is checked.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);
/// How often agents are checked for turning `stale` (sent to sessions as an update).
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// Stops the actor (its state is rebuilt from storage by the next one).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Rebuild from storage in the background, then swap the state in.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

/// Wait between attempts of a background rebuild while PostgreSQL is away.
const RESYNC_RETRY: Duration = Duration::from_secs(2);
/// Wait before retrying to record alert transitions that failed to commit.
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// Anomalies kept for recording while PostgreSQL is away; older ones are dropped.
const MAX_ANOMALY_OUTBOX: usize = 10_000;
/// Alert transitions kept for recording while PostgreSQL is away; past it the oldest are
/// dropped (they were sent live; a series' later transitions still set its stored state).
const MAX_ALERT_OUTBOX: usize = 10_000;

/// Drops the oldest entries of `outbox` past `max`; returns how many.
fn cap_outbox<T>(outbox: &mut Vec<T>, max: usize) -> usize {
    let excess = outbox.len().saturating_sub(max);
    outbox.drain(..excess);
    excess
}

pub struct WorkspaceActor {
    id: WorkspaceId,
    deps: Arc<WorkspaceDeps>,
    registry: Weak<Registry>,
    live: LiveState,
    /// The rebuild's snapshot: applies of transactions it sees are already counted.
    snapshot: Snapshot,
    last_message: Instant,
    /// Overflow counts (agent, model, memory) and agent window bytes already reported to
    /// the metrics.
    reported_overflow: ([u64; 3], i64),
    /// While a background rebuild runs: the applies received since it started.
    resyncing: Option<Vec<Apply>>,
    /// Another resync was asked for while one ran (its snapshot may predate that commit).
    resync_again: bool,
    /// WebSocket sessions, frame sequence, replay buffer, pending changes.
    fanout: FanOut,
    /// Alert rules and the state of their series.
    alerts: AlertEngine,
    /// Transitions not yet recorded (with their deliveries) in PostgreSQL, oldest first.
    outbox: Vec<Transition>,
    /// A batch of the outbox is being recorded.
    recording: bool,
    /// (pending, firing) series last added to the `hub_alerts` gauges.
    reported_alerts: (i64, i64),
    /// Live anomaly detection (buckets per series, detectors).
    anomalies: Tracker,
    /// Anomalies not yet recorded in PostgreSQL, oldest first.
    anomaly_outbox: Vec<store::anomalies::Found>,
    /// A batch of the anomaly outbox is being recorded.
    recording_anomalies: bool,
    /// Detector series and late events last added to the metrics.
    reported_anomalies: (i64, u64),
    /// Execution views computed since the live state last changed.
    views: ViewCache,
}

impl WorkspaceActor {
    pub fn new(id: WorkspaceId, deps: Arc<WorkspaceDeps>, registry: Weak<Registry>) -> Self {
        let fanout = FanOut::new(new_epoch(), deps.fanout);
        let anomalies = Tracker::new(deps.anomaly);
        Self {
            live: LiveState::new(deps.rules),
            id,
            deps,
            registry,
            snapshot: Snapshot::default(),
            last_message: Instant::now(),
            reported_overflow: ([0; 3], 0),
            resyncing: None,
            resync_again: false,
            fanout,
            alerts: AlertEngine::default(),
            outbox: Vec::new(),
            recording: false,
            reported_alerts: (0, 0),
            anomalies,
            anomaly_outbox: Vec::new(),
            recording_anomalies: false,
            reported_anomalies: (0, 0),
            views: ViewCache::default(),
        }
    }

    /// Scores the buckets the clock has closed; anomalies go to the sessions at once and are
    /// queued to be recorded.
    fn close_buckets(&mut self, ctx: &mut Context<Self>) {
        let scored = self.anomalies.close(Utc::now().timestamp_millis());
        let bucket_ms = self.anomalies.bucket_ms();
        self.deps
            .metrics
            .anomaly_buckets
            .inc_by(scored.len() as u64);
        for s in scored.into_iter().filter(|s| s.verdict.is_anomaly) {
            let found = store::anomalies::Found {
                id: store::anomalies::new_id(),
                agent: s.agent,
                metric: s.metric,
                bucket_start_ms: s.bucket_start_ms,
                bucket_ms,
                verdict: s.verdict,
            };
            self.fanout.send_event(
                Channel::Anomalies,
                found.to_json(&self.id),
                &self.deps.metrics,
            );
            self.deps
                .metrics
                .anomalies
                .get_or_create(&KindLabel {
                    kind: found.metric.as_str(),
                })
                .inc();
            tracing::info!(workspace = %self.id, agent = ?found.agent.as_ref().map(|a| a.as_str()), metric = found.metric.as_str(), score = found.verdict.score, "Anomaly.");
            self.anomaly_outbox.push(found);
        }
        self.report_anomalies();
        self.record_anomalies(ctx);
    }

    /// Records the anomaly outbox, one batch at a time, retrying while PostgreSQL is away.
    fn record_anomalies(&mut self, ctx: &mut Context<Self>) {
        if self.recording_anomalies || self.anomaly_outbox.is_empty() {
            return;
        }
        self.recording_anomalies = true;
        let batch = std::mem::take(&mut self.anomaly_outbox);
        let (pool, id) = (self.deps.pool.clone(), self.id.clone());
        ctx.spawn(
            async move {
                let result = store::anomalies::record(&pool, &id, &batch).await;
                (batch, result)
            }
            .into_actor(self)
            .map(|(batch, result), act, ctx| {
                act.recording_anomalies = false;
                match result {
                    Ok(()) => act.record_anomalies(ctx),
                    Err(e) => {
                        tracing::warn!(workspace = %act.id, error = %e, "Recording anomalies failed; retrying.");
                        let later = std::mem::replace(&mut act.anomaly_outbox, batch);
                        act.anomaly_outbox.extend(later);
                        // Bounded: past this, the oldest are dropped (they were sent live).
                        cap_outbox(&mut act.anomaly_outbox, MAX_ANOMALY_OUTBOX);
                        ctx.run_later(RECORD_RETRY, |act, ctx| act.record_anomalies(ctx));
                    }
                }
            }),
        );
    }

    fn report_anomalies(&mut self) {
        let series = self.anomalies.counts().0 as i64;
        let late = self.anomalies.late_events;
        let m = &self.deps.metrics;
        m.anomaly_series.inc_by(series - self.reported_anomalies.0);
        m.anomaly_late_events
            .inc_by(late - self.reported_anomalies.1);
        self.reported_anomalies = (series, late);
    }

    /// The detector history to read at start: `anomaly_history` back from now, up to the
    /// first whole bucket at or after `since` (the recent events cover the rest).
    fn history_range(&self, since: chrono::DateTime<Utc>) -> store::HistoryRange {
        let bucket_ms = self.anomalies.bucket_ms();
        let from_ms = (since - self.deps.anomaly_history).timestamp_millis();
        let to_ms = since.timestamp_millis();
        let from = from_ms.div_euclid(bucket_ms) * bucket_ms;
        let to = (to_ms + bucket_ms - 1).div_euclid(bucket_ms) * bucket_ms;
        store::HistoryRange {
            from: ms_to_time(from),
            to: ms_to_time(to),
            bucket_ms,
        }
    }

    /// Evaluates the alert rules `scope` may have changed and notifies what transitioned.
    fn evaluate_alerts(&mut self, scope: Scope<'_>, ctx: &mut Context<Self>) {
        if !self.alerts.has_enabled_rules() && !self.alerts.has_active() {
            return;
        }
        let transitions = self
            .alerts
            .evaluate(&self.live, &self.anomalies, scope, Utc::now());
        self.notify(transitions, ctx);
    }

    /// Sends each transition to the sessions at once as an `alert` frame, and queues it to be
    /// recorded with its webhook deliveries.
    fn notify(&mut self, transitions: Vec<Transition>, ctx: &mut Context<Self>) {
        self.report_alerts();
        if transitions.is_empty() {
            return;
        }
        for t in &transitions {
            let mut alert = t.alert_json();
            alert["transition"] = t.kind.as_str().into();
            self.fanout
                .send_event(Channel::Alerts, alert, &self.deps.metrics);
            self.deps
                .metrics
                .alert_transitions
                .get_or_create(&StateLabel {
                    state: t.kind.as_str(),
                })
                .inc();
            tracing::info!(workspace = %self.id, rule = %t.rule.id, agent = ?t.agent.as_ref().map(|a| a.as_str()), transition = t.kind.as_str(), value = ?t.state.value, "Alert transition.");
        }
        self.outbox.extend(transitions);
        let dropped = cap_outbox(&mut self.outbox, MAX_ALERT_OUTBOX);
        if dropped > 0 {
            tracing::warn!(workspace = %self.id, dropped, "Alert outbox full; oldest unrecorded transitions dropped.");
        }
        self.record(ctx);
    }

    /// Records the outbox in one transaction (states, events, deliveries), then wakes the
    /// notifier. One batch at a time, so a series' transitions are recorded in order.
    fn record(&mut self, ctx: &mut Context<Self>) {
        if self.recording || self.outbox.is_empty() {
            return;
        }
        self.recording = true;
        let batch = std::mem::take(&mut self.outbox);
        let (pool, id) = (self.deps.pool.clone(), self.id.clone());
        ctx.spawn(
            async move {
                let result = store::alerts::record_transitions(&pool, &id, &batch).await;
                (batch, result)
            }
            .into_actor(self)
            .map(|(batch, result), act, ctx| {
                act.recording = false;
                match result {
                    Ok(queued) => {
                        if queued > 0 {
                            if let Some(notifier) = &act.deps.notifier {
                                // A wake-up only; the notifier's timer finds them otherwise.
                                let _ = notifier.try_send(crate::notifier::Wake);
                            }
                        }
                        act.record(ctx);
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %act.id, error = %e, "Recording alert transitions failed; retrying.");
                        let later = std::mem::replace(&mut act.outbox, batch);
                        act.outbox.extend(later);
                        cap_outbox(&mut act.outbox, MAX_ALERT_OUTBOX);
                        ctx.run_later(RECORD_RETRY, |act, ctx| act.record(ctx));
                    }
                }
            }),
        );
    }

    /// Moves the `hub_alerts` gauges by this workspace's change in pending/firing series.
    fn report_alerts(&mut self) {
        let (pending, firing) = self.alerts.counts();
        let now = (pending as i64, firing as i64);
        self.shift_alert_gauges(now);
    }

    fn shift_alert_gauges(&mut self, now: (i64, i64)) {
        let m = &self.deps.metrics.alerts;
        m.get_or_create(&StateLabel { state: "pending" })
            .inc_by(now.0 - self.reported_alerts.0);
        m.get_or_create(&StateLabel { state: "firing" })
            .inc_by(now.1 - self.reported_alerts.1);
        self.reported_alerts = now;
    }

    /// Sends an update now after a quiet spell, else schedules one within the coalescing
    /// delay; changes until then merge into it.
    fn schedule_update(&mut self, ctx: &mut Context<Self>) {
        if self.fanout.update_scheduled || !self.fanout.has_changes() {
            return;
        }
        let delay = self.fanout.delay();
        if delay.is_zero() {
            self.fanout
                .send_update(&self.live, Utc::now(), &self.deps.metrics);
        } else {
            self.fanout.update_scheduled = true;
            ctx.run_later(delay, |act, _| {
                act.fanout
                    .send_update(&act.live, Utc::now(), &act.deps.metrics)
            });
        }
    }

    /// The state rebuilt from `recent`, as of `now`.
    /// Reads the workspace's last 24 h and its detector history in one snapshot, and folds
    /// them into windows and detectors off the actor's thread.
    fn rebuild(&self) -> impl std::future::Future<Output = Result<Rebuilt, store::StoreError>> {
        let (deps, id) = (self.deps.clone(), self.id.clone());
        let since = Utc::now() - chrono::Duration::milliseconds(Window::H24.len_ms());
        let history = self.history_range(since);
        async move {
            let recent = store::load_recent(&deps.pool, &id, since, Some(history)).await?;
            let history_to = history.to.timestamp_millis();
            off_thread(move || Rebuilt::new(&deps, recent, history_to)).await
        }
    }

    /// Rebuilds the windows and the detectors from storage in the background, then swaps
    /// them in with the applies received meanwhile that the rebuild's snapshot did not see.
    /// The rebuilt detectors announce nothing (replayed verdicts are history), so no anomaly
    /// is reported twice.
    fn start_resync(&mut self, ctx: &mut Context<Self>) {
        self.resyncing.get_or_insert_with(Vec::new);
        ctx.spawn(
            self.rebuild()
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(built) => {
                    let mut live = built.live;
                    let mut anomalies = built.anomalies;
                    let now = Utc::now();
                    for apply in act.resyncing.take().unwrap_or_default() {
                        if !built.snapshot.sees(apply.xid) {
                            for e in &apply.events {
                                live.apply(e, now);
                                anomalies.apply(e);
                            }
                        }
                    }
                    act.live = live;
                    act.views.reset();
                    act.report_overflow();
                    act.deps.metrics.workspace_resyncs.inc();
                    // A counter: the events found late so far stay counted.
                    anomalies.late_events = act.anomalies.late_events;
                    act.anomalies = anomalies;
                    act.report_anomalies();
                    act.snapshot = built.snapshot;
                    tracing::info!(workspace = %act.id, "Windows and detectors resynced from storage.");
                    if std::mem::take(&mut act.resync_again) {
                        act.start_resync(ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(workspace = %act.id, error = %e, "Resync failed; retrying.");
                    ctx.run_later(RESYNC_RETRY, |act, ctx| act.start_resync(ctx));
                }
            }),
        );
    }

    fn touch(&mut self) {
        self.last_message = Instant::now();
        self.deps.metrics.workspace_mailbox_messages.dec();
    }

    /// Idle: nothing heard for `idle_after`, no agent live, no enabled rule, no pending or
    /// firing alert and nothing left to record. (Sessions send messages, so they count.)
    fn is_idle(&self) -> bool {
        self.last_message.elapsed() >= self.deps.idle_after
            && self.live.live_agents(Utc::now()) == 0
            && !self.alerts.has_enabled_rules()
            && !self.alerts.has_active()
            && self.outbox.is_empty()
            && !self.recording
            && self.anomaly_outbox.is_empty()
            && !self.recording_anomalies
    }

    fn report_overflow(&mut self) {
        let counts = [
            self.live.overflow_agent_events,
            self.live.overflow_model_runs,
            self.live.overflow_memory_events,
        ];
        let m = &self.deps.metrics.live_overflow;
        for ((kind, now), reported) in ["agent", "model", "memory"]
            .into_iter()
            .zip(counts)
            .zip(self.reported_overflow.0)
        {
            // A rebuilt live state starts its counts again: only growth is reported.
            m.get_or_create(&KindLabel { kind })
                .inc_by(now.saturating_sub(reported));
        }
        let bytes = self.live.agent_bytes() as i64;
        self.deps
            .metrics
            .live_agent_window_bytes
            .inc_by(bytes - self.reported_overflow.1);
        self.reported_overflow = (counts, bytes);
    }
}

impl Actor for WorkspaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.deps.mailbox);
        let (pool, id) = (self.deps.pool.clone(), self.id.clone());
        let started = Instant::now();
        let rebuild = self.rebuild();
        ctx.wait(
            async move {
                let (built, alerts) = futures_util::future::join(
                    rebuild,
                    store::alerts::load_alerts(&pool, &id),
                )
                .await;
                Ok::<_, store::StoreError>((built?, alerts?))
            }
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok((built, (rules, states))) => {
                        let events = built.events;
                        act.live = built.live;
                        act.views.reset();
                        act.anomalies = built.anomalies;
                        act.report_anomalies();
                        act.snapshot = built.snapshot;
                        act.alerts.load(rules, states, Utc::now());
                        act.report_alerts();
                        act.report_overflow();
                        act.deps.metrics.workspace_rebuild_seconds.observe(started.elapsed().as_secs_f64());
                        tracing::debug!(workspace = %act.id, events, "Rebuilt windows.");
                    }
                    Err(e) => {
                        // Serving windows without history would be wrong, so stop: messages
                        // waiting get an error (503), the next request tries again.
                        tracing::warn!(workspace = %act.id, error = %e, "Window rebuild failed; stopping.");
                        ctx.stop();
                    }
                }),
        );
        ctx.run_interval(LIVENESS_EVERY, |act, ctx| {
            act.fanout.check_liveness(&act.live, Utc::now());
            act.schedule_update(ctx);
            act.close_buckets(ctx);
            // `for` durations, absence metrics and windows emptying over time.
            act.evaluate_alerts(Scope::All, ctx);
        });
        ctx.run_interval(HOUSEKEEPING_EVERY, |act, ctx| {
            let now = Utc::now();
            act.live.expire(now);
            act.fanout.prune(&act.live, now);
            if act.is_idle() {
                tracing::debug!(workspace = %act.id, "Idle; stopping.");
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.shift_alert_gauges((0, 0));
        self.deps
            .metrics
            .live_agent_window_bytes
            .dec_by(self.reported_overflow.1);
        self.deps
            .metrics
            .anomaly_series
            .dec_by(self.reported_anomalies.0);
        if !self.outbox.is_empty() {
            tracing::warn!(workspace = %self.id, transitions = self.outbox.len(), "Stopped with alert transitions not recorded.");
        }
        self.fanout.close_all(CLOSE_GOING_AWAY, "workspace stopped");
        if let Some(registry) = self.registry.upgrade() {
            registry.remove(&self.id, &ctx.address());
        }
    }
}

impl Handler<Apply> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) {
        self.touch();
        if self.snapshot.sees(msg.xid) {
            return; // the rebuild already counted this transaction
        }
        let now = Utc::now();
        let (mut runs, mut heartbeats) = (BTreeSet::new(), BTreeSet::new());
        for event in &msg.events {
            self.live.apply(event, now);
            self.anomalies.apply(event);
            let heartbeat = matches!(event.kind, EventKind::Heartbeat(_));
            self.fanout.touched(&event.agent_id, !heartbeat, heartbeat);
            match event.kind {
                EventKind::Run(_) => runs.insert(&event.agent_id),
                EventKind::Heartbeat(_) => heartbeats.insert(&event.agent_id),
                EventKind::Feedback(_) => false,
            };
        }
        self.report_overflow();
        self.schedule_update(ctx);
        if self.alerts.has_enabled_rules() {
            let runs: BTreeSet<AgentId> = runs.into_iter().cloned().collect();
            let heartbeats: BTreeSet<AgentId> = heartbeats.into_iter().cloned().collect();
            self.evaluate_alerts(
                Scope::Touched {
                    runs: &runs,
                    heartbeats: &heartbeats,
                },
                ctx,
            );
        }
        if let Some(pending) = &mut self.resyncing {
            pending.push(msg);
        }
    }
}

impl Handler<Resync> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.touch();
        if self.resyncing.is_some() {
            self.resync_again = true;
        } else {
            self.start_resync(ctx);
        }
    }
}

impl Handler<GetExecution> for WorkspaceActor {
    type Result = MessageResult<GetExecution>;

    fn handle(&mut self, msg: GetExecution, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let view: ExecView =
            self.views
                .execution(&self.live, msg.agent.as_ref(), msg.window, Utc::now());
        MessageResult(view)
    }
}

impl Handler<GetResources> for WorkspaceActor {
    type Result = MessageResult<GetResources>;

    fn handle(&mut self, msg: GetResources, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let views: BTreeMap<AgentId, ResourceView> =
            self.live
                .resources(msg.agent.as_ref(), msg.window, Utc::now());
        MessageResult(views)
    }
}

impl Handler<Stop> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// An id for this actor's lifetime: clients resuming with another epoch get a fresh start.
fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    // Keep it within JSON's exact integer range (2^53).
    h.finish() >> 11
}

impl Handler<Join> for WorkspaceActor {
    type Result = MessageResult<Join>;

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let joined: Joined = self.fanout.join(
            msg.session,
            msg.sink,
            msg.since,
            &self.live,
            self.alerts.active(),
            Utc::now(),
        );
        self.fanout.check_liveness(&self.live, Utc::now());
        MessageResult(joined)
    }
}

impl Handler<Leave> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        self.touch();
        self.fanout.leave(msg.session);
    }
}

impl Handler<Resubscribe> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Resubscribe, _: &mut Context<Self>) {
        self.touch();
        self.fanout.resubscribe(msg.session, msg.sub);
    }
}

impl Handler<Emit> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Emit, _: &mut Context<Self>) {
        self.touch();
        self.fanout
            .send_event(msg.channel, msg.payload, &self.deps.metrics);
    }
}

impl Handler<CloseSessions> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, _: CloseSessions, _: &mut Context<Self>) {
        self.touch();
        self.fanout.close_all(CLOSE_GOING_AWAY, "hub shutting down");
    }
}

impl Handler<ReloadRules> for WorkspaceActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    /// Reads the workspace's rules again (after a change through the API); answers once they
    /// are in force. Alerts of removed or changed rules resolve.
    fn handle(&mut self, _: ReloadRules, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let (pool, id) = (self.deps.pool.clone(), self.id.clone());
        Box::pin(
            async move { store::alerts::load_alerts(&pool, &id).await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    let (rules, _) = result.map_err(|e| e.to_string())?;
                    let resolved = act.alerts.replace(rules, Utc::now());
                    act.notify(resolved, ctx);
                    act.evaluate_alerts(Scope::All, ctx);
                    Ok(())
                }),
        )
    }
}

/// What a rebuild computes from what it read, off the actor's thread.
struct Rebuilt {
    live: LiveState,
    /// The detectors warmed with the stored history, then the recent events.
    anomalies: Tracker,
    snapshot: store::Snapshot,
    events: usize,
}

impl Rebuilt {
    /// `history_to`: where the detector history read with `recent` ends.
    fn new(deps: &WorkspaceDeps, recent: store::Recent, history_to: i64) -> Self {
        let now = Utc::now();
        let mut live = LiveState::new(deps.rules);
        for event in &recent.events {
            live.apply(event, now);
        }
        let history = recent
            .history
            .iter()
            .filter_map(|((agent, start), inputs)| {
                let agent = match agent {
                    None => None,
                    Some(a) => Some(AgentId::parse(a).ok()?),
                };
                Some((agent, *start, inputs))
            });
        let anomalies = Tracker::rebuild(
            deps.anomaly,
            history,
            &recent.events,
            history_to,
            now.timestamp_millis(),
        );
        Self {
            live,
            anomalies,
            snapshot: recent.snapshot,
            events: recent.events.len(),
        }
    }
}

/// Runs CPU-heavy work (folding a day of events into windows and detectors) on the
/// blocking pool, so the arbiter thread, which other workspaces share, keeps serving them.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, store::StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| store::StoreError::Data(format!("rebuild task: {e}")))
}
