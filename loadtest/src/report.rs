//! The end of a run: the JSON line and the human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cli::show_duration;
use crate::run::Stats;

/// The last line of stdout. Field order is the contract's; `null` where it does not apply.
/// Fields after `hub_rss_mb` extend the contract: each is left out where it does not apply.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub duration_s: f64,
    pub events_per_s: Option<f64>,
    pub requests_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub errors: u64,
    pub lost: Option<u64>,
    pub sessions: Option<u64>,
    pub hub_rss_mb: Option<f64>,
    /// A ceiling run: the scenario it is the ceiling of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_of: Option<&'static str>,
    /// An ingest ceiling: `synchronous_commit` of its scratch database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronous_commit: Option<String>,
    /// Fan-out: average bytes of the frames after the snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_bytes: Option<u64>,
    /// Fan-out: p99 of frame built (its `ts`) → received, over the measured frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit_p99_ms: Option<f64>,
    /// Fan-out: seconds until the last session had its snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_s: Option<f64>,
    /// Fan-out: growth of the hub's (or server's) RSS per idle session, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_session_kib: Option<f64>,
    /// CPU over the measured time, % of one core: this client, and the hub (`--hub-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_cpu_pct: Option<f64>,
    /// Noisy neighbour: p99 of tenant Y's POST → answer, and of its realtime reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_p99_ms: Option<f64>,
    /// Noisy neighbour: the same figures of Y alone, in the first and the last phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alone: Option<Box<Report>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alone_again: Option<Box<Report>>,
    /// Noisy neighbour: Y's p99s in every phase, alone and beside X (ms), and their medians.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    /// Noisy neighbour: how much the median of each of Y's p99s moved beside X, in % of its
    /// median alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_change_pct: Option<P99Change>,
    /// Noisy neighbour: what tenant X got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbour: Option<Neighbour>,
}

/// Y's p99s per phase of one condition.
#[derive(Debug, Default, Serialize)]
pub struct P99s {
    pub ingest: Vec<Option<f64>>,
    pub push: Vec<Option<f64>>,
    pub read: Vec<Option<f64>>,
}

impl P99s {
    fn push(&mut self, r: &Report) {
        self.ingest.push(r.ingest_p99_ms);
        self.push.push(r.p99_ms);
        self.read.push(r.read_p99_ms);
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Phases {
    pub alone: P99s,
    pub beside: P99s,
    pub median_alone: P99Change,
    pub median_beside: P99Change,
}

/// The median of the known values (the lower middle one of an even count).
fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len().checked_sub(1)? / 2).copied()
}

#[derive(Debug, Default, Serialize)]
pub struct P99Change {
    pub ingest: Option<f64>,
    pub push: Option<f64>,
    pub read: Option<f64>,
}

/// Tenant X's requests in the `noisy-neighbour` scenario, by answer (the line its process
/// prints, and the `neighbour` field).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Neighbour {
    pub requests: u64,
    /// Answers by HTTP status (`0`: none, e.g. a timeout).
    pub answers: BTreeMap<u16, u64>,
}

impl Neighbour {
    /// Counts one answer (`0`: none).
    pub fn count(&mut self, status: u16) {
        self.requests += 1;
        *self.answers.entry(status).or_default() += 1;
    }

    /// Adds what another loop or phase of X got.
    pub fn add(&mut self, other: Neighbour) {
        self.requests += other.requests;
        for (status, n) in other.answers {
            *self.answers.entry(status).or_default() += n;
        }
    }
}

/// What the `noisy-neighbour` scenario adds to its last phase beside X.
pub struct Noisy {
    /// Every phase of Y alone, in order, each with its realtime reads.
    pub alone: Vec<(Outcome, Stats)>,
    /// The phases beside X before the last one (which is this outcome).
    pub beside: Vec<(Outcome, Stats)>,
    /// Y's realtime reads in the last phase beside X.
    pub reads: Stats,
    /// What X got, over every phase beside it.
    pub neighbour: Neighbour,
}

/// CPU use over the measured time, in % of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub client_pct: f64,
    pub hub_pct: Option<f64>,
}

