//! WebSocket fan-out state of one workspace: its sessions, the frame sequence, the replay
//! buffer and what changed since the last update. The workspace actor owns it.
//!
//! Frames are JSON text built once per distinct [`Subscription`] per broadcast (most
//! sessions share the default one) and handed to sessions as a cheaply cloned
//! [`ByteString`]. Delivery is `try_send` into each session's bounded mailbox
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

/// An `update` frame, serialized straight from the views (no intermediate JSON tree: this
/// runs on every broadcast). Top-level keys are declared in sorted order, as the other frames
/// have them; the views inside keep their declaration order.
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

/// The views of one update, each computed at most once whatever the sessions ask: frames
/// for many different subscriptions are assembled from the same views, so 10 000 sessions
/// watching distinct agents cost one view per (agent, window), not one per session.
struct Views<'l> {
    live: &'l LiveState,
    now: DateTime<Utc>,
    exec: RefCell<HashMap<ViewKey, Rc<ExecView>>>,
    res: RefCell<HashMap<AgentId, Option<Rc<ResourceView>>>>,
}

impl<'l> Views<'l> {
    fn new(live: &'l LiveState, now: DateTime<Utc>) -> Self {
        Self {
            live,
            now,
            exec: RefCell::default(),
            res: RefCell::default(),
        }
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
        let (epoch, seq, ts) = (self.epoch, self.seq, ts_json(now));
        let views = Views::new(live, now);
        self.deliver(metrics, started, |sub| {
            let mut update = Update {
                agents: None,
                epoch,
                execution: None,
                resources: None,
                seq,
                ts: &ts,
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
            any.then(|| frame(&update))
        });
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
        self.deliver(metrics, started, |sub| {
            sub.wants(channel).then(|| live.clone())
        });
    }

    /// Closes every session with `code` (hub shutdown).
    pub fn close_all(&mut self, code: u16, reason: &'static str) {
        for (_, s) in self.sessions.drain() {
            // One message per session, outside the bounded frame queue: it must get through.
            s.evict.do_send(Evict { code, reason });
        }
    }

    /// Hands each session its subscription's frame, built once per distinct subscription.
    fn deliver(
        &mut self,
        metrics: &HubMetrics,
        started: Instant,
        build: impl Fn(&Subscription) -> Option<ByteString>,
    ) {
        let mut built: HashMap<&Subscription, Option<ByteString>> = HashMap::new();
        let (mut sent, mut slow, mut gone) = (0u64, Vec::new(), Vec::new());
        for (id, s) in &self.sessions {
            let Some(frame) = built.entry(&s.sub).or_insert_with(|| build(&s.sub)) else {
                continue;
            };
            match s.frames.try_send(Frame(frame.clone())) {
                Ok(()) => sent += 1,
                Err(SendError::Full(_)) => slow.push(*id),
                Err(SendError::Closed(_)) => gone.push(*id),
            }
        }
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
