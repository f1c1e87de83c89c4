//! What the memory examples share: the process's resident memory, their flags, and the
//! runs they feed.

use chrono::{DateTime, Utc};
use shadower_actors::domain::event::{Event, EventKind, Run, RunStatus};
use shadower_actors::domain::ids::{AgentId, EventId};

/// A succeeded run of `agent` completed at `at` (the amounts do not change memory).
pub fn succeeded_run(
    event_id: &EventId,
    agent: &AgentId,
    at: DateTime<Utc>,
    runtime_ms: f64,
    model: Option<String>,
) -> Event {
    Event {
        event_id: event_id.clone(),
        agent_id: agent.clone(),
        kind: EventKind::Run(Run {
            run_id: None,
            user_id: None,
            status: RunStatus::Succeeded,
            started_at: None,
            completed_at: at,
            runtime_ms,
            credits: 0.5,
            tokens_in: 10,
            tokens_out: 5,
            model,
            error: None,
        }),
    }
}

/// VmRSS of this process in KiB (0 where /proc is not there).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The number after flag `name`, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}
