//! Live detection for one workspace: events are summed into event-time buckets per series
//! (the workspace, and each agent), and a bucket is scored once the hub clock has passed its
//! end plus the grace period. Empty buckets are scored too, so an agent that falls silent
//! is seen. Pure: the clock is an argument.
//!
//! A series' detectors are created at its first run (the four run metrics) or first
//! heartbeat (`cpu_pct_avg`), so an agent that only sends heartbeats is not judged on its
//! throughput. An event for a bucket that has already been scored is late: it is stored and
//! counted in the windows, not in the detector ([`Tracker::late_events`]).
//!
//! Memory per series (a workspace or an agent): five [`Detector`]s of
//! [`super::detector::STATE_BYTES`] bytes, the latest score per metric, and the buckets still
//! open (at most `(grace + max_future) / bucket + 1`, usually one or two, each a few words and
//! a runtime sketch). Measured with `cargo run --release -p shadower-actors --example
//! anomaly_memory -- --agents 10000`: 10 000 agents (50 000 detectors) add 49 MiB of RSS,
//! about 1 KiB per detector. Agents past `max_agents` are followed only in the workspace
//! series, and an agent's series is dropped after [`FORGET_AFTER_MS`] without events (its
//! detectors would restart their warm-up after such a gap anyway).

use std::collections::HashMap;

use super::{Config, Detector, Input, Metric, Scorer, Verdict};
use crate::domain::event::{Event, EventKind, RunStatus};
use crate::domain::ids::AgentId;
use crate::domain::sketch::Sketch;

/// An agent series without events for this long is forgotten.
pub const FORGET_AFTER_MS: i64 = 7 * 86_400_000;

/// Most buckets scored one by one when a series catches up after a gap; older ones are
/// folded into the detector as empty without a verdict.
const MAX_CATCH_UP: i64 = 10_080;

/// Settings of a [`Tracker`].
#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    pub detector: Config,
    /// A bucket is scored when the clock passes its end plus this.
    pub grace_ms: i64,
    /// Agents followed individually; later ones count in the workspace series only.
    pub max_agents: usize,
}

/// What one bucket of one series holds, for every metric: the same shape whether it was
/// summed live or aggregated in SQL from stored events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BucketInputs {
    /// Runs of every status (throughput).
    pub runs: u64,
    /// Succeeded + failed + timeout.
    pub decided: u64,
    /// Failed + timeout.
    pub failed: u64,
    /// Nearest-rank p95 and p50 of runtime_ms; `None` without runs.
    pub runtime_p95: Option<f64>,
    pub runtime_p50: Option<f64>,
    pub credits: f64,
    /// Heartbeats with a `cpu_pct`, and their mean.
    pub cpu_samples: u64,
    pub cpu_avg: Option<f64>,
}

impl BucketInputs {
    /// The bucket's value of `metric` in its unit (per minute for the `*_per_min` metrics,
    /// a fraction for `error_rate`); `None` where it has none (no decided run, no run, no
    /// heartbeat).
    pub fn value(&self, metric: Metric, bucket_ms: i64) -> Option<f64> {
        let minutes = bucket_ms as f64 / 60_000.0;
        match metric {
            Metric::ErrorRate => {
                (self.decided > 0).then(|| self.failed as f64 / self.decided as f64)
            }
            Metric::ThroughputPerMin => Some(self.runs as f64 / minutes),
            Metric::CreditsPerMin => Some(self.credits / minutes),
            Metric::RuntimeP95 => self.runtime_p95,
            Metric::CpuPctAvg => self.cpu_avg,
        }
    }

    /// The detector input of `metric` for this bucket.
    pub fn input(&self, metric: Metric) -> Input {
        match metric {
            Metric::ErrorRate => Input::Failures {
                failed: self.failed,
                decided: self.decided,
            },
            Metric::ThroughputPerMin => Input::Count(self.runs),
            Metric::CreditsPerMin => Input::Sum {
                sum: self.credits,
                runs: self.runs,
            },
            Metric::RuntimeP95 => Input::Runtime {
                p95: self.runtime_p95,
                p50: self.runtime_p50,
                runs: self.runs,
            },
            Metric::CpuPctAvg => Input::Value {
                value: self.cpu_avg,
                samples: self.cpu_samples,
            },
        }
    }
}

