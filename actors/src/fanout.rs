//! WebSocket fan-out state of one workspace: its sessions, the frame sequence, the replay
//! buffer and what changed since the last update. The workspace actor owns it.
//!
//! Frames are JSON text built once per distinct [`Subscription`] per broadcast (most
//! sessions share the default one) and handed to sessions as a cheaply cloned
//! [`ByteString`]. An update frame is assembled from views serialized once per broadcast
//! ([`Views`]): a subscription of its own costs its frame's bytes copied, not a
//! serialization, so sessions watching distinct agents cost about what shared ones do. Delivery is `try_send` into each session's bounded mailbox
//! (`ws.max_queue`): a session whose mailbox is full is evicted with close code 4008, so a
//! slow consumer never slows the others nor makes the hub hold more than its queue.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::Recipient;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::ids::AgentId;
use crate::domain::live::{ts_json, ExecView, LiveState, ResourceView};
use crate::domain::subscription::{Channel, Subscription};
use crate::domain::window::Window;
use crate::messages::{Evict, Frame};
use crate::metrics::{HubMetrics, ReasonLabel};

/// Close code for a session that fell `ws.max_queue` frames behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code sent to every session when the hub shuts down ("going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The resource window sent in frames.
const RESOURCE_WINDOW: Window = Window::M5;

/// Fan-out settings (from `[ws]`).
#[derive(Debug, Clone, Copy)]
pub struct FanOutRules {
    /// Later changes after the first are merged for at most this long.
    pub coalesce: Duration,
    /// Alert and anomaly frames kept for `since=` resume.
    pub replay_frames: usize,
}

/// One connected session.
pub struct SessionSink {
    pub frames: Recipient<Frame>,
    pub evict: Recipient<Evict>,
    pub sub: Subscription,
}

/// What changed since the last update frame.
#[derive(Debug, Default)]
struct Dirty {
    execution: bool,
    agents: BTreeSet<AgentId>,
    resources: BTreeSet<AgentId>,
}

pub struct FanOut {
    /// Identifies this actor's lifetime; `seq` restarts with every epoch.
    pub epoch: u64,
    seq: u64,
    sessions: HashMap<u64, SessionSink>,
    /// Alert and anomaly frames as replayed (`"replay": true`), with their seq and channel,
    /// oldest first.
    replay: VecDeque<(u64, Channel, ByteString)>,
    /// The highest seq that has left the replay buffer.
    replay_lost_upto: u64,
    dirty: Dirty,
    last_update: Option<Instant>,
    /// An update is scheduled (coalescing); changes until then merge into it.
    pub update_scheduled: bool,
    /// Last liveness sent per agent, to turn `stale` transitions into updates.
    liveness: HashMap<AgentId, bool>,
    rules: FanOutRules,
}

/// An `update` frame as serde writes it: what [`Views::update`] assembles by hand from the
/// serialized views (the tests hold the two equal). Top-level keys are in sorted order, as
/// the other frames have them; the views inside keep their declaration order.
#[cfg(test)]
#[derive(Serialize)]
struct Update<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    agents: Option<BTreeMap<&'a AgentId, BTreeMap<&'static str, Rc<ExecView>>>>,
    epoch: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution: Option<BTreeMap<&'static str, Rc<ExecView>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<BTreeMap<AgentId, Rc<ResourceView>>>,
    seq: u64,
    ts: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// An execution view: of the workspace (`None`) or one agent, in one window.
type ViewKey = (Option<AgentId>, Window);

/// The views of one update, each computed (and serialized) at most once whatever the
/// sessions ask: frames for many different subscriptions are assembled from the same views,
/// so 10 000 sessions watching distinct agents cost one view per (agent, window), not one
/// per session.
struct Views<'l> {
    live: &'l LiveState,
    now: DateTime<Utc>,
    exec: RefCell<HashMap<ViewKey, Rc<ExecView>>>,
    res: RefCell<HashMap<AgentId, Option<Rc<ResourceView>>>>,
    /// The same views as JSON text, for [`Views::update`].
    exec_json: RefCell<HashMap<ViewKey, Rc<str>>>,
    res_json: RefCell<HashMap<AgentId, Rc<str>>>,
}

