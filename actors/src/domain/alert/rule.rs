//! Alert rules as the API accepts them ([`RuleSpec`]) and as the evaluator uses them
//! ([`Rule`]). [`RuleSpec::validate`] is the one parser: the handlers run it on every write
//! and the workspace actor on every load, so a stored rule is always a valid one.

use std::sync::Arc;

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::domain::anomaly::Metric as AnomalyMetric;
use crate::domain::duration::HubDuration;
use crate::domain::ids::AgentId;
use crate::domain::ingest::FieldError;
use crate::domain::window::Window;

/// Longest rule name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Most channels one rule notifies.
pub const MAX_CHANNELS: usize = 16;

/// The metrics a rule can watch (SPEC §5 glossary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    ErrorRate,
    SuccessRate,
    RuntimeP50,
    RuntimeP95,
    RuntimeP99,
    ThroughputPerMin,
    CreditsPerHour,
    TokensPerMin,
    CpuPctAvg,
    CpuPctMax,
    MemPctMax,
    HeartbeatAgeS,
    AnomalyScore,
}

/// Which events move a metric: rules are indexed by it, so a batch of heartbeats never
/// evaluates run-based rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Runs,
    Heartbeats,
    /// The anomaly detector's scores, which move when a bucket closes (on the timer).
    Anomalies,
}