/// What the `fanout` scenario measured besides its POSTs (which are in [`Outcome::stats`]).
pub struct Fanout {
    pub sessions: u64,
    /// `--rate`; 0 = sessions held idle.
    pub rate: u32,
    /// The window whose `runs` count matched frames to events (`1m` or `1h`).
    pub window: &'static str,
    /// Sessions that got their snapshot, and how long until the last one did.
    pub connected: u64,
    pub connect_time: Duration,
    /// CPU used while connecting, over `connect_time`.
    pub connect_cpu: Option<CpuUse>,
    /// Upgrades refused by the hub's rate limit and retried.
    pub refused_upgrades: u64,
    /// Sessions refused or without a snapshot within `--timeout`.
    pub failed_to_connect: u64,
    /// Connected sessions that closed (or were closed) before the end.
    pub closed_early: u64,
    /// The first session failure, for the summary.
    pub sample_failure: Option<String>,
    /// Frames received by all sessions during the measured time, and over the whole run.
    pub frames: u64,
    pub frames_total: u64,
    /// Text bytes of all frames received.
    pub frame_bytes: u64,
    /// POST sent → first frame of a session counting the event, µs, measured events only,
    /// over all sessions.
    pub delivery: Histogram<u64>,
    /// The same from the POST's 200 answer (the hub answers after the commit and after
    /// applying the events), 0 when the frame came first: the fan-out's own share.
    pub after_answer: Histogram<u64>,
    /// Per frame received in the measured time: its `ts` (built by the hub) → received, µs.
    pub transit: Histogram<u64>,
    /// Lateness of a 1 ms timer in the client over the measured time, µs (the client's own
    /// delay in reading frames).
    pub client_stalls: Histogram<u64>,
    /// Per session still open at the end, acked events its frames never counted; summed.
    pub lost: u64,
    /// Sessions still open at the end that missed at least one event.
    pub sessions_behind: u64,
    /// Latest a POST was sent after its slot in the paced schedule.
    pub max_schedule_lag: Duration,
    /// Events due before the end but never sent (every posting loop was busy).
    pub unsent: u64,
    /// The hub's VmRSS (MiB) before the sessions, with every session connected and idle.
    pub rss_before: Option<f64>,
    pub rss_idle: Option<f64>,
}

impl Fanout {
    /// Hub RSS growth per idle session, KiB.
    pub fn rss_per_session_kib(&self) -> Option<f64> {
        let (before, idle) = (self.rss_before?, self.rss_idle?);
        (self.connected > 0).then(|| (idle - before) * 1024.0 / self.connected as f64)
    }
}

/// What the `alert` scenario measured besides its POSTs (which are in [`Outcome::stats`]).
/// Counts cover the whole run (warmup included); latencies only the measured slots.
pub struct Alert {
    pub rate: u32,
    /// Where the hub sent the webhooks.
    pub receiver_url: String,
    /// Slots due before the end, and those never sent (every posting loop was busy).
    pub slots: u64,
    pub unsent: u64,
    /// Latest a POST was sent after its slot.
    pub max_schedule_lag: Duration,
    /// Agents whose POST was acknowledged (200).
    pub acked: u64,
    /// Acked agents whose firing arrived.
    pub fired: u64,
    /// Acked agents without a firing webhook when the wait after the load ended.
    pub lost: u64,
    /// Firings of an agent that had already fired, under another webhook-id.
    pub duplicates: u64,
    /// Deliveries of a webhook-id received before (the hub's at-least-once retries).
    pub retries_seen: u64,
    /// Webhooks whose `webhook-signature` did not verify (or without the webhook headers).
    pub bad_signatures: u64,
    /// Validly signed webhooks whose body is not an alert webhook this run can read.
    pub malformed: u64,
    /// Firings for agents whose POST was not acknowledged, or not of this run.
    pub unexpected: u64,
    /// Webhooks of other types (`alert.resolved`, repeats).
    pub other_types: u64,
    /// Requests the receiver answered 2xx, and otherwise (not a POST).
    pub answered_2xx: u64,
    pub answered_other: u64,
    /// Webhooks received over the whole run, and during the measured time.
    pub webhooks: u64,
    pub webhooks_measured: u64,
    /// Slot due → its agent's first firing received, µs, measured slots (coordinated
    /// omission corrected: a late POST counts from when it was due).
    pub delivery: Histogram<u64>,
    /// The same from the POST's 200 answer: the hub's alerting and delivery share.
    pub after_answer: Histogram<u64>,
    /// From the end of the load until the last outstanding firing arrived (or the wait
    /// gave up).
    pub tail: Duration,
}