/// Frames queued, and the sessions that were full or gone.
type HandedOut = (u64, Vec<u64>, Vec<u64>);

/// Tries to queue each session's frame, built once per distinct `key` (what of the broadcast
/// a subscription selects: sessions whose subscriptions differ but select the same share one
/// frame).
fn hand_out<'s, K: std::hash::Hash + Eq>(
    sessions: &'s HashMap<u64, SessionSink>,
    key: impl Fn(&'s Subscription) -> K,
    build: impl Fn(&Subscription) -> Option<ByteString>,
) -> HandedOut {
    let mut built: HashMap<K, Option<ByteString>> = HashMap::new();
    let (mut sent, mut slow, mut gone) = (0u64, Vec::new(), Vec::new());
    for (id, s) in sessions {
        let Some(frame) = built.entry(key(&s.sub)).or_insert_with(|| build(&s.sub)) else {
            continue;
        };
        match s.frames.try_send(Frame(frame.clone())) {
            Ok(()) => sent += 1,
            Err(SendError::Full(_)) => slow.push(*id),
            Err(SendError::Closed(_)) => gone.push(*id),
        }
    }
    (sent, slow, gone)
}

/// What of an update a subscription selects: two subscriptions with the same selection get
/// the same frame, however they differ (10 000 dashboards each naming its own agents share
/// one frame when the update touches the same of them).
#[derive(PartialEq, Eq, Hash)]
struct Selection<'a> {
    /// The agents' window, the workspace windows, whether every agent is wanted, and the
    /// changed agents wanted.
    execution: Option<(Window, &'a BTreeSet<Window>, bool, Vec<&'a AgentId>)>,
    /// The agents with changed resources wanted.
    resources: Option<Vec<&'a AgentId>>,
}

impl<'a> Selection<'a> {
    fn of(sub: &'a Subscription, dirty: &'a Dirty) -> Self {
        let wanted = |agents: &'a BTreeSet<AgentId>| -> Vec<&'a AgentId> {
            agents.iter().filter(|a| sub.wants_agent(a)).collect()
        };
        Self {
            execution: (sub.wants(Channel::Execution) && dirty.execution).then(|| {
                (
                    sub.agent_window(),
                    &sub.windows,
                    sub.agents.is_none(),
                    wanted(&dirty.agents),
                )
            }),
            resources: (sub.wants(Channel::Resources) && !dirty.resources.is_empty())
                .then(|| wanted(&dirty.resources)),
        }
    }
}

/// What one update frame carries besides the views.
struct UpdateHead<'a> {
    epoch: u64,
    seq: u64,
    ts: &'a str,
}

fn json_text(value: &impl Serialize) -> Rc<str> {
    // Serializing our own view types cannot fail.
    Rc::from(serde_json::to_string(value).unwrap_or_default())
}

/// Appends `"key":` (JSON-escaped).
fn push_key(out: &mut String, key: &str) {
    out.push_str(&serde_json::to_string(key).unwrap_or_default());
    out.push(':');
}

impl<'l> Views<'l> {
    fn new(live: &'l LiveState, now: DateTime<Utc>) -> Self {
        Self {
            live,
            now,
            exec: RefCell::default(),
            res: RefCell::default(),
            exec_json: RefCell::default(),
            res_json: RefCell::default(),
        }
    }

    fn execution_json(&self, agent: Option<&AgentId>, window: Window) -> Rc<str> {
        let key = (agent.cloned(), window);
        if let Some(text) = self.exec_json.borrow().get(&key) {
            return text.clone();
        }
        let text = json_text(&*self.execution(agent, window));
        self.exec_json.borrow_mut().insert(key, text.clone());
        text
    }

    fn resource_json(&self, agent: &AgentId, view: &ResourceView) -> Rc<str> {
        self.res_json
            .borrow_mut()
            .entry(agent.clone())
            .or_insert_with(|| json_text(view))
            .clone()
    }