impl Metric {
    pub const ALL: [Metric; 13] = [
        Self::ErrorRate,
        Self::SuccessRate,
        Self::RuntimeP50,
        Self::RuntimeP95,
        Self::RuntimeP99,
        Self::ThroughputPerMin,
        Self::CreditsPerHour,
        Self::TokensPerMin,
        Self::CpuPctAvg,
        Self::CpuPctMax,
        Self::MemPctMax,
        Self::HeartbeatAgeS,
        Self::AnomalyScore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::SuccessRate => "success_rate",
            Self::RuntimeP50 => "runtime_p50",
            Self::RuntimeP95 => "runtime_p95",
            Self::RuntimeP99 => "runtime_p99",
            Self::ThroughputPerMin => "throughput_per_min",
            Self::CreditsPerHour => "credits_per_hour",
            Self::TokensPerMin => "tokens_per_min",
            Self::CpuPctAvg => "cpu_pct_avg",
            Self::CpuPctMax => "cpu_pct_max",
            Self::MemPctMax => "mem_pct_max",
            Self::HeartbeatAgeS => "heartbeat_age_s",
            Self::AnomalyScore => "anomaly_score",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn source(self) -> Source {
        match self {
            Self::CpuPctAvg | Self::CpuPctMax | Self::MemPctMax | Self::HeartbeatAgeS => {
                Source::Heartbeats
            }
            Self::AnomalyScore => Source::Anomalies,
            _ => Source::Runs,
        }
    }

    /// Whether `min_samples` applies. Rates over time (throughput, credits, tokens) and the
    /// heartbeat age mean something with no sample at all — that is what absence alerts
    /// watch — so they ignore it; ratios, quantiles and gauges need enough samples.
    pub fn uses_min_samples(self) -> bool {
        !matches!(
            self,
            Self::ThroughputPerMin
                | Self::CreditsPerHour
                | Self::TokensPerMin
                | Self::HeartbeatAgeS
                | Self::AnomalyScore
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "<" => Self::Lt,
            "<=" => Self::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertSeverity {
    Info,
    Warning,
    Critical,
}

impl AlertSeverity {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "info" => Self::Info,
            "warning" => Self::Warning,
            "critical" => Self::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One alert for the workspace, or one per agent (`agent` with `agent_id: null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Workspace,
    Agent,
}

/// What a firing alert does when its window falls under `min_samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    Keep,
    Resolve,
}

/// A rule as written by API clients and stored in `alert_rules.spec`. Optional fields are
/// filled with their defaults by [`RuleSpec::validate`], which returns the normalised spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub metric: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default = "default_window")]
    pub window: String,
    pub op: String,
    pub threshold: serde_json::Value,
    #[serde(rename = "for", default = "zero")]
    pub for_: String,
    #[serde(default)]
    pub min_samples: u64,
    #[serde(default = "default_severity")]
    pub severity: String,
    #[serde(default = "zero")]
    pub cooldown: String,
    #[serde(default)]
    pub channel_ids: Vec<String>,
    #[serde(default = "default_group_by")]
    pub group_by: String,
    #[serde(default)]
    pub anomaly_metric: Option<String>,
    #[serde(default = "default_no_data")]
    pub no_data: String,
    #[serde(default)]
    pub repeat_interval: Option<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn default_window() -> String {
    "5m".into()
}
fn zero() -> String {
    "0s".into()
}
fn default_severity() -> String {
    "warning".into()
}
fn default_group_by() -> String {
    "workspace".into()
}
fn default_no_data() -> String {
    "keep".into()
}
fn enabled() -> bool {
    true
}

/// A validated rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Arc<str>,
    pub name: String,
    pub metric: Metric,
    pub agent_id: Option<AgentId>,
    pub window: Window,
    pub op: Op,
    pub threshold: f64,
    pub for_: Duration,
    pub min_samples: u64,
    pub severity: AlertSeverity,
    pub cooldown: Duration,
    pub channel_ids: Vec<String>,
    pub group_by: GroupBy,
    pub no_data: NoData,
    pub repeat_interval: Option<Duration>,
    pub enabled: bool,
    /// The detector series an `anomaly_score` rule watches.
    pub anomaly_metric: Option<AnomalyMetric>,
}

impl Rule {
    /// Whether the rule keeps one alert per agent.
    pub fn per_agent(&self) -> bool {
        self.agent_id.is_none() && self.group_by == GroupBy::Agent
    }
}

/// Whether `s` is a UUID in its canonical text form (channel and rule ids).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl RuleSpec {
    /// Checks every field and returns the rule with id `id`, or every problem found.
    pub fn validate(&self, id: &str) -> Result<Rule, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(FieldError {
                index: 0,
                field: field.into(),
                message,
            })
        };
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > MAX_NAME_LEN {
            bad("name", format!("must be 1 to {MAX_NAME_LEN} characters"));
        }
        if self.name.chars().any(char::is_control) {
            bad("name", "must not contain control characters".into());
        }
        let metric = Metric::parse(&self.metric);
        if metric.is_none() {
            bad(
                "metric",
                format!(
                    "unknown metric `{}`; one of {}",
                    clip(&self.metric),
                    Metric::ALL.map(Metric::as_str).join(", ")
                ),
            );
        }
        let anomaly_metric = match (metric, self.anomaly_metric.as_deref()) {
            (Some(Metric::AnomalyScore), Some(m)) => {
                let parsed = AnomalyMetric::parse(m);
                if parsed.is_none() {
                    bad(
                        "anomaly_metric",
                        format!(
                            "unknown detector metric `{}`; one of {}",
                            clip(m),
                            AnomalyMetric::ALL.map(AnomalyMetric::as_str).join(", ")
                        ),
                    );
                }
                parsed
            }
            (Some(Metric::AnomalyScore), None) => {
                bad(
                    "anomaly_metric",
                    format!(
                        "anomaly_score rules name the detector series: one of {}",
                        AnomalyMetric::ALL.map(AnomalyMetric::as_str).join(", ")
                    ),
                );
                None
            }
            (_, Some(_)) => {
                bad(
                    "anomaly_metric",
                    "only applies to anomaly_score rules".into(),
                );
                None
            }
            (_, None) => None,
        };
        let agent_id = match self.agent_id.as_deref().map(AgentId::parse).transpose() {
            Ok(a) => a,
            Err(e) => {
                bad("agent_id", format!("agent_id {e}"));
                None
            }
        };
        let window = self.window.parse::<Window>().map_err(|e| e.to_string());
        if let Err(e) = &window {
            bad("window", e.clone());
        }
        let op = Op::parse(&self.op);
        if op.is_none() {
            bad("op", "must be one of >, >=, <, <=".into());
        }
        let threshold = self.threshold.as_f64().filter(|t| t.is_finite());
        if threshold.is_none() {
            bad("threshold", "must be a finite number".into());
        }
        let mut duration = |field: &str, text: &str| match text.parse::<HubDuration>() {
            Ok(d) if d.get() <= std::time::Duration::from_secs(30 * 86_400) => Some(d.to_chrono()),
            Ok(_) => {
                bad(field, "must be at most 30d".into());
                None
            }
            Err(e) => {
                bad(field, e.to_string());
                None
            }
        };
        let for_ = duration("for", &self.for_);
        let cooldown = duration("cooldown", &self.cooldown);
        let repeat_interval = match self.repeat_interval.as_deref() {
            Some(text) => match duration("repeat_interval", text) {
                Some(d) if d < Duration::seconds(1) => {
                    errors.push(FieldError {
                        index: 0,
                        field: "repeat_interval".into(),
                        message: "must be at least 1s".into(),
                    });
                    None
                }
                d => d,
            },
            None => None,
        };
        let severity = AlertSeverity::parse(&self.severity);
        if severity.is_none() {
            errors.push(FieldError {
                index: 0,
                field: "severity".into(),
                message: "must be one of info, warning, critical".into(),
            });
        }
        let group_by = match self.group_by.as_str() {
            "workspace" => Some(GroupBy::Workspace),
            "agent" => Some(GroupBy::Agent),
            _ => None,
        };
        let no_data = match self.no_data.as_str() {
            "keep" => Some(NoData::Keep),
            "resolve" => Some(NoData::Resolve),
            _ => None,
        };
        let mut field_error = |field: &str, message: &str| {
            errors.push(FieldError {
                index: 0,
                field: field.into(),
                message: message.into(),
            })
        };
        if group_by.is_none() {
            field_error("group_by", "must be workspace or agent");
        }
        if no_data.is_none() {
            field_error("no_data", "must be keep or resolve");
        }
        if self.min_samples > 1_000_000_000 {
            field_error("min_samples", "must be at most 1000000000");
        }
        if self.channel_ids.len() > MAX_CHANNELS {
            field_error("channel_ids", "at most 16 channels per rule");
        }
        for (i, c) in self.channel_ids.iter().enumerate() {
            if !is_uuid(c) {
                field_error(&format!("channel_ids[{i}]"), "is not a channel id");
            }
        }
        let mut unique = self.channel_ids.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != self.channel_ids.len() {
            field_error("channel_ids", "lists a channel twice");
        }
        match (
            errors.is_empty(),
            metric,
            window,
            op,
            threshold,
            for_,
            cooldown,
            severity,
            group_by,
            no_data,
        ) {
            (
                true,
                Some(metric),
                Ok(window),
                Some(op),
                Some(threshold),
                Some(for_),
                Some(cooldown),
                Some(severity),
                Some(group_by),
                Some(no_data),
            ) => Ok(Rule {
                id: Arc::from(id),
                name: name.to_string(),
                metric,
                agent_id,
                window,
                op,
                threshold,
                for_,
                min_samples: self.min_samples,
                severity,
                cooldown,
                channel_ids: self.channel_ids.iter().map(|c| c.to_lowercase()).collect(),
                group_by,
                no_data,
                repeat_interval,
                enabled: self.enabled,
                anomaly_metric,
            }),
            _ => Err(errors),
        }
    }
}

/// At most 32 characters of client input, for echoing it in an error.
fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}
