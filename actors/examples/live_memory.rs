//! Resident memory of one workspace's live windows under the adversarial pattern: every
//! agent has runs in every sub-bucket of all five windows (24 h of event time), each
//! sub-bucket with `--models` distinct new models, read from VmRSS. The workspace's memory
//! is bounded by `limits.max_agents_per_workspace` × the per-agent figure printed here
//! (each agent keeps at most `limits.max_models_per_agent` models apart per sub-bucket).
//!
//! `cargo run --release -p shadower-actors --example live_memory -- [--agents 1000] [--models 40]
//!  [--per-agent 16]` (`--per-agent`: `limits.max_models_per_agent`)

mod common;

use chrono::{Duration, TimeZone, Utc};
use shadower_actors::domain::ids::{AgentId, EventId};
use shadower_actors::domain::live::{LiveRules, LiveState};
use shadower_actors::domain::window::Window;

use common::{arg, rss_kib, succeeded_run};

fn main() {
    let (agents, models) = (arg("--agents", 1_000), arg("--models", 40));
    let per_agent_models = arg("--per-agent", 16);
    let rules = LiveRules {
        max_agents: 10_000,
        max_models: 1_000,
        max_models_per_agent: per_agent_models,
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
    let event_id = EventId::parse("e").unwrap();
    let before = rss_kib();
    let mut live = LiveState::new(rules);
    let mut applied = 0u64;
    for a in 0..agents {
        let agent = AgentId::parse(&format!("agent-{a}")).unwrap();
        for (t, at) in times.iter().enumerate() {
            for m in 0..models {
                let model = &model_names[(a * 7 + t * 13 + m) % model_names.len()];
                let runtime = 10.0 + (applied % 5_000) as f64;
                let run = succeeded_run(&event_id, &agent, *at, runtime, Some(model.clone()));
                live.apply(&run, now);
                applied += 1;
            }
        }
    }
    let after = rss_kib();
    let per_agent = (after.saturating_sub(before)) as f64 / agents as f64;
    println!(
        "agents={agents} sub-buckets/agent={} models/sub-bucket sent={models} kept={per_agent_models} runs={applied} \
         rss_kib={before}->{after} per_agent_kib={per_agent:.1} \
         ceiling_at_10000_agents_mib={:.0} workspace_models={}",
        times.len(),
        per_agent * 10_000.0 / 1024.0,
        live.execution(None, Window::H24, now).models.len(),
    );
}