    /// `sub`'s update frame for what changed (`None` when nothing of it concerns `sub`),
    /// written from the serialized views: the bytes serde would write for [`Update`].
    fn update(&self, sub: &Subscription, dirty: &Dirty, head: &UpdateHead) -> Option<ByteString> {
        let mut out = String::with_capacity(4096);
        let mut any = false;
        out.push('{');
        let execution = sub.wants(Channel::Execution) && dirty.execution;
        if execution {
            let window = sub.agent_window();
            out.push_str("\"agents\":{");
            let mut agents = 0;
            for agent in dirty.agents.iter().filter(|a| sub.wants_agent(a)) {
                if agents > 0 {
                    out.push(',');
                }
                agents += 1;
                push_key(&mut out, agent.as_str());
                out.push('{');
                push_key(&mut out, window.as_str());
                out.push_str(&self.execution_json(Some(agent), window));
                out.push('}');
            }
            out.push_str("},");
            any |= sub.agents.is_none() || agents > 0;
        }
        out.push_str(&format!("\"epoch\":{},", head.epoch));
        if execution {
            // Windows by name, as a map keyed by name is written.
            let mut windows: Vec<Window> = sub.windows.iter().copied().collect();
            windows.sort_by_key(|w| w.as_str());
            out.push_str("\"execution\":{");
            for (i, w) in windows.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_key(&mut out, w.as_str());
                out.push_str(&self.execution_json(None, w));
            }
            out.push_str("},");
        }
        if sub.wants(Channel::Resources) && !dirty.resources.is_empty() {
            let views = self.resources(sub, &dirty.resources);
            any |= !views.is_empty();
            out.push_str("\"resources\":{");
            for (i, (agent, view)) in views.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_key(&mut out, agent.as_str());
                out.push_str(&self.resource_json(agent, view));
            }
            out.push_str("},");
        }
        out.push_str(&format!("\"seq\":{},\"ts\":", head.seq));
        out.push_str(&serde_json::to_string(head.ts).unwrap_or_default());
        out.push_str(",\"type\":\"update\"}");
        any.then(|| ByteString::from(out))
    }

    fn execution(&self, agent: Option<&AgentId>, window: Window) -> Rc<ExecView> {
        self.exec
            .borrow_mut()
            .entry((agent.cloned(), window))
            .or_insert_with(|| Rc::new(self.live.execution(agent, window, self.now)))
            .clone()
    }

    /// The subscription's windows of the workspace.
    fn windows(&self, sub: &Subscription) -> BTreeMap<&'static str, Rc<ExecView>> {
        sub.windows
            .iter()
            .map(|w| (w.as_str(), self.execution(None, *w)))
            .collect()
    }

    /// The resource views of those of `agents` that `sub` wants.
    fn resources(
        &self,
        sub: &Subscription,
        agents: &BTreeSet<AgentId>,
    ) -> BTreeMap<AgentId, Rc<ResourceView>> {
        agents
            .iter()
            .filter(|a| sub.wants_agent(a))
            .filter_map(|a| {
                let view = self
                    .res
                    .borrow_mut()
                    .entry(a.clone())
                    .or_insert_with(|| {
                        let one = self.live.resources(Some(a), RESOURCE_WINDOW, self.now);
                        one.into_values().next().map(Rc::new)
                    })
                    .clone();
                Some((a.clone(), view?))
            })
            .collect()
    }
}

/// What a joining session gets first.
pub struct Joined {
    pub snapshot: ByteString,
    pub replay: Vec<ByteString>,
}

fn frame(value: &impl Serialize) -> ByteString {
    // Serializing our own view types cannot fail.
    ByteString::from(serde_json::to_string(value).unwrap_or_default())
}