/// A bucket being summed.
#[derive(Debug, Clone, Default)]
struct Acc {
    runs: u64,
    decided: u64,
    failed: u64,
    runtime: Sketch,
    credits: f64,
    cpu_sum: f64,
    cpu_n: u64,
}

impl Acc {
    fn add(&mut self, kind: &EventKind) {
        match kind {
            EventKind::Run(run) => {
                self.runs += 1;
                match run.status {
                    RunStatus::Succeeded => self.decided += 1,
                    RunStatus::Failed | RunStatus::Timeout => {
                        self.decided += 1;
                        self.failed += 1;
                    }
                    RunStatus::Cancelled => {}
                }
                self.runtime.add(run.runtime_ms);
                self.credits += run.credits;
            }
            EventKind::Heartbeat(hb) => {
                if let Some(cpu) = hb.cpu_pct {
                    self.cpu_sum += cpu;
                    self.cpu_n += 1;
                }
            }
            EventKind::Feedback(_) => {}
        }
    }

    fn finish(&self) -> BucketInputs {
        BucketInputs {
            runs: self.runs,
            decided: self.decided,
            failed: self.failed,
            runtime_p95: self.runtime.quantile(0.95),
            runtime_p50: self.runtime.quantile(0.50),
            credits: self.credits,
            cpu_samples: self.cpu_n,
            cpu_avg: (self.cpu_n > 0).then(|| self.cpu_sum / self.cpu_n as f64),
        }
    }
}

/// The buckets of a series not yet scored, oldest first: usually one or two, so a vector
/// (a B-tree's first node alone would be ten times the size).
#[derive(Debug, Clone, Default)]
struct Open(Vec<(i64, Acc)>);

impl Open {
    /// The bucket starting at `start`, created empty if missing.
    fn bucket(&mut self, start: i64) -> &mut Acc {
        let i = match self.0.binary_search_by_key(&start, |(s, _)| *s) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (start, Acc::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    fn take(&mut self, start: i64) -> Option<Acc> {
        let i = self.0.binary_search_by_key(&start, |(s, _)| *s).ok()?;
        Some(self.0.remove(i).1)
    }

    #[cfg(test)]
    fn get(&self, start: i64) -> Option<&Acc> {
        let i = self.0.binary_search_by_key(&start, |(s, _)| *s).ok()?;
        Some(&self.0[i].1)
    }
}

/// The four metrics read from runs.
const RUN_METRICS: [Metric; 4] = [
    Metric::ErrorRate,
    Metric::RuntimeP95,
    Metric::ThroughputPerMin,
    Metric::CreditsPerMin,
];

fn slot(metric: Metric) -> usize {
    Metric::ALL
        .iter()
        .position(|m| *m == metric)
        .expect("every metric is in ALL")
}

/// One scored bucket of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub agent: Option<AgentId>,
    pub metric: Metric,
    pub bucket_start_ms: i64,
    pub verdict: Verdict,
}

/// The detectors and open buckets of one series.
#[derive(Debug, Clone)]
struct SeriesState {
    /// Start of the first bucket not yet scored.
    next: i64,
    open: Open,
    detectors: [Option<Detector>; 5],
    /// The latest score per metric (for `anomaly_score` rules).
    latest: [Option<f64>; 5],
    last_event_ms: i64,
}

impl SeriesState {
    fn new(next: i64) -> Self {
        Self {
            next,
            open: Open::default(),
            detectors: Default::default(),
            latest: Default::default(),
            last_event_ms: next,
        }
    }

    /// Adds a live event to its open bucket, creating the detectors it feeds if this is the
    /// first such event; `false` when the bucket was already scored (a late event).
    fn add(&mut self, start: i64, ts: i64, kind: &EventKind, config: &Config) -> bool {
        if start < self.next {
            return false;
        }
        match kind {
            EventKind::Run(_) => self.ensure(&RUN_METRICS, config),
            EventKind::Heartbeat(hb) if hb.cpu_pct.is_some() => {
                self.ensure(&[Metric::CpuPctAvg], config)
            }
            _ => {}
        }
        self.open.bucket(start).add(kind);
        self.last_event_ms = self.last_event_ms.max(ts);
        true
    }

    /// Creates the detectors of `metrics` this series does not have yet.
    fn ensure(&mut self, metrics: &[Metric], config: &Config) {
        for &m in metrics {
            let d = &mut self.detectors[slot(m)];
            if d.is_none() {
                *d = Some(Detector::new(m, config).expect("config validated at start"));
            }
        }
    }

