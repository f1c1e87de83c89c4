//! A workspace's live state: execution and resource windows for the workspace and for each
//! agent, fed with validated events and read back as the contract's window objects. Pure:
//! no actix, no I/O, the clock is an argument.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;

use super::alert::{Metric, Sample, Source};
use super::event::{Event, EventKind, Heartbeat, Run, RunStatus};
use super::ids::{AgentId, OTHER};
use super::sketch::Sketch;
use super::window::{Bucket, Series, Window};

mod models;
pub use models::Models;

/// Cardinality and liveness settings of the live state.
#[derive(Debug, Clone, Copy)]
pub struct LiveRules {
    /// Agents past this many are counted live under `_other` (still stored in full).
    pub max_agents: usize,
    /// Models past this many are counted live under `_other`; a model leaves the set once
    /// no run of the last 24 h names it.
    pub max_models: usize,
    /// Models kept apart in one sub-bucket of one agent; the agent's further models in that
    /// sub-bucket count under `_other` (the workspace's own buckets keep up to `max_models`).
    /// Bounds an agent's memory whatever models it reports.
    pub max_models_per_agent: usize,
    /// Bytes all agents' windows of the workspace may hold together ([`LiveState::agent_bytes`]).
    /// Once they hold this much, every agent's new events count under `_other` (whose own
    /// windows are bounded by construction) until expiry frees room; the workspace's own
    /// windows stay exact.
    pub max_agent_bytes: usize,
    /// An agent with no heartbeat for this long is `stale`.
    pub stale_after: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelUsage {
    pub runs: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    #[serde(serialize_with = "micro")]
    pub credits: f64,
}

impl ModelUsage {
    fn add(&mut self, o: &ModelUsage) {
        self.runs = self.runs.saturating_add(o.runs);
        self.tokens_in = self.tokens_in.saturating_add(o.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(o.tokens_out);
        self.credits += o.credits;
    }
}

/// What one execution sub-bucket accumulates.
#[derive(Debug, Clone, Default)]
pub struct ExecBucket {
    pub succeeded: u64,
    pub failed: u64,
    pub timeout: u64,
    pub cancelled: u64,
    pub runtime: Sketch,
    pub credits: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub models: Models,
    pub feedback: u64,
    pub rating_sum: u64,
}

impl ExecBucket {
    pub fn runs(&self) -> u64 {
        self.succeeded + self.failed + self.timeout + self.cancelled
    }

    /// Adds a run; its model is kept apart while the bucket holds fewer than `max_models`
    /// models (else it counts under `other`).
    fn add_run(
        &mut self,
        run: &Run,
        model: Option<&Arc<str>>,
        max_models: usize,
        other: &Arc<str>,
    ) {
        match run.status {
            RunStatus::Succeeded => self.succeeded += 1,
            RunStatus::Failed => self.failed += 1,
            RunStatus::Timeout => self.timeout += 1,
            RunStatus::Cancelled => self.cancelled += 1,
        }
        self.runtime.add(run.runtime_ms);
        self.credits += run.credits;
        self.tokens_in = self.tokens_in.saturating_add(run.tokens_in as u64);
        self.tokens_out = self.tokens_out.saturating_add(run.tokens_out as u64);
        if let Some(model) = model {
            let key = if self.models.len() < max_models || self.models.contains(model) {
                model
            } else {
                other
            };
            self.models.add(
                key,
                &ModelUsage {
                    runs: 1,
                    tokens_in: run.tokens_in as u64,
                    tokens_out: run.tokens_out as u64,
                    credits: run.credits,
                },
            );
        }
    }
}

impl Bucket for ExecBucket {
    fn merge(&mut self, o: &Self) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.timeout += o.timeout;
        self.cancelled += o.cancelled;
        self.runtime.merge(&o.runtime);
        self.credits += o.credits;
        self.tokens_in = self.tokens_in.saturating_add(o.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(o.tokens_out);
        o.models.for_each(|m, u| self.models.add(m, u));
        self.feedback += o.feedback;
        self.rating_sum += o.rating_sum;
    }

    fn heap_bytes(&self) -> usize {
        self.runtime.heap_bytes() + self.models.heap_bytes()
    }