impl Alert {
    /// What the JSON line counts as errors besides failed POSTs.
    pub fn bad_webhooks(&self) -> u64 {
        self.bad_signatures + self.malformed
    }
}

/// What a ceiling run (`loadtest ceiling …`) adds.
pub struct Ceiling {
    /// The scenario it is the ceiling of.
    pub of: &'static str,
    /// What served the load, for the summary.
    pub server: String,
    /// `synchronous_commit` of the scratch database (ingest ceilings).
    pub synchronous_commit: Option<String>,
}

/// Everything a finished run knows.
pub struct Outcome {
    pub scenario: &'static str,
    pub settings: String,
    pub ingest: bool,
    /// The measured time (`--duration`).
    pub measured: Duration,
    /// From the first request to the last answer, warmup included.
    pub finished: Duration,
    pub stats: Stats,
    /// The hub's 24h `execution.runs` at the end (ingest scenarios), or why it is unknown.
    pub hub_runs: Option<Result<u64, String>>,
    /// The hub's (VmRSS, VmHWM) in MiB with `--hub-pid`, or why it is unknown.
    pub hub_rss: Option<Result<(f64, Option<f64>), String>>,
    pub cpu: Option<CpuUse>,
    /// Events stored before a query run.
    pub seeded: Option<u64>,
    /// The `fanout` scenario's sessions.
    pub fanout: Option<Fanout>,
    /// The `alert` scenario's webhooks.
    pub alert: Option<Alert>,
    /// Set for a ceiling run; then `hub_runs` is the scratch table's row count (ingest), and
    /// `hub_rss` and `cpu` are the bare server's (fan-out).
    pub ceiling: Option<Ceiling>,
    /// The `noisy-neighbour` scenario: this outcome is Y beside X.
    pub noisy: Option<Noisy>,
}

fn round(x: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (x * m).round() / m
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| round(h.value_at_quantile(q) as f64 / 1000.0, 3))
}

fn max_ms(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| round(h.max() as f64 / 1000.0, 3))
}

impl Outcome {
    fn lost(&self) -> Option<u64> {
        if let Some(a) = &self.alert {
            return Some(a.lost);
        }
        if let Some(f) = &self.fanout {
            return (f.rate > 0).then_some(f.lost);
        }
        match &self.hub_runs {
            Some(Ok(runs)) => Some(self.stats.acked_total.saturating_sub(*runs)),
            _ => None,
        }
    }

    /// The latency the JSON line reports: of requests, POST → frame for `fanout`, or slot
    /// → webhook for `alert`.
    fn headline_latency(&self) -> &Histogram<u64> {
        if let Some(a) = &self.alert {
            return &a.delivery;
        }
        self.fanout
            .as_ref()
            .map_or(&self.stats.latency, |f| &f.delivery)
    }

    pub fn report(&self) -> Report {
        let Some(n) = &self.noisy else {
            return self.report_alone();
        };
        // One phase of Y: its fan-out figures, its POST p99 and its reads.
        let with_reads = |o: &Outcome, reads: &Stats| {
            let mut phase = o.report_alone();
            phase.read_p99_ms = quantile_ms(&reads.latency, 0.99);
            phase.ingest_p99_ms = quantile_ms(&o.stats.latency, 0.99);
            phase.errors += reads.errors.total();
            phase
        };
        let mut r = with_reads(self, &n.reads);
        let alone: Vec<Report> = n.alone.iter().map(|(o, s)| with_reads(o, s)).collect();
        let mut phases = Phases::default();
        alone.iter().for_each(|a| phases.alone.push(a));
        for (o, s) in &n.beside {
            phases.beside.push(&with_reads(o, s));
        }
        phases.beside.push(&r);
        let medians = |p: &P99s| P99Change {
            ingest: median(&p.ingest),
            push: median(&p.push),
            read: median(&p.read),
        };
        phases.median_alone = medians(&phases.alone);
        phases.median_beside = medians(&phases.beside);
        let change = |a: Option<f64>, b: Option<f64>| Some(round(100.0 * (b? - a?) / a?, 1));
        let (a, b) = (&phases.median_alone, &phases.median_beside);
        r.p99_change_pct = Some(P99Change {
            ingest: change(a.ingest, b.ingest),
            push: change(a.push, b.push),
            read: change(a.read, b.read),
        });
        r.phases = Some(phases);
        let mut alone = alone.into_iter();
        r.alone = alone.next().map(Box::new);
        r.alone_again = alone.next_back().map(Box::new);
        r.neighbour = Some(n.neighbour.clone());
        r
    }