    /// Scores one closed bucket with every detector this series has.
    fn score(
        &mut self,
        agent: Option<&AgentId>,
        start: i64,
        inputs: &BucketInputs,
        out: &mut Vec<Scored>,
    ) {
        for (i, d) in self.detectors.iter_mut().enumerate() {
            let Some(d) = d else { continue };
            let metric = Metric::ALL[i];
            match d.observe(start, inputs.input(metric)) {
                Ok(Some(verdict)) => {
                    self.latest[i] = Some(verdict.score);
                    out.push(Scored {
                        agent: agent.cloned(),
                        metric,
                        bucket_start_ms: start,
                        verdict,
                    });
                }
                Ok(None) => self.latest[i] = None,
                // Buckets are scored in order and inputs match their metric by construction.
                Err(e) => debug_assert!(false, "{e}"),
            }
        }
    }

    /// Scores every bucket that ends (plus grace) by `now_ms`, empty ones included.
    fn close(
        &mut self,
        agent: Option<&AgentId>,
        now_ms: i64,
        bucket: i64,
        grace: i64,
        out: &mut Vec<Scored>,
    ) {
        let Some(last) = closable(now_ms, bucket, grace) else {
            return;
        };
        if self.next > last {
            return;
        }
        // After a long gap, fold the oldest empty buckets in without verdicts.
        if (last - self.next) / bucket > MAX_CATCH_UP {
            let skip_to = last - MAX_CATCH_UP * bucket;
            self.open.0.retain(|(s, _)| *s >= skip_to);
            self.next = skip_to;
        }
        while self.next <= last {
            let start = self.next;
            let inputs = self
                .open
                .take(start)
                .map(|a| a.finish())
                .unwrap_or_default();
            self.score(agent, start, &inputs, out);
            self.next += bucket;
        }
    }
}

/// The start of the last bucket whose end plus grace is at or before `now_ms`.
fn closable(now_ms: i64, bucket: i64, grace: i64) -> Option<i64> {
    let end = now_ms.checked_sub(grace)?;
    Some(end.div_euclid(bucket) * bucket - bucket)
}

/// Live anomaly detection for one workspace.
#[derive(Debug, Clone)]
pub struct Tracker {
    config: TrackerConfig,
    workspace: Option<SeriesState>,
    agents: HashMap<AgentId, SeriesState>,
    /// Events that arrived after their bucket had been scored.
    pub late_events: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            workspace: None,
            agents: HashMap::new(),
            late_events: 0,
        }
    }

    pub fn bucket_ms(&self) -> i64 {
        self.config.detector.bucket_ms
    }

    fn align(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.bucket_ms()) * self.bucket_ms()
    }

    /// Adds a live event to its bucket (workspace and agent series).
    pub fn apply(&mut self, event: &Event) {
        if matches!(event.kind, EventKind::Feedback(_)) {
            return;
        }
        let ts = event.time().timestamp_millis();
        let start = self.align(ts);
        let config = self.config.detector;
        let mut late = !self
            .workspace
            .get_or_insert_with(|| SeriesState::new(start))
            .add(start, ts, &event.kind, &config);
        if let Some(agent) = self.agent_series(&event.agent_id, start) {
            late |= !agent.add(start, ts, &event.kind, &config);
        }
        self.late_events += u64::from(late);
    }

    /// The agent's series, created (starting at `start`) while under the agent cap.
    fn agent_series(&mut self, agent: &AgentId, start: i64) -> Option<&mut SeriesState> {
        if !self.agents.contains_key(agent) {
            if self.agents.len() >= self.config.max_agents {
                return None;
            }
            self.agents.insert(agent.clone(), SeriesState::new(start));
        }
        self.agents.get_mut(agent)
    }

    /// Folds a bucket summed elsewhere (stored history) into a series. Buckets must come in
    /// increasing order per series; the ones skipped are folded in as empty.
    pub fn replay(&mut self, agent: Option<&AgentId>, start: i64, inputs: &BucketInputs) {
        let config = self.config.detector;
        let bucket = config.bucket_ms;
        let series = match agent {
            None => self
                .workspace
                .get_or_insert_with(|| SeriesState::new(start)),
            Some(a) => match self.agent_series(a, start) {
                Some(s) => s,
                None => return,
            },
        };
        if start < series.next {
            return;
        }
        if inputs.runs > 0 {
            series.ensure(&RUN_METRICS, &config);
        }
        if inputs.cpu_samples > 0 {
            series.ensure(&[Metric::CpuPctAvg], &config);
        }
        series.last_event_ms = series.last_event_ms.max(start);
        // Replayed verdicts are history, not news: they are not returned.
        let mut ignored = Vec::new();
        series.score(agent, start, inputs, &mut ignored);
        series.next = start + bucket;
    }

    /// A tracker rebuilt at start: `history` (buckets before `history_to`, in increasing
    /// order per series) is replayed, then the `events` from `history_to` on (the history
    /// covers the earlier ones), in event-time order; buckets are closed up to `now_ms`.
    /// Nothing is announced: the verdicts of replayed buckets are history.
    pub fn rebuild<'a>(
        config: TrackerConfig,
        history: impl IntoIterator<Item = (Option<AgentId>, i64, &'a BucketInputs)>,
        events: &[Event],
        history_to: i64,
        now_ms: i64,
    ) -> Self {
        let mut tracker = Self::new(config);
        for (agent, start, inputs) in history {
            tracker.replay(agent.as_ref(), start, inputs);
        }
        let mut recent: Vec<_> = events
            .iter()
            .map(|e| (e.time().timestamp_millis(), e))
            .filter(|(t, _)| *t >= history_to)
            .collect();
        recent.sort_by_key(|(t, _)| *t);
        for (t, e) in recent {
            tracker.close(t);
            tracker.apply(e);
        }
        tracker.close(now_ms);
        tracker.late_events = 0;
        tracker
    }

    /// Scores every bucket closed by `now_ms`, in order per series. Forgets agent series
    /// silent for [`FORGET_AFTER_MS`].
    pub fn close(&mut self, now_ms: i64) -> Vec<Scored> {
        let (bucket, grace) = (self.bucket_ms(), self.config.grace_ms);
        let mut out = Vec::new();
        if let Some(ws) = &mut self.workspace {
            ws.close(None, now_ms, bucket, grace, &mut out);
        }
        self.agents
            .retain(|_, s| now_ms - s.last_event_ms < FORGET_AFTER_MS);
        for (agent, series) in &mut self.agents {
            series.close(Some(agent), now_ms, bucket, grace, &mut out);
        }
        out
    }

    /// The latest score of a series' metric (`None` while warming up or never fed).
    pub fn score(&self, agent: Option<&AgentId>, metric: Metric) -> Option<f64> {
        let series = match agent {
            None => self.workspace.as_ref()?,
            Some(a) => self.agents.get(a)?,
        };
        series.latest[slot(metric)]
    }

    /// Series followed (the workspace counts as one) and detectors running.
    pub fn counts(&self) -> (usize, usize) {
        let series = self.agents.len() + usize::from(self.workspace.is_some());
        let detectors = self
            .workspace
            .iter()
            .chain(self.agents.values())
            .map(|s| s.detectors.iter().flatten().count())
            .sum();
        (series, detectors)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::event::{Heartbeat, Run};
    use crate::domain::ids::EventId;

    const MIN: i64 = 60_000;
    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;

    fn config(max_agents: usize) -> TrackerConfig {
        TrackerConfig {
            detector: Config::default(),
            grace_ms: 10_000,
            max_agents,
        }
    }

    fn run(agent: &str, status: RunStatus, at_ms: i64) -> Event {
        Event {
            event_id: EventId::parse("e").unwrap(),
            agent_id: AgentId::parse(agent).unwrap(),
            kind: EventKind::Run(Run {
                run_id: None,
                user_id: None,
                status,
                started_at: None,
                completed_at: Utc.timestamp_millis_opt(at_ms).unwrap(),
                runtime_ms: 100.0,
                credits: 0.5,
                tokens_in: 1,
                tokens_out: 1,
                model: None,
                error: None,
            }),
        }
    }

    fn heartbeat(agent: &str, at_ms: i64, cpu: f64) -> Event {
        Event {
            event_id: EventId::parse("h").unwrap(),
            agent_id: AgentId::parse(agent).unwrap(),
            kind: EventKind::Heartbeat(Heartbeat {
                ts: Utc.timestamp_millis_opt(at_ms).unwrap(),
                cpu_pct: Some(cpu),
                mem_mb: None,
                mem_limit_mb: None,
                cpu_limit_cores: None,
                concurrent_runs: None,
                queue_depth: None,
            }),
        }
    }

    /// Two hours of one-minute buckets of agent `a`: 20 runs each, a failure every 50 runs.
    fn warm(t: &mut Tracker) -> i64 {
        let mut n = 0u64;
        for b in 0..120 {
            let start = T0 + b * MIN;
            for i in 0..20 {
                n += 1;
                let status = if n.is_multiple_of(50) {
                    RunStatus::Failed
                } else {
                    RunStatus::Succeeded
                };
                t.apply(&run("a", status, start + i * 1_000));
            }
            t.close(start + MIN + 10_000);
        }
        T0 + 120 * MIN
    }

    #[test]
    fn buckets_close_after_their_end_plus_grace_in_order_empty_ones_included() {
        let mut t = Tracker::new(config(10));
        t.apply(&run("a", RunStatus::Succeeded, T0 + 5_000));
        assert!(t.close(T0 + MIN + 9_999).is_empty(), "grace not over");
        // Warming up: buckets are scored (the detectors fold them) without verdicts, so
        // look at the state instead: the next bucket to score moved by three.
        t.close(T0 + 3 * MIN + 10_000);
        assert_eq!(t.workspace.as_ref().unwrap().next, T0 + 3 * MIN);
        assert_eq!(t.agents[&AgentId::parse("a").unwrap()].next, T0 + 3 * MIN);
        assert!(t.workspace.as_ref().unwrap().open.0.is_empty());
    }

    #[test]
    fn an_error_burst_is_flagged_for_the_agent_and_the_workspace() {
        let mut t = Tracker::new(config(10));
        let now = warm(&mut t);
        for i in 0..30 {
            t.apply(&run("a", RunStatus::Failed, now + i * 1_000));
        }
        let scored = t.close(now + MIN + 10_000);
        let flagged: Vec<_> = scored
            .iter()
            .filter(|s| s.verdict.is_anomaly && s.metric == Metric::ErrorRate)
            .collect();
        assert_eq!(flagged.len(), 2, "{scored:?}");
        assert!(flagged.iter().any(|s| s.agent.is_none()));
        assert!(flagged
            .iter()
            .any(|s| s.agent.as_ref().map(AgentId::as_str) == Some("a")));
        assert!(flagged.iter().all(|s| s.bucket_start_ms == now));
        let score = t.score(None, Metric::ErrorRate).unwrap();
        assert!(score >= 0.99, "{score}");
    }

    #[test]
    fn clean_buckets_are_scored_and_not_flagged() {
        let mut t = Tracker::new(config(10));
        let now = warm(&mut t);
        for i in 0..20 {
            t.apply(&run("a", RunStatus::Succeeded, now + i * 1_000));
        }
        let scored = t.close(now + MIN + 10_000);
        let errors: Vec<_> = scored
            .iter()
            .filter(|s| s.metric == Metric::ErrorRate)
            .collect();
        assert_eq!(errors.len(), 2, "workspace and agent verdicts: {scored:?}");
        assert!(errors.iter().all(|s| !s.verdict.is_anomaly));
        assert!(t.score(None, Metric::ErrorRate).unwrap() < 0.99);
    }

    #[test]
    fn late_events_are_counted_not_scored() {
        let mut t = Tracker::new(config(10));
        t.apply(&run("a", RunStatus::Succeeded, T0));
        t.close(T0 + 2 * MIN + 10_000);
        t.apply(&run("a", RunStatus::Failed, T0 + 1_000));
        assert_eq!(t.late_events, 1);
        assert!(t.workspace.as_ref().unwrap().open.0.is_empty());
    }

    #[test]
    fn detectors_start_with_the_events_that_feed_them() {
        let mut t = Tracker::new(config(10));
        t.apply(&heartbeat("h", T0, 30.0));
        assert_eq!(
            t.counts(),
            (2, 2),
            "cpu only, for the workspace and the agent"
        );
        t.apply(&run("r", RunStatus::Succeeded, T0));
        assert_eq!(t.counts(), (3, 2 + 4 + 4));
    }

    #[test]
    fn agents_past_the_cap_count_in_the_workspace_only() {
        let mut t = Tracker::new(config(2));
        for a in ["a", "b", "c"] {
            t.apply(&run(a, RunStatus::Succeeded, T0));
        }
        assert_eq!(t.counts().0, 3, "the workspace and two agents");
        assert_eq!(t.workspace.as_ref().unwrap().open.get(T0).unwrap().runs, 3);
    }

    #[test]
    fn replayed_history_gives_the_same_state_as_live_events() {
        let mut live = Tracker::new(config(10));
        let now = warm(&mut live);
        let mut replayed = Tracker::new(config(10));
        let mut n = 0u64;
        for b in 0..120 {
            let mut inputs = BucketInputs {
                runs: 20,
                decided: 20,
                runtime_p95: Some(100.0),
                runtime_p50: Some(100.0),
                credits: 10.0,
                ..Default::default()
            };
            for _ in 0..20 {
                n += 1;
                inputs.failed += u64::from(n.is_multiple_of(50));
            }
            let start = T0 + b * MIN;
            replayed.replay(None, start, &inputs);
            replayed.replay(Some(&AgentId::parse("a").unwrap()), start, &inputs);
        }
        for t in [&mut live, &mut replayed] {
            for i in 0..30 {
                t.apply(&run("a", RunStatus::Failed, now + i * 1_000));
            }
        }
        let a = live.close(now + MIN + 10_000);
        let b = replayed.close(now + MIN + 10_000);
        let key = |v: &Vec<Scored>| {
            let mut v: Vec<_> = v
                .iter()
                .map(|s| {
                    (
                        s.agent.clone(),
                        s.metric.as_str(),
                        s.verdict.score.to_bits(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert!(!a.is_empty());
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn a_rebuild_counts_each_event_once_across_the_history_boundary() {
        // History covers [T0, T0 + 3 min); the recent events overlap it by a minute.
        let inputs = BucketInputs {
            runs: 5,
            decided: 5,
            runtime_p95: Some(100.0),
            runtime_p50: Some(100.0),
            credits: 2.5,
            ..Default::default()
        };
        let history: Vec<_> = (0..3).map(|b| (None, T0 + b * MIN, &inputs)).collect();
        let events: Vec<Event> = (2..5)
            .flat_map(|b| (0..7).map(move |i| run("a", RunStatus::Succeeded, T0 + b * MIN + i)))
            .collect();
        let now = T0 + 4 * MIN + 10_000;
        let t = Tracker::rebuild(config(10), history, &events, T0 + 3 * MIN, now);
        let ws = t.workspace.as_ref().unwrap();
        // Minute 2 came from the history only; minute 3 was scored from the events; minute 4
        // is still open with its 7 runs.
        assert_eq!(ws.next, T0 + 4 * MIN);
        assert_eq!(ws.open.0.len(), 1);
        assert_eq!(ws.open.get(T0 + 4 * MIN).unwrap().runs, 7);
        assert_eq!(t.late_events, 0);
        let agent = &t.agents[&AgentId::parse("a").unwrap()];
        assert_eq!(
            agent.next,
            T0 + 4 * MIN,
            "the agent series starts at minute 3"
        );
    }

    #[test]
    fn silent_agents_are_forgotten_after_a_week() {
        let mut t = Tracker::new(config(10));
        t.apply(&run("a", RunStatus::Succeeded, T0));
        t.close(T0 + FORGET_AFTER_MS + MIN);
        assert_eq!(t.counts().0, 1, "only the workspace series is left");
    }

    #[test]
    fn bucket_values_are_in_the_metric_unit() {
        let b = BucketInputs {
            runs: 10,
            decided: 8,
            failed: 2,
            runtime_p95: Some(250.0),
            runtime_p50: Some(120.0),
            credits: 5.0,
            cpu_samples: 0,
            cpu_avg: None,
        };
        assert_eq!(b.value(Metric::ErrorRate, MIN), Some(0.25));
        assert_eq!(b.value(Metric::ThroughputPerMin, 5 * MIN), Some(2.0));
        assert_eq!(b.value(Metric::CreditsPerMin, MIN / 2), Some(10.0));
        assert_eq!(b.value(Metric::CpuPctAvg, MIN), None);
        // The detector sees the median beside the p95 (a straggler moves only the p95).
        assert_eq!(
            b.input(Metric::RuntimeP95),
            Input::Runtime {
                p95: Some(250.0),
                p50: Some(120.0),
                runs: 10
            }
        );
    }
}
