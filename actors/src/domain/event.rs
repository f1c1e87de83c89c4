//! Validated domain events. Built only by [`crate::domain::ingest`]; every value here has
//! passed the contract's rules (finite, non-negative, bounded strings, known enums).

use chrono::{DateTime, Utc};

use super::ids::{AgentId, EventId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Succeeded,
    Failed,
    Timeout,
    Cancelled,
}

impl RunStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "timeout" => Self::Timeout,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            "critical" => Self::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// The optional `error` object of a failed run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunError {
    pub error_type: Option<String>,
    pub category: Option<String>,
    pub severity: Option<Severity>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub run_id: Option<String>,
    pub user_id: Option<String>,
    pub status: RunStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: DateTime<Utc>,
    /// Given, or `completed_at − started_at` when absent.
    pub runtime_ms: f64,
    pub credits: f64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub model: Option<String>,
    pub error: Option<RunError>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub ts: DateTime<Utc>,
    pub cpu_pct: Option<f64>,
    pub mem_mb: Option<f64>,
    pub mem_limit_mb: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
    pub concurrent_runs: Option<i64>,
    pub queue_depth: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub user_id: Option<String>,
    pub ts: DateTime<Utc>,
    pub rating: i16,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Run(Run),
    Heartbeat(Heartbeat),
    Feedback(Feedback),
}

/// One validated event of a workspace (the workspace is carried by the batch).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: EventId,
    pub agent_id: AgentId,
    pub kind: EventKind,
}

impl Event {
    /// Event time: runs by `completed_at`, heartbeats and feedback by `ts`.
    pub fn time(&self) -> DateTime<Utc> {
        match &self.kind {
            EventKind::Run(r) => r.completed_at,
            EventKind::Heartbeat(h) => h.ts,
            EventKind::Feedback(f) => f.ts,
        }
    }

    /// Stored in `ingested_events.kind`.
    pub fn kind_code(&self) -> i16 {
        match self.kind {
            EventKind::Run(_) => 1,
            EventKind::Heartbeat(_) => 2,
            EventKind::Feedback(_) => 3,
        }
    }
}