    fn shrink(&mut self) {
        self.runtime.shrink();
        self.models.shrink();
    }
}

/// What one resource sub-bucket accumulates (over heartbeats).
#[derive(Debug, Clone, Default)]
pub struct ResBucket {
    pub heartbeats: u64,
    pub cpu: Sketch,
    pub mem_n: u64,
    pub mem_sum: f64,
    pub mem_max: f64,
    pub cpu_eff_n: u64,
    pub cpu_eff_sum: f64,
    pub mem_eff_n: u64,
    pub mem_eff_sum: f64,
    pub mem_eff_max: f64,
}

impl ResBucket {
    fn add(&mut self, hb: &Heartbeat) {
        self.heartbeats += 1;
        if let Some(cpu) = hb.cpu_pct {
            self.cpu.add(cpu);
            if let Some(cores) = hb.cpu_limit_cores {
                self.cpu_eff_n += 1;
                self.cpu_eff_sum += cpu / (100.0 * cores);
            }
        }
        if let Some(mem) = hb.mem_mb {
            self.mem_n += 1;
            self.mem_sum += mem;
            self.mem_max = self.mem_max.max(mem);
            if let Some(limit) = hb.mem_limit_mb {
                let eff = mem / limit;
                self.mem_eff_n += 1;
                self.mem_eff_sum += eff;
                self.mem_eff_max = self.mem_eff_max.max(eff);
            }
        }
    }
}

impl Bucket for ResBucket {
    fn merge(&mut self, o: &Self) {
        self.heartbeats += o.heartbeats;
        self.cpu.merge(&o.cpu);
        self.mem_n += o.mem_n;
        self.mem_sum += o.mem_sum;
        self.mem_max = self.mem_max.max(o.mem_max);
        self.cpu_eff_n += o.cpu_eff_n;
        self.cpu_eff_sum += o.cpu_eff_sum;
        self.mem_eff_n += o.mem_eff_n;
        self.mem_eff_sum += o.mem_eff_sum;
        self.mem_eff_max = self.mem_eff_max.max(o.mem_eff_max);
    }

    fn heap_bytes(&self) -> usize {
        self.cpu.heap_bytes()
    }

    fn shrink(&mut self) {
        self.cpu.shrink();
    }
}

/// Timestamps in responses: RFC 3339 UTC with milliseconds.
pub fn ts_json(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds since the epoch as a time (the epoch itself if out of range).
pub fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn ratio(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d)
}

/// Runtime statistics of a window. Quantiles and the mean are written with 6 significant
/// digits (the sketch is accurate to 0.9 %; more digits would be noise on every frame); the
/// maximum is exact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeView {
    #[serde(serialize_with = "significant")]
    pub p50: Option<f64>,
    #[serde(serialize_with = "significant")]
    pub p95: Option<f64>,
    #[serde(serialize_with = "significant")]
    pub p99: Option<f64>,
    #[serde(serialize_with = "significant")]
    pub avg: Option<f64>,
    pub max: Option<f64>,
}

/// `x` with 6 significant digits.
pub fn round_significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(5 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

fn significant<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    v.map(round_significant).serialize(s)
}

/// Credits are written to the millionth (sums of floats would otherwise carry binary noise
/// such as `0.30000000000000004`).
fn micro<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    ((v * 1e6).round() / 1e6).serialize(s)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackView {
    pub count: u64,
    pub avg_rating: Option<f64>,
}

/// The contract's window object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecView {
    pub window: &'static str,
    pub from: String,
    pub to: String,
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timeout: u64,
    pub cancelled: u64,
    pub success_rate: Option<f64>,
    pub error_rate: Option<f64>,
    pub throughput_per_min: f64,
    pub runtime_ms: RuntimeView,
    #[serde(serialize_with = "micro")]
    pub credits: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub active_agents: u64,
    pub models: BTreeMap<Arc<str>, ModelUsage>,
    pub feedback: FeedbackView,
}

