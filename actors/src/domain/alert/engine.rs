//! The alert state machine of one workspace: per rule and series (the workspace, or one
//! agent), `ok → pending → firing → ok` (a resolve), honouring `for`, `min_samples`,
//! `cooldown`, `no_data` and `repeat_interval`. Pure: the live state and the clock come in
//! as arguments, transitions come out; the workspace actor persists and delivers them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::rule::{NoData, Rule, Source};
use crate::domain::anomaly::track::Tracker;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::live::{ts_json, LiveState};

/// A metric's value over a window and how many samples it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub value: Option<f64>,
    pub samples: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Ok,
    /// The condition holds; `for` has not elapsed yet.
    Pending,
    Firing,
}

/// The state of one (rule, series).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesState {
    pub phase: Phase,
    pub value: Option<f64>,
    pub pending_since: Option<DateTime<Utc>>,
    /// When it last went firing.
    pub started_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub last_notified_at: Option<DateTime<Utc>>,
    /// No new firing before this (set on resolve).
    pub cooldown_until: Option<DateTime<Utc>>,
}

impl SeriesState {
    fn new() -> Self {
        Self {
            phase: Phase::Ok,
            value: None,
            pending_since: None,
            started_at: None,
            resolved_at: None,
            last_notified_at: None,
            cooldown_until: None,
        }
    }

    /// Nothing worth keeping: ok and out of any cooldown.
    fn is_spent(&self, now: DateTime<Utc>) -> bool {
        self.phase == Phase::Ok && self.cooldown_until.is_none_or(|c| c <= now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    Firing,
    Resolved,
    /// A still-firing alert notified again after `repeat_interval`.
    Repeat,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::Repeat => "repeat",
        }
    }

    /// The notification's `type`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Firing | Self::Repeat => "alert.firing",
            Self::Resolved => "alert.resolved",
        }
    }
}

/// A notified transition: persisted with the state it leaves, then sent to the workspace's
/// sessions and to the rule's channels.
#[derive(Debug, Clone)]
pub struct Transition {
    pub rule: Arc<Rule>,
    pub agent: Option<AgentId>,
    pub kind: TransitionKind,
    pub at: DateTime<Utc>,
    /// The state after the transition.
    pub state: SeriesState,
    /// Why a resolve happened without the condition clearing (rule removed or changed).
    pub reason: Option<&'static str>,
}

impl Transition {
    /// The alert object of frames, webhooks and `/alerts/events` (SPEC §7).
    pub fn alert_json(&self) -> Value {
        let r = &self.rule;
        let mut alert = json!({
            "rule_id": &*r.id,
            "name": r.name,
            "severity": r.severity.as_str(),
            "metric": r.metric.as_str(),
            "agent_id": self.agent.as_ref().map(AgentId::as_str),
            "value": self.state.value,
            "op": r.op.as_str(),
            "threshold": r.threshold,
            "window": r.window.as_str(),
            "state": if self.kind == TransitionKind::Resolved { "resolved" } else { "firing" },
            "started_at": self.state.started_at.map(ts_json),
            "resolved_at": self.state.resolved_at.filter(|_| self.kind == TransitionKind::Resolved).map(ts_json),
        });
        if let Some(reason) = self.reason {
            alert["reason"] = json!(reason);
        }
        if let Some(m) = r.anomaly_metric {
            alert["anomaly_metric"] = json!(m.as_str());
        }
        alert
    }

    /// The default (`shadower`) notification body; `id` is the delivery's `webhook-id`.
    pub fn body(&self, id: &str, workspace: &WorkspaceId) -> Value {
        json!({
            "id": id,
            "type": self.kind.event_type(),
            "workspace_id": workspace.as_str(),
            "alert": self.alert_json(),
        })
    }
}

/// A state as stored in `alert_states`, read back on start.
#[derive(Debug, Clone)]
pub struct StoredState {
    pub rule_id: String,
    pub agent: Option<AgentId>,
    pub firing: bool,
    pub value: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub last_notified_at: DateTime<Utc>,
    pub cooldown_until: Option<DateTime<Utc>>,
}

/// Which series an evaluation looks at.
pub enum Scope<'a> {
    /// Every series (the 1 s timer: `for`, absence, expiry).
    All,
    /// Only what a batch changed: agents with new runs, agents with new heartbeats.
    Touched {
        runs: &'a BTreeSet<AgentId>,
        heartbeats: &'a BTreeSet<AgentId>,
    },
}

type Key = (Arc<str>, Option<AgentId>);

/// The rules of one workspace and the state of each of their series.
#[derive(Debug, Default)]
pub struct AlertEngine {
    rules: HashMap<Arc<str>, Arc<Rule>>,
    /// Enabled rule ids by the events that move their metric.
    by_source: HashMap<Source, Vec<Arc<str>>>,
    /// Series not in `ok`, or cooling down. Spent ones are dropped.
    states: HashMap<Key, SeriesState>,
}

