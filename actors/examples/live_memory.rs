//! Resident memory of one workspace's live windows under the adversarial pattern: every
//! agent has runs and heartbeats in every sub-bucket of all five windows (24 h of event time),
//! each sub-bucket with `--models` distinct models and `--values` distinct runtimes and CPU
//! readings spread over twelve decades (so every quantile sketch takes a bin per value), read
//! from VmRSS. The agents' windows are held to `limits.max_agent_window_bytes` (`--budget`,
//! MiB); past it new events count under `_other`, so RSS stops growing however many agents
//! are sent.
//!
//! With `--steady 1` the agents behave instead: each completes a run every 10 s over the
//! whole day (two models, runtimes between 0.2 and 5 s) and sends a heartbeat every 15 s —
//! what an ordinary busy agent costs, to size the budget.
//!
//! `cargo run --release -p shadower-actors --example live_memory -- [--agents 10000]
//!  [--models 40] [--values 64] [--per-agent 16] [--budget 256] [--steady 1]`

mod common;

use chrono::{Duration, TimeZone, Utc};
use shadower_actors::domain::event::{Event, EventKind, Heartbeat};
use shadower_actors::domain::ids::{AgentId, EventId};
use shadower_actors::domain::live::{LiveRules, LiveState};
use shadower_actors::domain::window::Window;

use common::{arg, rss_kib, succeeded_run};

fn main() {
    let (agents, models, values) = (
        arg("--agents", 10_000),
        arg("--models", 40),
        arg("--values", 64),
    );
    let budget_mib = arg("--budget", 256);
    let steady = arg("--steady", 0) == 1;
    let rules = LiveRules {
        max_agents: 10_000,
        max_models: 1_000,
        max_models_per_agent: arg("--per-agent", 16),
        max_agent_bytes: budget_mib << 20,
        stale_after: Duration::seconds(60),
    };
    let now = Utc.timestamp_opt(1_767_225_600, 0).unwrap();
    // One event time in every sub-bucket of every window.
    let mut times = Vec::new();
    for w in Window::ALL {
        for b in 0..w.buckets() {
            times.push(now - Duration::milliseconds(b * w.bucket_ms() + 1));
        }
    }
    let model_names: Vec<String> = (0..rules.max_models + 50)
        .map(|m| format!("model-{m}"))
        .collect();
    // Twelve decades in `values` steps: each value its own sketch bin.
    let spread: Vec<f64> = (0..values.max(1))
        .map(|i| 10f64.powf(-3.0 + 12.0 * i as f64 / values.max(1) as f64))
        .collect();
    let event_id = EventId::parse("e").unwrap();
    let before = rss_kib();
    let mut live = LiveState::new(rules);
    let mut applied = 0u64;
    if steady {
        let models = ["gpt-4o".to_string(), "claude".to_string()];
        for a in 0..agents {
            let agent = AgentId::parse(&format!("agent-{a}")).unwrap();
            // Oldest first, as a day of live traffic arrives.
            for s in (0..86_400i64).rev() {
                let at = now - Duration::seconds(s) - Duration::milliseconds(a as i64 % 1000);
                if s % 10 == 0 {
                    let runtime = 200.0 + ((s * 7919 + a as i64 * 31) % 4_800) as f64;
                    let model = models[(s / 10) as usize % 2].clone();
                    live.apply(
                        &succeeded_run(&event_id, &agent, at, runtime, Some(model)),
                        now,
                    );
                    applied += 1;
                }
                if s % 15 == 0 {
                    let cpu = 5.0 + ((s * 13 + a as i64) % 900) as f64 / 10.0;
                    live.apply(&heartbeat(&event_id, &agent, at, cpu), now);
                    applied += 1;
                }
            }
        }
    } else {
        // The adversarial pattern.
        for a in 0..agents {
            let agent = AgentId::parse(&format!("agent-{a}")).unwrap();
            for (t, at) in times.iter().enumerate() {
                for i in 0..models.max(values) {
                    let model = (i < models)
                        .then(|| model_names[(a * 7 + t * 13 + i) % model_names.len()].clone());
                    let value = spread[(i + t) % spread.len()];
                    live.apply(&succeeded_run(&event_id, &agent, *at, value, model), now);
                    live.apply(&heartbeat(&event_id, &agent, *at, value.min(1e6)), now);
                    applied += 2;
                }
            }
        }
    }
    let after = rss_kib();
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "steady={} agents={agents} sub-buckets/agent={} models/sub-bucket={models} values/sub-bucket={values} \
         kept_per_agent={} events={applied} budget_mib={budget_mib} accounted_mib={:.1} \
         diverted_to_other={} rss_kib={before}->{after} rss_grown_mib={grown_mib:.1} \
         rss_per_accounted={:.2} accounted_kib_per_agent={:.1} agents_held={} workspace_24h_runs={}",
        u8::from(steady),
        times.len(),
        rules.max_models_per_agent,
        live.agent_bytes() as f64 / (1 << 20) as f64,
        live.overflow_memory_events,
        grown_mib * (1 << 20) as f64 / live.agent_bytes().max(1) as f64,
        live.agent_bytes() as f64 / 1024.0 / (live.agent_count().max(1) as f64),
        live.agent_count(),
        live.execution(None, Window::H24, now).runs,
    );
}

fn heartbeat(
    event_id: &EventId,
    agent: &AgentId,
    ts: chrono::DateTime<Utc>,
    cpu_pct: f64,
) -> Event {
    Event {
        event_id: event_id.clone(),
        agent_id: agent.clone(),
        kind: EventKind::Heartbeat(Heartbeat {
            ts,
            cpu_pct: Some(cpu_pct),
            mem_mb: Some(512.0),
            mem_limit_mb: Some(2048.0),
            cpu_limit_cores: Some(2.0),
            concurrent_runs: Some(1),
            queue_depth: Some(0),
        }),
    }
}
