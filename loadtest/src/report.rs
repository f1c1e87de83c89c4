//! The end of a run: the JSON line and the human summary.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cli::show_duration;
use crate::run::Stats;

/// The last line of stdout. Field order is the contract's; `null` where it does not apply.
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
}

/// CPU use over the measured time, in % of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub client_pct: f64,
    pub hub_pct: Option<f64>,
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
}

fn round(x: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (x * m).round() / m
}

impl Outcome {
    fn lost(&self) -> Option<u64> {
        match &self.hub_runs {
            Some(Ok(runs)) => Some(self.stats.acked_total.saturating_sub(*runs)),
            _ => None,
        }
    }

    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let h = &self.stats.latency;
        (!h.is_empty()).then(|| round(h.value_at_quantile(q) as f64 / 1000.0, 3))
    }

    pub fn report(&self) -> Report {
        let secs = self.measured.as_secs_f64();
        Report {
            scenario: self.scenario,
            duration_s: round(secs, 3),
            events_per_s: self
                .ingest
                .then(|| round(self.stats.events as f64 / secs, 1)),
            requests_per_s: round(self.stats.ok as f64 / secs, 1),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            errors: self.stats.errors.total(),
            lost: self.lost(),
            sessions: None,
            hub_rss_mb: match &self.hub_rss {
                Some(Ok((rss, _))) => Some(round(*rss, 1)),
                _ => None,
            },
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
        if let Some(n) = self.seeded {
            let _ = writeln!(out, "  seeded {n} run events before the warmup");
        }
        let _ = write!(
            out,
            "  measured {}: {} ok requests ({}/s)",
            show_duration(self.measured),
            s.ok,
            r.requests_per_s
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
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            ms((!s.latency.is_empty()).then(|| round(s.latency.max() as f64 / 1000.0, 3)))
        );
        let _ = writeln!(
            out,
            "  errors {}: 503 {}, 429 {}, other status {}, timeout {}, transport {}, bad answer {}; \
             {} more during the warmup",
            e.total(),
            e.overloaded,
            e.throttled,
            e.status,
            e.timeout,
            e.transport,
            e.bad_response,
            s.warmup_errors
        );
        if let Some(sample) = &s.sample_error {
            let _ = writeln!(out, "  first error: {sample}");
        }
        match &self.hub_runs {
            Some(Ok(runs)) => {
                let _ = write!(
                    out,
                    "  hub 24h runs {runs}, acked events {} (warmup included): lost {}",
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
                let _ = write!(out, "  hub RSS {rss:.1} MiB");
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
                let _ = write!(out, ", hub {hub:.0}%");
            }
            out.push('\n');
        }
        out
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
}
