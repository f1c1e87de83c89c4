//! Per-core costs of the ingest hot path: parse + validate, window apply, sketch insert.
//! `cargo bench -p shadower-actors --bench core`

use chrono::{Duration, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shadower_actors::domain::ingest::{parse_events, BodyFormat, IngestRules};
use shadower_actors::domain::live::{LiveRules, LiveState};
use shadower_actors::domain::sketch::Sketch;

const N: usize = 1_000;

fn body(now: chrono::DateTime<Utc>) -> String {
    let ts = (now - Duration::seconds(5)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events: Vec<String> = (0..N)
        .map(|i| {
            format!(
                r#"{{"type":"run","event_id":"5b3e0f2a-9c1d-4e8b-a1f0-{i:012}","agent_id":"agent-{}","run_id":"r-{i}","user_id":"u-9","status":"succeeded","completed_at":"{ts}","runtime_ms":{}.5,"credits":0.42,"tokens_in":812,"tokens_out":240,"model":"gpt-4o","error":null}}"#,
                i % 50,
                50 + (i * 37) % 5000
            )
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

fn rules() -> IngestRules {
    IngestRules {
        max_events: 10_000,
        max_keys_per_event: 64,
        max_age: Duration::days(7),
        max_future: Duration::minutes(5),
    }
}

fn bench(c: &mut Criterion) {
    let now = Utc::now();
    let body = body(now);
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("parse_validate_1000_runs", |b| {
        b.iter(|| parse_events(body.as_bytes(), BodyFormat::Json, &rules(), now).unwrap())
    });
    let events = parse_events(body.as_bytes(), BodyFormat::Json, &rules(), now).unwrap();
    let live_rules = LiveRules {
        max_agents: 10_000,
        max_models: 1_000,
        max_models_per_agent: 16,
        max_agent_bytes: usize::MAX,
        stale_after: Duration::seconds(60),
    };
    let mut warm = LiveState::new(live_rules);
    events.iter().for_each(|e| warm.apply(e, now));
    g.bench_function("window_apply_1000_runs", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |live| events.iter().for_each(|e| live.apply(e, now)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sketch_insert_1000", |b| {
        b.iter_batched_ref(
            Sketch::new,
            |s| (0..N).for_each(|i| s.add(50.0 + ((i * 7919) % 5000) as f64)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    c.bench_function("window_read_5m_workspace", |b| {
        b.iter(|| warm.execution(None, shadower_actors::domain::window::Window::M5, now))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
