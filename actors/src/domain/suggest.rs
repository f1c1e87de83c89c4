//! Optimization suggestions for an agent (`GET /api/v1/agents/{id}/analytics`), computed from
//! its figures by explicit rules: each fires on thresholds stated here and carries the figures
//! that made it fire, so a reader can check it. Nothing here is generated text beyond filling
//! a fixed sentence with those figures.

use serde::Serialize;
use serde_json::{json, Value};

/// Fewest successful runs a model needs before its cost per success is compared.
pub const MIN_MODEL_SUCCESSES: i64 = 20;
/// A model costs "far more" per successful run at this many times another's.
pub const COST_RATIO: f64 = 2.0;
/// Fewest runs in each period before p95 runtimes are compared.
pub const MIN_RUNS_FOR_P95: i64 = 50;
/// p95 "rose" when it grew by this share.
pub const P95_RISE: f64 = 0.25;
/// Fewest failures before their causes are looked at, and the share one type must have.
pub const MIN_FAILURES: i64 = 10;
pub const DOMINANT_SHARE: f64 = 0.5;
/// Fewest heartbeats carrying use and limit, and the mean use ÷ limit under which an
/// allocation is "mostly unused".
pub const MIN_SAMPLES: i64 = 30;
pub const LOW_USE: f64 = 0.3;
/// An error rate this many times the workspace's (and at least `MIN_ERROR_RATE`).
pub const ERROR_RATE_RATIO: f64 = 2.0;
pub const MIN_ERROR_RATE: f64 = 0.05;

/// One model's runs over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFigures {
    pub model: String,
    pub runs: i64,
    pub succeeded: i64,
    pub credits: f64,
}

impl ModelFigures {
    fn cost_per_success(&self) -> Option<f64> {
        (self.succeeded > 0).then(|| self.credits / self.succeeded as f64)
    }
}

/// Mean use ÷ allocation of a resource, over the heartbeats that carried both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allocation {
    pub mean_use: f64,
    pub samples: i64,
}

/// What the rules look at, for the range and the period before it.
#[derive(Debug, Clone, Default)]
pub struct AgentFigures {
    pub runs: i64,
    pub previous_runs: i64,
    pub models: Vec<ModelFigures>,
    pub previous_models: Vec<ModelFigures>,
    pub p95_ms: Option<f64>,
    pub previous_p95_ms: Option<f64>,
    /// Failed and timed-out runs.
    pub failures: i64,
    /// Errors by type (`""`: not given).
    pub error_types: Vec<(String, i64)>,
    pub error_rate: Option<f64>,
    pub workspace_error_rate: Option<f64>,
    pub cpu: Option<Allocation>,
    pub mem: Option<Allocation>,
}

/// A suggestion and the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    pub rule: &'static str,
    pub severity: &'static str,
    pub message: String,
    pub evidence: Value,
}

fn dominant(models: &[ModelFigures]) -> Option<&ModelFigures> {
    models
        .iter()
        .filter(|m| !m.model.is_empty())
        .max_by(|a, b| a.runs.cmp(&b.runs).then_with(|| b.model.cmp(&a.model)))
}