impl AlertEngine {
    /// Sets the rules at start, with the states stored for them.
    pub fn load(&mut self, rules: Vec<Rule>, stored: Vec<StoredState>, now: DateTime<Utc>) {
        self.set(rules);
        for s in stored {
            let Some(rule) = self.rules.get(s.rule_id.as_str()) else {
                continue;
            };
            let state = SeriesState {
                phase: if s.firing { Phase::Firing } else { Phase::Ok },
                value: s.value,
                pending_since: None,
                started_at: Some(s.started_at),
                resolved_at: s.resolved_at,
                last_notified_at: Some(s.last_notified_at),
                cooldown_until: s.cooldown_until,
            };
            if !state.is_spent(now) {
                self.states.insert((rule.id.clone(), s.agent), state);
            }
        }
    }

    /// Replaces the rules (after a change through the API). A firing alert whose rule is
    /// gone, disabled, or no longer watches its series resolves, so notifications still come
    /// in pairs.
    pub fn replace(&mut self, rules: Vec<Rule>, now: DateTime<Utc>) -> Vec<Transition> {
        let old = std::mem::take(&mut self.rules);
        self.set(rules);
        let mut out = Vec::new();
        let keys: Vec<Key> = self.states.keys().cloned().collect();
        for key in keys {
            let valid = self
                .rules
                .get(&key.0)
                .is_some_and(|r| r.enabled && watches(r, key.1.as_ref()));
            if valid {
                continue;
            }
            let Some(mut state) = self.states.remove(&key) else {
                continue;
            };
            if state.phase == Phase::Firing {
                let rule = old.get(&key.0).or_else(|| self.rules.get(&key.0)).cloned();
                if let Some(rule) = rule {
                    state.phase = Phase::Ok;
                    state.resolved_at = Some(now);
                    state.last_notified_at = Some(now);
                    out.push(Transition {
                        rule,
                        agent: key.1,
                        kind: TransitionKind::Resolved,
                        at: now,
                        state,
                        reason: Some("rule changed or removed"),
                    });
                }
            }
        }
        out
    }

    fn set(&mut self, rules: Vec<Rule>) {
        self.by_source.clear();
        self.rules = rules
            .into_iter()
            .map(|r| (r.id.clone(), Arc::new(r)))
            .collect();
        for r in self.rules.values().filter(|r| r.enabled) {
            self.by_source
                .entry(r.metric.source())
                .or_default()
                .push(r.id.clone());
        }
    }

    pub fn has_enabled_rules(&self) -> bool {
        !self.by_source.is_empty()
    }

    /// Alerts pending or firing.
    pub fn has_active(&self) -> bool {
        self.states.values().any(|s| s.phase != Phase::Ok)
    }

    /// (pending, firing) series.
    pub fn counts(&self) -> (usize, usize) {
        self.states
            .values()
            .fold((0, 0), |(p, f), s| match s.phase {
                Phase::Pending => (p + 1, f),
                Phase::Firing => (p, f + 1),
                Phase::Ok => (p, f),
            })
    }

    /// Pending and firing alerts, for the WebSocket snapshot.
    pub fn active(&self) -> Vec<Value> {
        let mut active: Vec<(&Key, &SeriesState)> = self
            .states
            .iter()
            .filter(|(_, s)| s.phase != Phase::Ok)
            .collect();
        active.sort_by(|a, b| a.0.cmp(b.0));
        active
            .into_iter()
            .filter_map(|((rule_id, agent), s)| {
                let r = self.rules.get(rule_id)?;
                Some(json!({
                    "rule_id": &**rule_id,
                    "name": r.name,
                    "severity": r.severity.as_str(),
                    "metric": r.metric.as_str(),
                    "agent_id": agent.as_ref().map(AgentId::as_str),
                    "state": if s.phase == Phase::Firing { "firing" } else { "pending" },
                    "value": s.value,
                    "op": r.op.as_str(),
                    "threshold": r.threshold,
                    "window": r.window.as_str(),
                    "started_at": s.started_at.filter(|_| s.phase == Phase::Firing).map(ts_json),
                    "pending_since": s.pending_since.filter(|_| s.phase == Phase::Pending).map(ts_json),
                }))
            })
            .collect()
    }