impl ExecView {
    fn build(window: Window, b: ExecBucket, from_ms: i64, now: DateTime<Utc>, active: u64) -> Self {
        let decided = (b.succeeded + b.failed + b.timeout) as f64;
        Self {
            window: window.as_str(),
            from: ts_json(ms_to_time(from_ms)),
            to: ts_json(now),
            runs: b.runs(),
            succeeded: b.succeeded,
            failed: b.failed,
            timeout: b.timeout,
            cancelled: b.cancelled,
            success_rate: ratio(b.succeeded as f64, decided),
            error_rate: ratio((b.failed + b.timeout) as f64, decided),
            throughput_per_min: b.runs() as f64 / window.minutes(),
            runtime_ms: RuntimeView {
                p50: b.runtime.quantile(0.50),
                p95: b.runtime.quantile(0.95),
                p99: b.runtime.quantile(0.99),
                avg: b.runtime.mean(),
                max: b.runtime.max(),
            },
            credits: b.credits,
            tokens_in: b.tokens_in,
            tokens_out: b.tokens_out,
            active_agents: active,
            models: b.models.into_iter().collect(),
            feedback: FeedbackView {
                count: b.feedback,
                avg_rating: ratio(b.rating_sum as f64, b.feedback as f64),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestHeartbeat {
    pub ts: String,
    pub cpu_pct: Option<f64>,
    pub mem_mb: Option<f64>,
    pub mem_limit_mb: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
    pub concurrent_runs: Option<i64>,
    pub queue_depth: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuView {
    pub avg: Option<f64>,
    pub max: Option<f64>,
    pub p95: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemView {
    pub avg: Option<f64>,
    pub max: Option<f64>,
}

/// The contract's per-agent resource window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceView {
    pub window: &'static str,
    pub last_seen: Option<String>,
    pub state: &'static str,
    pub heartbeat_age_s: Option<f64>,
    pub latest: Option<LatestHeartbeat>,
    pub heartbeats: u64,
    pub cpu_pct: CpuView,
    pub mem_mb: MemView,
    pub cpu_efficiency: Option<f64>,
    pub mem_efficiency: Option<f64>,
    pub mem_pct_max: Option<f64>,
    pub concurrent_runs: Option<i64>,
    pub queue_depth: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct AgentLive {
    exec: Series<ExecBucket>,
    res: Series<ResBucket>,
    latest: Option<Heartbeat>,
}

impl AgentLive {
    /// What the agent costs the workspace: its map entry, its id and its windows.
    fn bytes(&self, id: &AgentId) -> usize {
        std::mem::size_of::<(AgentId, AgentLive)>()
            + id.as_str().len()
            + self.exec.bytes()
            + self.res.bytes()
    }
}

/// Execution views by (agent, window), each with the sub-bucket it was computed in, valid
/// for one version of the live state: dashboards polling the same window between two
/// applies share one computation (the workspace view walks every agent).
#[derive(Default)]
pub struct ViewCache {
    /// `None` until filled, and after the live state was replaced.
    version: Option<u64>,
    entries: HashMap<(Option<AgentId>, Window), (i64, ExecView)>,
}

/// Views kept at most; past it the cache starts over.
const MAX_CACHED_VIEWS: usize = 1_024;

impl ViewCache {
    pub fn execution(
        &mut self,
        live: &LiveState,
        agent: Option<&AgentId>,
        window: Window,
        now: DateTime<Utc>,
    ) -> ExecView {
        if self.version != Some(live.version()) || self.entries.len() >= MAX_CACHED_VIEWS {
            self.entries.clear();
            self.version = Some(live.version());
        }
        let slot = now.timestamp_millis().div_euclid(window.bucket_ms());
        let key = (agent.cloned(), window);
        if let Some((s, view)) = self.entries.get(&key) {
            if *s == slot {
                let mut view = view.clone();
                view.to = ts_json(now);
                return view;
            }
        }
        let view = live.execution(agent, window, now);
        self.entries.insert(key, (slot, view.clone()));
        view
    }

    /// Forgets everything (the live state was replaced by a rebuild).
    pub fn reset(&mut self) {
        self.version = None;
        self.entries.clear();
    }
}

/// Everything the hub knows live about one workspace.
#[derive(Debug, Clone)]
pub struct LiveState {
    rules: LiveRules,
    workspace: Series<ExecBucket>,
    agents: HashMap<AgentId, AgentLive>,
    models: HashSet<Arc<str>>,
    other_model: Arc<str>,
    /// Events counted under `_other` because of the agent limit.
    pub overflow_agent_events: u64,
    /// Runs counted under `_other` because of the model limit.
    pub overflow_model_runs: u64,
    /// Events counted under `_other` because the agents' windows held `max_agent_bytes`.
    pub overflow_memory_events: u64,
    /// Σ [`AgentLive::bytes`] over every agent but `_other`: what `max_agent_bytes` limits.
    agent_bytes: usize,
    /// Moves on every change (apply, expire): views computed at the same version and in
    /// the same sub-bucket are equal but for their `to`.
    version: u64,
}

impl LiveState {
    /// See the field: a change counter for caching views.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn new(rules: LiveRules) -> Self {
        Self {
            rules,
            workspace: Series::default(),
            agents: HashMap::new(),
            models: HashSet::new(),
            other_model: Arc::from(OTHER),
            overflow_agent_events: 0,
            overflow_model_runs: 0,
            overflow_memory_events: 0,
            agent_bytes: 0,
            version: 0,
        }
    }

    /// Applies one event that the store reported as newly inserted.
    pub fn apply(&mut self, event: &Event, now: DateTime<Utc>) {
        self.version += 1;
        let now_ms = now.timestamp_millis();
        let ts_ms = event.time().timestamp_millis();
        let agent = self.agent_key(&event.agent_id);
        match &event.kind {
            EventKind::Run(run) => {
                let model = run.model.as_deref().map(|m| self.model_key(m));
                let (per_agent, other) =
                    (self.rules.max_models_per_agent, self.other_model.clone());
                self.workspace.record(ts_ms, now_ms, |b| {
                    b.add_run(run, model.as_ref(), usize::MAX, &other)
                });
                self.with_agent(agent, |a| {
                    a.exec.record(ts_ms, now_ms, |b| {
                        b.add_run(run, model.as_ref(), per_agent, &other)
                    });
                });
            }
            EventKind::Heartbeat(hb) => self.with_agent(agent, |a| {
                a.res.record(ts_ms, now_ms, |b| b.add(hb));
                if a.latest.as_ref().is_none_or(|l| l.ts <= hb.ts) {
                    a.latest = Some(hb.clone());
                }
            }),
            EventKind::Feedback(fb) => {
                let add = |b: &mut ExecBucket| {
                    b.feedback += 1;
                    b.rating_sum += fb.rating as u64;
                };
                self.workspace.record(ts_ms, now_ms, add);
                self.with_agent(agent, |a| {
                    a.exec.record(ts_ms, now_ms, add);
                });
            }
        }
    }

    /// The agent an event of `id` counts under: itself, or `_other` past the agent limit or
    /// once the agents' windows hold `max_agent_bytes`.
    fn agent_key(&mut self, id: &AgentId) -> AgentId {
        if !self.agents.contains_key(id) && self.agents.len() >= self.rules.max_agents {
            self.overflow_agent_events += 1;
            return AgentId::other();
        }
        if self.agent_bytes >= self.rules.max_agent_bytes && id.as_str() != OTHER {
            self.overflow_memory_events += 1;
            return AgentId::other();
        }
        id.clone()
    }

    /// Runs `f` on `id`'s live state (made if new) and keeps [`Self::agent_bytes`] true.
    /// `_other` is not counted: one agent's windows are bounded by construction (sketches
    /// of at most `MAX_BINS` bins, at most `max_models_per_agent` models a sub-bucket).
    fn with_agent(&mut self, id: AgentId, f: impl FnOnce(&mut AgentLive)) {
        let before = self.agents.get(&id).map_or(0, |a| a.bytes(&id));
        let live = self.agents.entry(id.clone()).or_default();
        f(live);
        if id.as_str() != OTHER {
            self.agent_bytes = self.agent_bytes + live.bytes(&id) - before;
        }
    }

    /// Bytes all agents' windows hold together (`_other` aside): what
    /// [`LiveRules::max_agent_bytes`] limits.
    pub fn agent_bytes(&self) -> usize {
        self.agent_bytes
    }

    fn model_key(&mut self, model: &str) -> Arc<str> {
        if let Some(m) = self.models.get(model) {
            return m.clone();
        }
        if self.models.len() >= self.rules.max_models {
            self.overflow_model_runs += 1;
            return self.other_model.clone();
        }
        let m: Arc<str> = Arc::from(model);
        self.models.insert(m.clone());
        m
    }

    /// The execution window of the workspace, or of one agent (zeros for an unknown agent).
    pub fn execution(
        &self,
        agent: Option<&AgentId>,
        window: Window,
        now: DateTime<Utc>,
    ) -> ExecView {
        let now_ms = now.timestamp_millis();
        let (bucket, from) = match agent {
            None => self.workspace.total(window, now_ms),
            Some(a) => match self.agents.get(a) {
                Some(live) => live.exec.total(window, now_ms),
                None => Series::<ExecBucket>::default().total(window, now_ms),
            },
        };
        let active = match agent {
            Some(_) => u64::from(bucket.runs() > 0),
            None => self
                .agents
                .values()
                .filter(|a| a.exec.total(window, now_ms).0.runs() > 0)
                .count() as u64,
        };
        ExecView::build(window, bucket, from, now, active)
    }

    /// Resource windows of every agent that has sent a heartbeat, or of one agent.
    pub fn resources(
        &self,
        agent: Option<&AgentId>,
        window: Window,
        now: DateTime<Utc>,
    ) -> BTreeMap<AgentId, ResourceView> {
        let view = |live: &AgentLive| -> Option<ResourceView> {
            let latest = live.latest.as_ref()?;
            let (b, _) = live.res.total(window, now.timestamp_millis());
            let age = (now - latest.ts).num_milliseconds().max(0) as f64 / 1000.0;
            Some(ResourceView {
                window: window.as_str(),
                last_seen: Some(ts_json(latest.ts)),
                state: if self.is_live(latest.ts, now) {
                    "live"
                } else {
                    "stale"
                },
                heartbeat_age_s: Some(age),
                latest: Some(LatestHeartbeat {
                    ts: ts_json(latest.ts),
                    cpu_pct: latest.cpu_pct,
                    mem_mb: latest.mem_mb,
                    mem_limit_mb: latest.mem_limit_mb,
                    cpu_limit_cores: latest.cpu_limit_cores,
                    concurrent_runs: latest.concurrent_runs,
                    queue_depth: latest.queue_depth,
                }),
                heartbeats: b.heartbeats,
                cpu_pct: CpuView {
                    avg: b.cpu.mean(),
                    max: b.cpu.max(),
                    p95: b.cpu.quantile(0.95),
                },
                mem_mb: MemView {
                    avg: ratio(b.mem_sum, b.mem_n as f64),
                    max: (b.mem_n > 0).then_some(b.mem_max),
                },
                cpu_efficiency: ratio(b.cpu_eff_sum, b.cpu_eff_n as f64),
                mem_efficiency: ratio(b.mem_eff_sum, b.mem_eff_n as f64),
                mem_pct_max: (b.mem_eff_n > 0).then_some(100.0 * b.mem_eff_max),
                concurrent_runs: latest.concurrent_runs,
                queue_depth: latest.queue_depth,
            })
        };
        match agent {
            Some(a) => self
                .agents
                .get(a)
                .and_then(view)
                .map(|v| (a.clone(), v))
                .into_iter()
                .collect(),
            None => self
                .agents
                .iter()
                .filter_map(|(id, live)| Some((id.clone(), view(live)?)))
                .collect(),
        }
    }

    /// The value of `metric` over `window`, for the workspace or one agent, with the number
    /// of samples behind it (runs decided, runs, or heartbeats) — what alert rules read.
    pub fn sample(
        &self,
        metric: Metric,
        agent: Option<&AgentId>,
        window: Window,
        now: DateTime<Utc>,
    ) -> Sample {
        let now_ms = now.timestamp_millis();
        match metric.source() {
            Source::Runs => {
                let (b, _) = match agent {
                    None => self.workspace.total(window, now_ms),
                    Some(a) => match self.agents.get(a) {
                        Some(live) => live.exec.total(window, now_ms),
                        None => (ExecBucket::default(), 0),
                    },
                };
                let decided = b.succeeded + b.failed + b.timeout;
                let minutes = window.minutes();
                let (value, samples) = match metric {
                    Metric::ErrorRate => (
                        ratio((b.failed + b.timeout) as f64, decided as f64),
                        decided,
                    ),
                    Metric::SuccessRate => (ratio(b.succeeded as f64, decided as f64), decided),
                    Metric::RuntimeP50 => (b.runtime.quantile(0.50), b.runs()),
                    Metric::RuntimeP95 => (b.runtime.quantile(0.95), b.runs()),
                    Metric::RuntimeP99 => (b.runtime.quantile(0.99), b.runs()),
                    Metric::ThroughputPerMin => (Some(b.runs() as f64 / minutes), b.runs()),
                    Metric::CreditsPerHour => (Some(b.credits / minutes * 60.0), b.runs()),
                    Metric::TokensPerMin => (
                        Some(b.tokens_in.saturating_add(b.tokens_out) as f64 / minutes),
                        b.runs(),
                    ),
                    _ => (None, 0),
                };
                Sample { value, samples }
            }
            Source::Heartbeats => {
                let mut b = ResBucket::default();
                let mut age: Option<f64> = None;
                let mut add = |live: &AgentLive| {
                    b.merge(&live.res.total(window, now_ms).0);
                    if let Some(l) = &live.latest {
                        let a = (now - l.ts).num_milliseconds().max(0) as f64 / 1000.0;
                        age = Some(age.map_or(a, |x: f64| x.max(a)));
                    }
                };
                match agent {
                    Some(a) => self.agents.get(a).into_iter().for_each(&mut add),
                    None => self.agents.values().for_each(&mut add),
                }
                let value = match metric {
                    Metric::CpuPctAvg => b.cpu.mean(),
                    Metric::CpuPctMax => b.cpu.max(),
                    Metric::MemPctMax => (b.mem_eff_n > 0).then_some(100.0 * b.mem_eff_max),
                    Metric::HeartbeatAgeS => age,
                    _ => None,
                };
                let samples = match metric {
                    Metric::HeartbeatAgeS => u64::from(age.is_some()),
                    Metric::MemPctMax => b.mem_eff_n,
                    _ => b.cpu.count(),
                };
                Sample { value, samples }
            }
            // Scores come from the anomaly tracker, not the windows.
            Source::Anomalies => Sample {
                value: None,
                samples: 0,
            },
        }
    }

    /// Every agent the state holds.
    pub fn agent_ids(&self) -> impl Iterator<Item = &AgentId> {
        self.agents.keys()
    }

    /// An agent whose last heartbeat was at `last` is live at `now` (else `stale`).
    fn is_live(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now - last <= self.rules.stale_after
    }

    /// Every agent that has sent a heartbeat, and whether it is live at `now`: what the
    /// resource views' `state` says, without building the views.
    pub fn liveness(&self, now: DateTime<Utc>) -> impl Iterator<Item = (&AgentId, bool)> {
        self.agents
            .iter()
            .filter_map(move |(id, a)| Some((id, self.is_live(a.latest.as_ref()?.ts, now))))
    }

    /// Whether `agent` is live at `now`; `None` when it never sent a heartbeat.
    pub fn agent_liveness(&self, agent: &AgentId, now: DateTime<Utc>) -> Option<bool> {
        let latest = self.agents.get(agent)?.latest.as_ref()?;
        Some(self.is_live(latest.ts, now))
    }

    /// Agents whose last heartbeat is within `stale_after` of `now`.
    pub fn live_agents(&self, now: DateTime<Utc>) -> usize {
        self.liveness(now).filter(|(_, live)| *live).count()
    }

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// Drops expired sub-buckets, and agents with nothing left in any window and no
    /// heartbeat within `stale_after`.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        let now_ms = now.timestamp_millis();
        self.workspace.expire(now_ms);
        // Models no run of the last 24 h names leave the set (and free their place).
        let mut models: HashSet<Arc<str>> = HashSet::new();
        for bucket in self.workspace.buckets(Window::H24) {
            bucket.models.for_each(|m, _| {
                if **m != *OTHER {
                    models.insert(m.clone());
                }
            });
        }
        self.models = models;
        let stale_after = self.rules.stale_after;
        let mut bytes = 0;
        self.agents.retain(|id, a| {
            a.exec.expire(now_ms);
            a.res.expire(now_ms);
            let recent = a.latest.as_ref().is_some_and(|l| now - l.ts <= stale_after);
            let keep = recent || !a.exec.is_idle(now_ms) || !a.res.is_idle(now_ms);
            if keep && id.as_str() != OTHER {
                bytes += a.bytes(id);
            }
            keep
        });
        self.agent_bytes = bytes;
    }
}

#[cfg(test)]
mod tests;