/// Every agent's resource view that `sub` wants (snapshots).
fn resources(
    live: &LiveState,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> BTreeMap<AgentId, ResourceView> {
    let mut all = live.resources(None, RESOURCE_WINDOW, now);
    all.retain(|a, _| sub.wants_agent(a));
    all
}

impl FanOut {
    pub fn new(epoch: u64, rules: FanOutRules) -> Self {
        Self {
            epoch,
            seq: 0,
            sessions: HashMap::new(),
            replay: VecDeque::new(),
            replay_lost_upto: 0,
            dirty: Dirty::default(),
            last_update: None,
            update_scheduled: false,
            liveness: HashMap::new(),
            rules,
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Registers a session and builds its snapshot (plus the frames it missed, when `since`
    /// names this epoch and the replay buffer still holds everything after it).
    pub fn join(
        &mut self,
        id: u64,
        sink: SessionSink,
        since: Option<(u64, u64)>,
        live: &LiveState,
        alerts: Vec<Value>,
        now: DateTime<Utc>,
    ) -> Joined {
        let (recovered, replay) = match since {
            Some((epoch, seq))
                if epoch == self.epoch && seq >= self.replay_lost_upto && seq <= self.seq =>
            {
                let frames = self
                    .replay
                    .iter()
                    .filter(|(s, channel, _)| *s > seq && sink.sub.wants(*channel))
                    .map(|(_, _, f)| f.clone())
                    .collect();
                (true, frames)
            }
            _ => (false, Vec::new()),
        };
        let sub = &sink.sub;
        let mut snap = json!({
            "type": "snapshot", "protocol": 1, "epoch": self.epoch, "seq": self.seq, "ts": ts_json(now),
            "alerts": if sub.wants(Channel::Alerts) { alerts } else { Vec::new() },
            "recovered": recovered,
        });
        if sub.wants(Channel::Execution) {
            snap["execution"] = json!(Views::new(live, now).windows(sub));
        }
        if sub.wants(Channel::Resources) {
            snap["resources"] = json!(resources(live, sub, now));
        }
        self.sessions.insert(id, sink);
        Joined {
            snapshot: frame(&snap),
            replay,
        }
    }

    /// Forgets sessions that are gone without a `Leave` (it could not be queued).
    /// Drops sessions that went away, and the liveness of agents the live state forgot.
    pub fn prune(&mut self, live: &LiveState, now: DateTime<Utc>) {
        self.sessions.retain(|_, s| s.frames.connected());
        self.liveness
            .retain(|agent, _| live.agent_liveness(agent, now).is_some());
    }

    pub fn leave(&mut self, id: u64) {
        self.sessions.remove(&id);
    }

    pub fn resubscribe(&mut self, id: u64, sub: Subscription) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.sub = sub;
        }
    }

    /// Notes what an applied event changed (nothing is kept while no session listens). The
    /// caller then sends an update after [`FanOut::delay`] unless one is scheduled.
    pub fn touched(&mut self, agent: &AgentId, execution: bool, resources: bool) {
        if self.sessions.is_empty() {
            return;
        }
        if execution {
            self.dirty.execution = true;
            self.dirty.agents.insert(agent.clone());
        }
        if resources {
            self.dirty.resources.insert(agent.clone());
        }
    }

    pub fn has_changes(&self) -> bool {
        self.dirty.execution || !self.dirty.resources.is_empty()
    }

    /// How long until an update may go out: zero after a quiet spell.
    pub fn delay(&self) -> Duration {
        self.last_update.map_or(Duration::ZERO, |t| {
            self.rules.coalesce.saturating_sub(t.elapsed())
        })
    }

    /// Marks agents whose liveness changed since the last update (an agent turning `stale`
    /// on the timer is a change).
    pub fn check_liveness(&mut self, live: &LiveState, now: DateTime<Utc>) {
        if self.sessions.is_empty() {
            return;
        }
        for (agent, is_live) in live.liveness(now) {
            if self
                .liveness
                .insert(agent.clone(), is_live)
                .is_some_and(|was| was != is_live)
            {
                self.dirty.resources.insert(agent.clone());
            }
        }
    }

    /// Sends one `update` frame with everything changed since the last one.
    pub fn send_update(&mut self, live: &LiveState, now: DateTime<Utc>, metrics: &HubMetrics) {
        let started = Instant::now();
        self.update_scheduled = false;
        if !self.has_changes() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.last_update = Some(Instant::now());
        self.seq += 1;
        // The liveness this update tells, so the timer reports the next turn from it, even
        // when an agent goes stale before the timer ever saw it live.
        for agent in &dirty.resources {
            if let Some(is_live) = live.agent_liveness(agent, now) {
                self.liveness.insert(agent.clone(), is_live);
            }
        }
        let ts = ts_json(now);
        let head = UpdateHead {
            epoch: self.epoch,
            seq: self.seq,
            ts: &ts,
        };
        let views = Views::new(live, now);
        let outcome = hand_out(
            &self.sessions,
            |sub| Selection::of(sub, &dirty),
            |sub| views.update(sub, &dirty, &head),
        );
        self.delivered(metrics, started, outcome);
    }

    /// Sends an `alert` or `anomaly` frame at once and keeps it for resume.
    pub fn send_event(&mut self, channel: Channel, payload: Value, metrics: &HubMetrics) {
        let started = Instant::now();
        let key = if channel == Channel::Alerts {
            "alert"
        } else {
            "anomaly"
        };
        self.seq += 1;
        let mut body = json!({"type": key, "epoch": self.epoch, "seq": self.seq});
        body[key] = payload;
        let live = frame(&body);
        body["replay"] = json!(true);
        self.replay.push_back((self.seq, channel, frame(&body)));
        while self.replay.len() > self.rules.replay_frames {
            if let Some((s, _, _)) = self.replay.pop_front() {
                self.replay_lost_upto = s;
            }
        }
        let outcome = hand_out(
            &self.sessions,
            |sub| sub.wants(channel),
            |sub| sub.wants(channel).then(|| live.clone()),
        );
        self.delivered(metrics, started, outcome);
    }

    /// Closes every session with `code` (hub shutdown).
    pub fn close_all(&mut self, code: u16, reason: &'static str) {
        for (_, s) in self.sessions.drain() {
            // One message per session, outside the bounded frame queue: it must get through.
            s.evict.do_send(Evict { code, reason });
        }
    }

    /// Counts what [`hand_out`] sent, and drops the sessions that were gone or full (those
    /// are closed with 4008).
    fn delivered(&mut self, metrics: &HubMetrics, started: Instant, outcome: HandedOut) {
        let (sent, slow, gone) = outcome;
        metrics.ws_frames_sent.inc_by(sent);
        if !self.sessions.is_empty() {
            metrics
                .ws_broadcast_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        for id in gone {
            self.sessions.remove(&id);
        }
        for id in slow {
            if let Some(s) = self.sessions.remove(&id) {
                metrics
                    .ws_evictions
                    .get_or_create(&ReasonLabel {
                        reason: "slow_consumer",
                    })
                    .inc();
                s.evict.do_send(Evict {
                    code: CLOSE_SLOW_CONSUMER,
                    reason: "fell behind ws.max_queue frames",
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Event, EventKind, Heartbeat, Run, RunStatus};
    use crate::domain::ids::EventId;
    use crate::domain::live::LiveRules;

    fn live(now: DateTime<Utc>) -> LiveState {
        let mut live = LiveState::new(LiveRules {
            max_agents: 100,
            max_models: 100,
            max_models_per_agent: 16,
            max_agent_bytes: usize::MAX,
            stale_after: chrono::Duration::seconds(60),
        });
        for (i, agent) in ["b", "a", "c.d:e-f"].into_iter().enumerate() {
            let agent_id = AgentId::parse(agent).unwrap();
            let run = Event {
                event_id: EventId::parse("e").unwrap(),
                agent_id: agent_id.clone(),
                kind: EventKind::Run(Run {
                    run_id: None,
                    user_id: None,
                    status: RunStatus::Failed,
                    started_at: None,
                    completed_at: now - chrono::Duration::seconds(i as i64 * 40),
                    runtime_ms: 100.0 * (i + 1) as f64,
                    credits: 0.3,
                    tokens_in: 7,
                    tokens_out: 3,
                    model: Some(format!("m{i}")),
                    error: None,
                }),
            };
            live.apply(&run, now);
            let hb = Event {
                event_id: EventId::parse("h").unwrap(),
                agent_id,
                kind: EventKind::Heartbeat(Heartbeat {
                    ts: now,
                    cpu_pct: Some(12.5 * (i + 1) as f64),
                    mem_mb: Some(100.0),
                    mem_limit_mb: Some(400.0),
                    cpu_limit_cores: Some(1.0),
                    concurrent_runs: Some(1),
                    queue_depth: None,
                }),
            };
            live.apply(&hb, now);
        }
        live
    }

    /// The frame serde writes for the same update (what the frames were before they were
    /// assembled by hand).
    fn reference(
        views: &Views,
        sub: &Subscription,
        dirty: &Dirty,
        head: &UpdateHead,
    ) -> Option<String> {
        let mut update = Update {
            agents: None,
            epoch: head.epoch,
            execution: None,
            resources: None,
            seq: head.seq,
            ts: head.ts,
            kind: "update",
        };
        let mut any = false;
        if sub.wants(Channel::Execution) && dirty.execution {
            update.execution = Some(views.windows(sub));
            let agents: BTreeMap<&AgentId, _> = dirty
                .agents
                .iter()
                .filter(|a| sub.wants_agent(a))
                .map(|a| {
                    let w = sub.agent_window();
                    (
                        a,
                        BTreeMap::from([(w.as_str(), views.execution(Some(a), w))]),
                    )
                })
                .collect();
            any |= sub.agents.is_none() || !agents.is_empty();
            update.agents = Some(agents);
        }
        if sub.wants(Channel::Resources) && !dirty.resources.is_empty() {
            let res = views.resources(sub, &dirty.resources);
            any |= !res.is_empty();
            update.resources = Some(res);
        }
        any.then(|| serde_json::to_string(&update).unwrap())
    }

    #[test]
    fn assembled_update_frames_are_what_serde_writes() {
        let now: DateTime<Utc> = "2026-11-24T12:00:00.250Z".parse().unwrap();
        let live = live(now);
        let ids = |names: &[&str]| -> BTreeSet<AgentId> {
            names.iter().map(|n| AgentId::parse(n).unwrap()).collect()
        };
        let dirties = [
            Dirty {
                execution: true,
                agents: ids(&["a", "b", "c.d:e-f"]),
                resources: ids(&["a", "c.d:e-f"]),
            },
            Dirty {
                execution: true,
                agents: ids(&["b"]),
                resources: BTreeSet::new(),
            },
            Dirty {
                execution: false,
                agents: BTreeSet::new(),
                resources: ids(&["b"]),
            },
        ];
        let subs = [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","agent_ids":["a","zz"]}"#,
            r#"{"type":"subscribe","windows":["24h","15m","1m"]}"#,
            r#"{"type":"subscribe","channels":["resources"]}"#,
            r#"{"type":"subscribe","channels":["execution"],"agent_ids":["nobody"]}"#,
            r#"{"type":"subscribe","agent_ids":["b"],"windows":["1h"]}"#,
        ];
        let head = UpdateHead {
            epoch: 7,
            seq: 42,
            ts: "2026-11-24T12:00:00.250Z",
        };
        let mut compared = 0;
        for dirty in &dirties {
            let views = Views::new(&live, now);
            for text in subs {
                let sub = Subscription::parse(text).unwrap();
                let ours = views.update(&sub, dirty, &head).map(|b| b.to_string());
                let theirs = reference(&views, &sub, dirty, &head);
                assert_eq!(ours, theirs, "{text}");
                compared += usize::from(ours.is_some());
            }
        }
        assert!(
            compared >= 10,
            "positive control: most cases make a frame ({compared})"
        );
    }

    #[test]
    fn subscriptions_that_select_the_same_share_a_frame() {
        let ids = |names: &[&str]| -> BTreeSet<AgentId> {
            names.iter().map(|n| AgentId::parse(n).unwrap()).collect()
        };
        let dirty = Dirty {
            execution: true,
            agents: ids(&["a", "b"]),
            resources: ids(&["a"]),
        };
        let sub = |t: &str| Subscription::parse(t).unwrap();
        let (one, two, three, four) = (
            sub(r#"{"type":"subscribe","agent_ids":["a","b","x1"]}"#),
            sub(r#"{"type":"subscribe","agent_ids":["b","a","x2"]}"#),
            sub(r#"{"type":"subscribe","agent_ids":["a","x3"]}"#),
            sub(r#"{"type":"subscribe","agent_ids":["a","b","x1"],"windows":["1m"]}"#),
        );
        assert!(Selection::of(&one, &dirty) == Selection::of(&two, &dirty));
        assert!(Selection::of(&one, &dirty) != Selection::of(&three, &dirty));
        assert!(Selection::of(&one, &dirty) != Selection::of(&four, &dirty));
        let all = Subscription::default();
        assert!(
            Selection::of(&all, &dirty) != Selection::of(&one, &dirty),
            "every agent"
        );
    }
}
