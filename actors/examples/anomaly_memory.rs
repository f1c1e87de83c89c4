//! Resident memory of live anomaly detection: one workspace tracker following `--agents`
//! agents (each with the four run metrics and cpu, plus the workspace series), fed a run
//! and a heartbeat per agent per bucket for `--buckets` buckets, read from VmRSS.
//!
//! `cargo run --release -p shadower-actors --example anomaly_memory -- [--agents 2000] [--buckets 30]`

mod common;

use chrono::{TimeZone, Utc};
use shadower_actors::domain::anomaly::track::{Tracker, TrackerConfig};
use shadower_actors::domain::anomaly::Config;
use shadower_actors::domain::event::{Event, EventKind, Heartbeat};
use shadower_actors::domain::ids::{AgentId, EventId};

use common::{arg, rss_kib, succeeded_run};

fn main() {
    let (agents, buckets) = (arg("--agents", 2_000), arg("--buckets", 30));
    let ids: Vec<AgentId> = (0..agents)
        .map(|i| AgentId::parse(&format!("agent-{i}")).unwrap())
        .collect();
    let event_id = EventId::parse("e").unwrap();
    let before = rss_kib();
    let mut tracker = Tracker::new(TrackerConfig {
        detector: Config::default(),
        grace_ms: 10_000,
        max_agents: agents,
    });
    let t0 = 1_767_225_600_000i64;
    for b in 0..buckets as i64 {
        let at = Utc.timestamp_millis_opt(t0 + b * 60_000 + 1_000).unwrap();
        for (i, agent) in ids.iter().enumerate() {
            let run = succeeded_run(&event_id, agent, at, 100.0 + i as f64, None);
            let hb = Event {
                event_id: event_id.clone(),
                agent_id: agent.clone(),
                kind: EventKind::Heartbeat(Heartbeat {
                    ts: at,
                    cpu_pct: Some(20.0),
                    mem_mb: None,
                    mem_limit_mb: None,
                    cpu_limit_cores: None,
                    concurrent_runs: None,
                    queue_depth: None,
                }),
            };
            tracker.apply(&run);
            tracker.apply(&hb);
        }
        tracker.close(t0 + (b + 1) * 60_000 + 10_000);
    }
    let after = rss_kib();
    let (series, detectors) = tracker.counts();
    let grown = after.saturating_sub(before);
    println!(
        "agents {agents}: {series} series, {detectors} detectors, RSS {before} -> {after} KiB (+{:.1} MiB), {:.0} B per detector, {:.2} MiB per 10 000 detector series",
        grown as f64 / 1024.0,
        grown as f64 * 1024.0 / detectors as f64,
        grown as f64 / 1024.0 * 10_000.0 / detectors as f64,
    );
    std::hint::black_box(&tracker);
}