    /// The report of this outcome by itself (without a noisy-neighbour comparison).
    fn report_alone(&self) -> Report {
        let secs = self.measured.as_secs_f64();
        let latency = self.headline_latency();
        let (requests, other_errors) = match (&self.fanout, &self.alert) {
            (Some(f), _) => (f.frames, f.failed_to_connect + f.closed_early),
            (None, Some(a)) => (a.webhooks_measured, a.bad_webhooks()),
            (None, None) => (self.stats.ok, 0),
        };
        Report {
            scenario: self.scenario,
            duration_s: round(secs, 3),
            events_per_s: self
                .ingest
                .then(|| round(self.stats.events as f64 / secs, 1)),
            requests_per_s: round(requests as f64 / secs, 1),
            p50_ms: quantile_ms(latency, 0.5),
            p99_ms: quantile_ms(latency, 0.99),
            p999_ms: quantile_ms(latency, 0.999),
            errors: self.stats.errors.total() + other_errors,
            lost: self.lost(),
            sessions: self.fanout.as_ref().map(|f| f.sessions),
            hub_rss_mb: match &self.hub_rss {
                Some(Ok((rss, _))) => Some(round(*rss, 1)),
                _ => None,
            },
            ceiling_of: self.ceiling.as_ref().map(|c| c.of),
            synchronous_commit: self
                .ceiling
                .as_ref()
                .and_then(|c| c.synchronous_commit.clone()),
            frame_bytes: self
                .fanout
                .as_ref()
                .and_then(|f| f.frame_bytes.checked_div(f.frames_total)),
            transit_p99_ms: self
                .fanout
                .as_ref()
                .and_then(|f| quantile_ms(&f.transit, 0.99)),
            connect_s: self
                .fanout
                .as_ref()
                .map(|f| round(f.connect_time.as_secs_f64(), 3)),
            rss_per_session_kib: self
                .fanout
                .as_ref()
                .and_then(|f| f.rss_per_session_kib())
                .map(|k| round(k, 1)),
            client_cpu_pct: self.cpu.map(|c| round(c.client_pct, 1)),
            hub_cpu_pct: self.cpu.and_then(|c| c.hub_pct).map(|h| round(h, 1)),
            ingest_p99_ms: None,
            read_p99_ms: None,
            alone: None,
            alone_again: None,
            phases: None,
            p99_change_pct: None,
            neighbour: None,
        }
    }

    /// What the summary calls the process that served the load.
    fn server(&self) -> &'static str {
        match &self.ceiling {
            Some(c) if c.synchronous_commit.is_some() => "PostgreSQL",
            Some(_) => "bare server",
            None => "hub",
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(&self.report()).expect("a report serializes")
    }