    /// Evaluates the rules `scope` may have changed; returns the notified transitions.
    /// `anomalies` serves `anomaly_score` rules (their window is not used: the score is
    /// the latest closed bucket's).
    pub fn evaluate(
        &mut self,
        live: &LiveState,
        anomalies: &Tracker,
        scope: Scope<'_>,
        now: DateTime<Utc>,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        for source in [Source::Runs, Source::Heartbeats, Source::Anomalies] {
            let touched = match &scope {
                Scope::All => None,
                Scope::Touched { runs, heartbeats } => Some(match source {
                    Source::Runs => *runs,
                    Source::Heartbeats => *heartbeats,
                    // Scores move when buckets close, on the timer (`Scope::All`).
                    Source::Anomalies => continue,
                }),
            };
            if touched.is_some_and(BTreeSet::is_empty) {
                continue;
            }
            let Some(ids) = self.by_source.get(&source) else {
                continue;
            };
            for id in ids.clone() {
                let Some(rule) = self.rules.get(&id).cloned() else {
                    continue;
                };
                for agent in self.series(&rule, live, touched) {
                    let sample = match rule.anomaly_metric {
                        Some(m) => {
                            let value = anomalies.score(agent.as_ref(), m);
                            Sample {
                                value,
                                samples: u64::from(value.is_some()),
                            }
                        }
                        None => live.sample(rule.metric, agent.as_ref(), rule.window, now),
                    };
                    self.step(&rule, agent, sample, now, &mut out);
                }
            }
        }
        out
    }

    /// The series of `rule` to evaluate: its agents (touched ones, or every agent live or
    /// with a state), its one agent, or the workspace.
    fn series(
        &self,
        rule: &Rule,
        live: &LiveState,
        touched: Option<&BTreeSet<AgentId>>,
    ) -> Vec<Option<AgentId>> {
        if rule.per_agent() {
            let mut agents: BTreeSet<AgentId> = match touched {
                Some(t) => t.clone(),
                None => live.agent_ids().cloned().collect(),
            };
            if touched.is_none() {
                agents.extend(
                    self.states
                        .keys()
                        .filter(|(r, _)| *r == rule.id)
                        .filter_map(|(_, a)| a.clone()),
                );
            }
            return agents.into_iter().map(Some).collect();
        }
        match (&rule.agent_id, touched) {
            (Some(a), Some(t)) if !t.contains(a) => Vec::new(),
            (agent, _) => vec![agent.clone()],
        }
    }

    fn step(
        &mut self,
        rule: &Arc<Rule>,
        agent: Option<AgentId>,
        sample: Sample,
        now: DateTime<Utc>,
        out: &mut Vec<Transition>,
    ) {
        let key = (rule.id.clone(), agent);
        let mut state = self
            .states
            .get(&key)
            .cloned()
            .unwrap_or_else(SeriesState::new);
        let has_data = sample.value.is_some()
            && (!rule.metric.uses_min_samples() || sample.samples >= rule.min_samples);
        let holds = has_data
            && sample
                .value
                .is_some_and(|v| rule.op.holds(v, rule.threshold));
        let mut kind = None;
        match state.phase {
            Phase::Ok if holds => {
                if state.cooldown_until.is_some_and(|c| now < c) {
                    // Held out of firing by the cooldown after the last resolve.
                } else if rule.for_ <= chrono::Duration::zero() {
                    kind = Some(TransitionKind::Firing);
                } else {
                    state.phase = Phase::Pending;
                    state.pending_since = Some(now);
                }
            }
            Phase::Ok => {}
            Phase::Pending if !holds => {
                state.phase = Phase::Ok;
                state.pending_since = None;
            }
            Phase::Pending => {
                if state.pending_since.is_none_or(|s| now - s >= rule.for_) {
                    kind = Some(TransitionKind::Firing);
                }
            }
            Phase::Firing if holds => {
                let due = rule.repeat_interval.zip(state.last_notified_at);
                if due.is_some_and(|(every, last)| now - last >= every) {
                    kind = Some(TransitionKind::Repeat);
                }
            }
            Phase::Firing => {
                if has_data || rule.no_data == NoData::Resolve {
                    kind = Some(TransitionKind::Resolved);
                }
            }
        }
        if has_data || kind.is_some() {
            state.value = sample.value;
        }
        match kind {
            Some(TransitionKind::Firing) => {
                state.phase = Phase::Firing;
                state.pending_since = None;
                state.started_at = Some(now);
                state.resolved_at = None;
                state.last_notified_at = Some(now);
            }
            Some(TransitionKind::Repeat) => state.last_notified_at = Some(now),
            Some(TransitionKind::Resolved) => {
                state.phase = Phase::Ok;
                state.resolved_at = Some(now);
                state.last_notified_at = Some(now);
                state.cooldown_until = Some(now + rule.cooldown);
            }
            None => {}
        }
        if let Some(kind) = kind {
            out.push(Transition {
                rule: rule.clone(),
                agent: key.1.clone(),
                kind,
                at: now,
                state: state.clone(),
                reason: None,
            });
        }
        if state.is_spent(now) {
            self.states.remove(&key);
        } else {
            self.states.insert(key, state);
        }
    }
}

/// Whether `rule` (enabled) keeps a series for `agent`.
fn watches(rule: &Rule, agent: Option<&AgentId>) -> bool {
    if rule.per_agent() {
        agent.is_some()
    } else {
        agent == rule.agent_id.as_ref()
    }
}