/// Every rule that fires, most severe first (ties in rule order).
pub fn suggest(f: &AgentFigures) -> Vec<Suggestion> {
    let mut out = Vec::new();

    // A model that costs far more per successful run than another the agent uses.
    let priced: Vec<(&ModelFigures, f64)> = f
        .models
        .iter()
        .filter(|m| !m.model.is_empty() && m.succeeded >= MIN_MODEL_SUCCESSES)
        .filter_map(|m| Some((m, m.cost_per_success()?)))
        .collect();
    let cheapest = priced
        .iter()
        .filter(|(_, c)| *c > 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.model.cmp(&b.0.model)));
    let dearest = priced
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.model.cmp(&a.0.model)));
    if let (Some((cheap, low)), Some((dear, high))) = (cheapest, dearest) {
        if cheap.model != dear.model && *high >= COST_RATIO * low {
            out.push(Suggestion {
                rule: "model_cost",
                severity: "warning",
                message: format!(
                    "{} costs {:.1}× as much per successful run as {} ({:.4} against {:.4} credits); consider moving runs to {}",
                    dear.model, high / low, cheap.model, high, low, cheap.model
                ),
                evidence: json!({
                    "expensive_model": dear.model, "expensive_cost_per_success": high,
                    "expensive_successes": dear.succeeded,
                    "cheap_model": cheap.model, "cheap_cost_per_success": low,
                    "cheap_successes": cheap.succeeded, "ratio": high / low,
                }),
            });
        }
    }

    // p95 that rose after the agent's main model changed.
    if let (Some(now), Some(before), Some(main), Some(main_before)) = (
        f.p95_ms,
        f.previous_p95_ms,
        dominant(&f.models),
        dominant(&f.previous_models),
    ) {
        if f.runs >= MIN_RUNS_FOR_P95
            && f.previous_runs >= MIN_RUNS_FOR_P95
            && main.model != main_before.model
            && before > 0.0
            && now >= before * (1.0 + P95_RISE)
        {
            out.push(Suggestion {
                rule: "p95_after_model_change",
                severity: "warning",
                message: format!(
                    "p95 runtime rose {:.0}% ({before:.0} ms to {now:.0} ms) since the main model changed from {} to {}",
                    (now / before - 1.0) * 100.0, main_before.model, main.model
                ),
                evidence: json!({
                    "p95_ms": now, "previous_p95_ms": before,
                    "model": main.model, "previous_model": main_before.model,
                    "runs": f.runs, "previous_runs": f.previous_runs,
                }),
            });
        }
    }

    // One error type behind most failures.
    let errors: i64 = f.error_types.iter().map(|(_, n)| n).sum();
    if f.failures >= MIN_FAILURES && errors > 0 {
        let (kind, n) = f
            .error_types
            .iter()
            .filter(|(t, _)| !t.is_empty())
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map_or(("", 0), |(t, n)| (t.as_str(), *n));
        let share = n as f64 / f.failures as f64;
        if n > 0 && share >= DOMINANT_SHARE {
            out.push(Suggestion {
                rule: "dominant_error",
                severity: "critical",
                message: format!(
                    "{kind} causes {:.0}% of failures ({n} of {}); fixing it first removes most of them",
                    share * 100.0,
                    f.failures
                ),
                evidence: json!({"error_type": kind, "count": n, "failures": f.failures, "share": share}),
            });
        }
    }

    // An error rate well above the workspace's.
    if let (Some(rate), Some(ws)) = (f.error_rate, f.workspace_error_rate) {
        if rate >= MIN_ERROR_RATE && rate >= ERROR_RATE_RATIO * ws && f.failures >= MIN_FAILURES {
            out.push(Suggestion {
                rule: "error_rate_above_workspace",
                severity: "warning",
                message: format!(
                    "error rate {:.1}% is {:.1}× the workspace's {:.1}%",
                    rate * 100.0,
                    if ws > 0.0 { rate / ws } else { f64::INFINITY },
                    ws * 100.0
                ),
                evidence: json!({"error_rate": rate, "workspace_error_rate": ws, "failures": f.failures}),
            });
        }
    }

    // Allocations mostly unused.
    for (name, alloc) in [("cpu", f.cpu), ("memory", f.mem)] {
        if let Some(a) = alloc.filter(|a| a.samples >= MIN_SAMPLES && a.mean_use < LOW_USE) {
            out.push(Suggestion {
                rule: if name == "cpu" { "cpu_allocation_unused" } else { "memory_allocation_unused" },
                severity: "info",
                message: format!(
                    "{name} use averages {:.0}% of its allocation over {} heartbeats; a smaller allocation would do",
                    a.mean_use * 100.0,
                    a.samples
                ),
                evidence: json!({"mean_use_of_allocation": a.mean_use, "samples": a.samples}),
            });
        }
    }

    let rank = |s: &Suggestion| match s.severity {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    out.sort_by_key(rank);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, runs: i64, succeeded: i64, credits: f64) -> ModelFigures {
        ModelFigures {
            model: name.into(),
            runs,
            succeeded,
            credits,
        }
    }

    fn rules(f: &AgentFigures) -> Vec<&'static str> {
        suggest(f).iter().map(|s| s.rule).collect()
    }

    #[test]
    fn nothing_fires_on_a_healthy_agent() {
        let f = AgentFigures {
            runs: 500,
            previous_runs: 500,
            models: vec![model("a", 300, 290, 29.0), model("b", 200, 195, 25.0)],
            previous_models: vec![model("a", 300, 290, 29.0)],
            p95_ms: Some(100.0),
            previous_p95_ms: Some(95.0),
            failures: 15,
            error_types: vec![("Timeout".into(), 5), ("RateLimit".into(), 5)],
            error_rate: Some(0.03),
            workspace_error_rate: Some(0.03),
            cpu: Some(Allocation {
                mean_use: 0.6,
                samples: 100,
            }),
            mem: None,
        };
        assert!(suggest(&f).is_empty(), "{:?}", suggest(&f));
    }

    #[test]
    fn a_costly_model_is_named_with_its_figures() {
        let f = AgentFigures {
            models: vec![
                model("big", 100, 50, 50.0),   // 1.0 per success
                model("small", 100, 40, 12.0), // 0.3 per success
                model("rare", 5, 5, 100.0),    // too few successes to compare
            ],
            ..AgentFigures::default()
        };
        let s = suggest(&f);
        assert_eq!(rules(&f), ["model_cost"]);
        assert_eq!(s[0].evidence["expensive_model"], "big");
        assert_eq!(s[0].evidence["cheap_model"], "small");
        assert!((s[0].evidence["ratio"].as_f64().unwrap() - 1.0 / 0.3).abs() < 1e-9);
        // Under the ratio: nothing.
        let f = AgentFigures {
            models: vec![model("big", 100, 50, 25.0), model("small", 100, 40, 12.0)],
            ..AgentFigures::default()
        };
        assert!(rules(&f).is_empty());
    }

    #[test]
    fn p95_rise_needs_a_model_change_and_enough_runs() {
        let mut f = AgentFigures {
            runs: 100,
            previous_runs: 100,
            models: vec![model("new", 80, 80, 8.0), model("old", 20, 20, 2.0)],
            previous_models: vec![model("old", 100, 100, 1.0)],
            p95_ms: Some(130.0),
            previous_p95_ms: Some(100.0),
            ..AgentFigures::default()
        };
        assert_eq!(rules(&f), ["p95_after_model_change"]);
        f.previous_models = vec![model("new", 100, 100, 1.0)];
        assert!(rules(&f).is_empty(), "same main model");
        f.previous_models = vec![model("old", 100, 100, 1.0)];
        f.previous_runs = 10;
        assert!(rules(&f).is_empty(), "too few runs before");
        f.previous_runs = 100;
        f.p95_ms = Some(120.0);
        assert!(rules(&f).is_empty(), "a 20% rise is under the threshold");
    }

    #[test]
    fn a_dominant_error_type_is_critical_and_first() {
        let f = AgentFigures {
            failures: 40,
            error_types: vec![
                ("RateLimit".into(), 25),
                ("Timeout".into(), 5),
                ("".into(), 10),
            ],
            error_rate: Some(0.4),
            workspace_error_rate: Some(0.1),
            ..AgentFigures::default()
        };
        let s = suggest(&f);
        assert_eq!(rules(&f), ["dominant_error", "error_rate_above_workspace"]);
        assert_eq!(s[0].evidence["error_type"], "RateLimit");
        assert_eq!(s[0].evidence["share"], 25.0 / 40.0);
        // Below the share, or too few failures: nothing.
        let f = AgentFigures {
            failures: 40,
            error_types: vec![("RateLimit".into(), 19), ("Timeout".into(), 18)],
            ..AgentFigures::default()
        };
        assert!(rules(&f).is_empty());
        let f = AgentFigures {
            failures: 5,
            error_types: vec![("RateLimit".into(), 5)],
            ..AgentFigures::default()
        };
        assert!(rules(&f).is_empty());
    }

    #[test]
    fn unused_allocations_need_enough_heartbeats() {
        let f = AgentFigures {
            cpu: Some(Allocation {
                mean_use: 0.1,
                samples: 100,
            }),
            mem: Some(Allocation {
                mean_use: 0.1,
                samples: 10,
            }),
            ..AgentFigures::default()
        };
        assert_eq!(rules(&f), ["cpu_allocation_unused"]);
    }
}