    /// Several lines for a human, each ending in a newline.
    pub fn summary(&self) -> String {
        let r = self.report();
        let s = &self.stats;
        let e = &s.errors;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}ms"));
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.settings);
        if let Some(c) = &self.ceiling {
            let _ = writeln!(out, "  ceiling of {}: {}", c.of, c.server);
        }
        if let Some(n) = self.seeded {
            let _ = writeln!(out, "  seeded {n} run events before the warmup");
        }
        if let (Some(n), Some(p)) = (&self.noisy, &r.phases) {
            let list = |v: &[Option<f64>]| v.iter().map(|x| ms(*x)).collect::<Vec<_>>().join(" ");
            let line = |name: &str, a: &[Option<f64>], b: &[Option<f64>], ma, mb| {
                format!(
                    "    {name}: alone {} (median {}), beside X {} (median {})",
                    list(a),
                    ms(ma),
                    list(b),
                    ms(mb)
                )
            };
            let _ = writeln!(out, "  noisy neighbour, Y's p99 per phase:");
            let (a, b) = (&p.alone, &p.beside);
            let (ma, mb) = (&p.median_alone, &p.median_beside);
            let _ = writeln!(
                out,
                "{}",
                line("ingest", &a.ingest, &b.ingest, ma.ingest, mb.ingest)
            );
            let _ = writeln!(out, "{}", line("push", &a.push, &b.push, ma.push, mb.push));
            let _ = writeln!(out, "{}", line("read", &a.read, &b.read, ma.read, mb.read));
            let _ = writeln!(
                out,
                "  X sent {} requests over the phases beside Y: {}",
                n.neighbour.requests,
                crate::noisy::show_answers(&n.neighbour.answers)
            );
            let _ = writeln!(out, "  Y beside X, in detail:");
        }
        if let Some(f) = &self.fanout {
            self.fanout_summary(f, &r, &mut out);
        }
        if let Some(a) = &self.alert {
            self.alert_summary(a, &r, &mut out);
        }
        if self.fanout.as_ref().is_none_or(|f| f.rate > 0) {
            let _ = write!(
                out,
                "  measured {}: {} ok requests ({}/s)",
                show_duration(self.measured),
                s.ok,
                round(s.ok as f64 / self.measured.as_secs_f64(), 1)
            );
            if let Some(eps) = r.events_per_s {
                let _ = write!(out, ", {} events ({eps}/s)", s.events);
            }
            let _ = writeln!(
                out,
                "; run took {:.2}s with warmup and tail",
                self.finished.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "  latency of ok requests: p50 {} p99 {} p99.9 {} max {}",
                ms(quantile_ms(&s.latency, 0.5)),
                ms(quantile_ms(&s.latency, 0.99)),
                ms(quantile_ms(&s.latency, 0.999)),
                ms(max_ms(&s.latency))
            );
        } else {
            // Idle fan-out sessions: no requests to describe.
            let _ = writeln!(
                out,
                "  held the sessions idle for {}; run took {:.2}s with connecting",
                show_duration(self.measured),
                self.finished.as_secs_f64()
            );
        }
        if self.server() == "PostgreSQL" {
            let _ = writeln!(
                out,
                "  errors {}: database {}, connection {}, timeout {}; {} more during the warmup",
                e.total(),
                e.status,
                e.transport,
                e.timeout,
                s.warmup_errors
            );
        } else {
            let _ = writeln!(
                out,
                "  errors {}: 503 {}, 429 {}, other status {}, timeout {}, transport {}, bad \
                 answer {}; {} more during the warmup",
                e.total(),
                e.overloaded,
                e.throttled,
                e.status,
                e.timeout,
                e.transport,
                e.bad_response,
                s.warmup_errors
            );
        }
        if let Some(sample) = &s.sample_error {
            let _ = writeln!(out, "  first error: {sample}");
        }
        match &self.hub_runs {
            Some(Ok(runs)) => {
                let counted = match self.server() {
                    "PostgreSQL" => "scratch table rows",
                    "bare server" => "bare server's event count",
                    _ => "hub 24h runs",
                };
                let _ = write!(
                    out,
                    "  {counted} {runs}, acked events {} (warmup included): lost {}",
                    s.acked_total,
                    s.acked_total.saturating_sub(*runs)
                );
                if *runs > s.acked_total {
                    let _ = write!(
                        out,
                        " ({} counted but not acked, e.g. answers that timed out)",
                        runs - s.acked_total
                    );
                }
                out.push('\n');
            }
            Some(Err(why)) => {
                let _ = writeln!(out, "  lost unknown: the final realtime read failed: {why}");
            }
            None => {}
        }
        match &self.hub_rss {
            Some(Ok((rss, hwm))) => {
                let _ = write!(out, "  {} RSS {rss:.1} MiB", self.server());
                if let Some(hwm) = hwm {
                    let _ = write!(out, " (peak {hwm:.1} MiB)");
                }
                out.push('\n');
            }
            Some(Err(why)) => {
                let _ = writeln!(out, "  hub RSS unknown: {why}");
            }
            None => {}
        }
        if let Some(cpu) = self.cpu {
            let _ = write!(
                out,
                "  CPU over the measured time (% of one core): loadtest {:.0}%",
                cpu.client_pct
            );
            if let Some(hub) = cpu.hub_pct {
                let _ = write!(out, ", {} {hub:.0}%", self.server());
            }
            out.push('\n');
        }
        out
    }

    fn alert_summary(&self, a: &Alert, r: &Report, out: &mut String) {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}ms"));
        let _ = writeln!(out, "  webhook receiver: {}", a.receiver_url);
        let _ = write!(
            out,
            "  posts: {} slots due at {}/s (warmup included), {} acked, {} never sent; posts ran \
             up to {:.1}ms late",
            a.slots,
            a.rate,
            a.acked,
            a.unsent,
            a.max_schedule_lag.as_secs_f64() * 1000.0
        );
        if a.unsent > 0 {
            out.push_str(
                " (the rate was not kept: every POST loop was waiting; raise --connections)",
            );
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "  webhooks: {} received ({} in the measured time, {}/s); receiver answered {} 2xx, \
             {} other",
            a.webhooks, a.webhooks_measured, r.requests_per_s, a.answered_2xx, a.answered_other
        );
        let _ = writeln!(
            out,
            "  firings: {} of {} acked agents fired; lost {} (no firing {:.2}s after the load), \
             duplicates {} (an agent fired again under another webhook-id), retries seen {} \
             (a webhook-id delivered again), bad signatures {}, malformed {}, unexpected {} \
             (agents not acked), other types {}",
            a.fired,
            a.acked,
            a.lost,
            a.tail.as_secs_f64(),
            a.duplicates,
            a.retries_seen,
            a.bad_signatures,
            a.malformed,
            a.unexpected,
            a.other_types
        );
        let verdict = match r.p99_ms {
            Some(p99) if p99 <= 100.0 => "met",
            Some(_) => "missed",
            None => "no samples",
        };
        let _ = writeln!(
            out,
            "  slot due -> firing webhook received: p50 {} p99 {} p99.9 {} max {}, {} samples \
             (target p99 <= 100ms: {verdict})",
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            ms(max_ms(&a.delivery)),
            a.delivery.len()
        );
        let _ = writeln!(
            out,
            "    from the POST's 200 answer instead: p50 {} p99 {} p99.9 {} max {}",
            ms(quantile_ms(&a.after_answer, 0.5)),
            ms(quantile_ms(&a.after_answer, 0.99)),
            ms(quantile_ms(&a.after_answer, 0.999)),
            ms(max_ms(&a.after_answer))
        );
        let _ = writeln!(
            out,
            "  JSON errors {}: failed POSTs {} + bad signatures {} + malformed {}",
            r.errors,
            self.stats.errors.total(),
            a.bad_signatures,
            a.malformed
        );
    }

    fn fanout_summary(&self, f: &Fanout, r: &Report, out: &mut String) {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}ms"));
        let mib = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.1} MiB"));
        let _ = write!(
            out,
            "  sessions: {} of {} connected (snapshot received) in {:.2}s",
            f.connected,
            f.sessions,
            f.connect_time.as_secs_f64()
        );
        if let Some(cpu) = f.connect_cpu {
            let _ = write!(out, ", CPU loadtest {:.0}%", cpu.client_pct);
            if let Some(hub) = cpu.hub_pct {
                let _ = write!(out, " {} {hub:.0}%", self.server());
            }
        }
        let _ = writeln!(
            out,
            "; {} upgrades refused by the rate limit and retried; {} failed to connect, {} \
             closed before the end",
            f.refused_upgrades, f.failed_to_connect, f.closed_early
        );
        if let Some(why) = &f.sample_failure {
            let _ = writeln!(out, "  first session failure: {why}");
        }
        let bytes = f
            .frame_bytes
            .checked_div(f.frames_total)
            .map_or("-".to_string(), |b| format!("{b} B"));
        let _ = writeln!(
            out,
            "  frames: {} in the measured time ({}/s over all sessions), {} after the snapshots \
             in all, average {bytes}",
            f.frames, r.requests_per_s, f.frames_total
        );
        let _ = writeln!(
            out,
            "  frame built (its ts) -> received: p50 {} p99 {} max {}; client timer lateness \
             (its own delay in reading): p99 {} max {}",
            ms(quantile_ms(&f.transit, 0.5)),
            ms(quantile_ms(&f.transit, 0.99)),
            ms(max_ms(&f.transit)),
            ms(quantile_ms(&f.client_stalls, 0.99)),
            ms(max_ms(&f.client_stalls))
        );
        if f.rate > 0 {
            let _ = writeln!(
                out,
                "  POST sent -> first frame counting the event (every session, `{}` runs): \
                 p50 {} p99 {} p99.9 {} max {}, {} samples",
                f.window,
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.p999_ms),
                ms(max_ms(&f.delivery)),
                f.delivery.len()
            );
            let _ = writeln!(
                out,
                "    from the POST's 200 answer instead (0 when the frame came first): p50 {} \
                 p99 {} p99.9 {} max {}",
                ms(quantile_ms(&f.after_answer, 0.5)),
                ms(quantile_ms(&f.after_answer, 0.99)),
                ms(quantile_ms(&f.after_answer, 0.999)),
                ms(max_ms(&f.after_answer))
            );
            let _ = writeln!(
                out,
                "    (events are matched to frames by count in send order; when the hub commits \
                 a later POST first, attribution is off by up to one coalescing period)"
            );
            let _ = writeln!(
                out,
                "  delivery: {} acked events never counted by an open session (summed over \
                 sessions), {} sessions behind at the end",
                f.lost, f.sessions_behind,
            );
            let _ = write!(
                out,
                "  schedule: posts ran up to {:.1}ms late, {} events due were never sent",
                f.max_schedule_lag.as_secs_f64() * 1000.0,
                f.unsent
            );
            if f.unsent > 0 {
                out.push_str(
                    " (the rate was not kept: every POST loop was waiting; raise --connections)",
                );
            }
            out.push('\n');
        }
        let _ = write!(
            out,
            "  {} RSS: {} before the sessions, {} with them connected and idle, {} at the end",
            self.server(),
            mib(f.rss_before),
            mib(f.rss_idle),
            mib(match &self.hub_rss {
                Some(Ok((rss, _))) => Some(*rss),
                _ => None,
            })
        );
        match f.rss_per_session_kib() {
            Some(kib) => {
                let _ = writeln!(out, ": {kib:.1} KiB per idle session");
            }
            None => out.push('\n'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ingest: bool) -> Outcome {
        let mut stats = Stats::new(11_000_000);
        for us in [1000, 2000, 3000, 50_000] {
            stats.latency.record(us).unwrap();
        }
        stats.ok = 4;
        stats.events = if ingest { 4000 } else { 0 };
        stats.acked_total = if ingest { 5000 } else { 0 };
        Outcome {
            scenario: if ingest { "ingest-batch" } else { "query" },
            settings: "loadtest test".into(),
            ingest,
            measured: Duration::from_secs(2),
            finished: Duration::from_secs(3),
            stats,
            hub_runs: ingest.then_some(Ok(4990)),
            hub_rss: None,
            cpu: None,
            seeded: None,
            fanout: None,
            alert: None,
            ceiling: None,
            noisy: None,
        }
    }

    #[test]
    fn json_line() {
        let o = outcome(true);
        let line = o.json();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"scenario":"ingest-batch","duration_s":2.0,"events_per_s":2000.0,"requests_per_s":2.0,"p50_ms":2.0"#), "{line}");
        assert!(
            line.ends_with(r#""errors":0,"lost":10,"sessions":null,"hub_rss_mb":null}"#),
            "{line}"
        );
        let q = outcome(false).json();
        assert!(
            q.contains(r#""events_per_s":null"#) && q.contains(r#""lost":null"#),
            "{q}"
        );
        let v: serde_json::Value = serde_json::from_str(&q).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 11);
        assert!(!o.summary().is_empty());
    }

    #[test]
    fn fanout_json_line() {
        let mut o = outcome(true);
        o.scenario = "fanout";
        let mut delivery = Histogram::new_with_bounds(1, 11_000_000, 3).unwrap();
        for us in [4000, 5000, 6000, 90_000] {
            delivery.record(us).unwrap();
        }
        o.fanout = Some(Fanout {
            sessions: 10,
            rate: 2000,
            window: "1m",
            connected: 9,
            connect_time: Duration::from_millis(300),
            connect_cpu: None,
            refused_upgrades: 0,
            failed_to_connect: 1,
            closed_early: 2,
            sample_failure: Some("HTTP error: 429 Too Many Requests".into()),
            frames: 500,
            frames_total: 600,
            frame_bytes: 600_000,
            after_answer: delivery.clone(),
            transit: delivery.clone(),
            client_stalls: delivery.clone(),
            delivery,
            lost: 7,
            sessions_behind: 1,
            max_schedule_lag: Duration::from_millis(3),
            unsent: 0,
            rss_before: Some(10.0),
            rss_idle: Some(10.9),
        });
        o.hub_rss = Some(Ok((12.0, None)));
        let line = o.json();
        assert!(
            line.starts_with(r#"{"scenario":"fanout","duration_s":2.0,"events_per_s":2000.0,"requests_per_s":250.0,"p50_ms":5.0"#),
            "{line}"
        );
        // The contract's fields, then the fan-out's own (600 000 bytes over 600 frames).
        assert!(
            line.ends_with(
                r#""errors":3,"lost":7,"sessions":10,"hub_rss_mb":12.0,"frame_bytes":1000,"transit_p99_ms":90.047,"connect_s":0.3,"rss_per_session_kib":102.4}"#
            ),
            "{line}"
        );
        let f = o.fanout.as_ref().unwrap();
        assert!((f.rss_per_session_kib().unwrap() - 102.4).abs() < 0.01);
        let summary = o.summary();
        assert!(summary.contains("102.4 KiB per idle session"), "{summary}");
        // Idle sessions: no events, no latency, no loss.
        o.ingest = false;
        if let Some(f) = o.fanout.as_mut() {
            f.rate = 0;
            f.delivery.reset();
        }
        let idle = o.json();
        assert!(
            idle.contains(r#""events_per_s":null"#)
                && idle.contains(r#""p99_ms":null"#)
                && idle.contains(r#""lost":null"#),
            "{idle}"
        );
    }

    #[test]
    fn ceiling_json_line() {
        let mut o = outcome(true);
        o.scenario = "ceiling-ingest-batch";
        o.cpu = Some(CpuUse {
            client_pct: 12.34,
            hub_pct: None,
        });
        o.ceiling = Some(Ceiling {
            of: "ingest-batch",
            server: "PostgreSQL 15.8, …".into(),
            synchronous_commit: Some("on".into()),
        });
        let line = o.json();
        assert!(
            line.starts_with(
                r#"{"scenario":"ceiling-ingest-batch","duration_s":2.0,"events_per_s":2000.0,"#
            ),
            "{line}"
        );
        assert!(
            line.ends_with(
                r#""lost":10,"sessions":null,"hub_rss_mb":null,"ceiling_of":"ingest-batch","synchronous_commit":"on","client_cpu_pct":12.3}"#
            ),
            "{line}"
        );
        let summary = o.summary();
        assert!(
            summary.contains("ceiling of ingest-batch: PostgreSQL"),
            "{summary}"
        );
        assert!(summary.contains("scratch table rows 4990"), "{summary}");
        assert!(summary.contains("errors 0: database 0"), "{summary}");
        // A fan-out ceiling names its server as such.
        o.ceiling = Some(Ceiling {
            of: "fanout",
            server: "bare broadcast server".into(),
            synchronous_commit: None,
        });
        o.hub_rss = Some(Ok((9.5, None)));
        let summary = o.summary();
        assert!(summary.contains("bare server RSS 9.5 MiB"), "{summary}");
        assert!(!o.json().contains("synchronous_commit"));
    }

    #[test]
    fn alert_json_line() {
        let mut o = outcome(true);
        o.scenario = "alert";
        o.hub_runs = None;
        o.stats.errors.status = 1;
        let mut delivery = Histogram::new_with_bounds(1, 11_000_000, 3).unwrap();
        for us in [20_000, 30_000, 40_000, 200_000] {
            delivery.record(us).unwrap();
        }
        o.alert = Some(Alert {
            rate: 20,
            receiver_url: "http://127.0.0.1:1/hook".into(),
            slots: 60,
            unsent: 0,
            max_schedule_lag: Duration::from_millis(2),
            acked: 59,
            fired: 57,
            lost: 2,
            duplicates: 1,
            retries_seen: 3,
            bad_signatures: 2,
            malformed: 1,
            unexpected: 0,
            other_types: 0,
            answered_2xx: 63,
            answered_other: 0,
            webhooks: 63,
            webhooks_measured: 41,
            after_answer: delivery.clone(),
            delivery,
            tail: Duration::from_millis(40),
        });
        let line = o.json();
        assert!(
            line.starts_with(r#"{"scenario":"alert","duration_s":2.0,"events_per_s":2000.0,"requests_per_s":20.5,"p50_ms":30.0"#),
            "{line}"
        );
        assert!(
            line.ends_with(r#""errors":4,"lost":2,"sessions":null,"hub_rss_mb":null}"#),
            "{line}"
        );
        let summary = o.summary();
        assert!(summary.contains("lost 2"), "{summary}");
        assert!(summary.contains("retries seen 3"), "{summary}");
        assert!(summary.contains("target p99 <= 100ms: missed"), "{summary}");
    }
}
