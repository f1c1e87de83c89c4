//! Parse cost of full-size (10 MiB) ingest bodies of hostile shapes: it must stay linear in
//! the size, tens of milliseconds for the largest body whatever it holds.
//! `cargo bench -p shadower-actors --bench hostile`

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shadower_actors::domain::ingest::{parse_events, BodyFormat, IngestRules};

/// `ingest.max_body_bytes`'s default.
const SIZE: usize = 10 * 1024 * 1024;

fn rules() -> IngestRules {
    IngestRules {
        max_events: 10_000,
        max_keys_per_event: 64,
        max_age: Duration::days(7),
        max_future: Duration::minutes(5),
    }
}

fn run(ts: &str, i: usize, extra: &str) -> String {
    format!(
        r#"{{"type":"run","event_id":"e-{i}","agent_id":"agent-{}","status":"succeeded","completed_at":"{ts}","runtime_ms":12.5,"model":"gpt-4o"{extra}}}"#,
        i % 50
    )
}

/// Repeats `unit` until the body reaches `SIZE`, between `head` and `tail`.
fn fill(head: &str, unit: &str, sep: &str, tail: &str) -> String {
    let n = (SIZE - head.len() - tail.len()) / (unit.len() + sep.len());
    let mut body = String::with_capacity(SIZE);
    body.push_str(head);
    for i in 0..n {
        if i > 0 {
            body.push_str(sep);
        }
        body.push_str(unit);
    }
    body.push_str(tail);
    body
}

/// The hostile shapes, each a full-size body, by name.
fn shapes() -> Vec<(&'static str, String)> {
    let ts = (Utc::now() - Duration::seconds(5)).to_rfc3339();
    let head = run(&ts, 0, "");
    let open = &head[..head.len() - 1];
    // Unique short keys in one event object: the shape that took 60 s for 2 MB before.
    let mut many_keys = String::with_capacity(SIZE);
    many_keys.push_str(r#"{"events":["#);
    many_keys.push_str(open);
    let mut i = 0usize;
    while many_keys.len() < SIZE - 32 {
        many_keys.push_str(&format!(r#","k{i:x}":1"#));
        i += 1;
    }
    many_keys.push_str("}]}");
    let pad = format!(
        r#","pad":"{}""#,
        "x".repeat(SIZE / 10_000 - head.len() - 16)
    );
    let valid: Vec<String> = (0..10_000).map(|i| run(&ts, i, &pad)).collect();
    let valid = format!(r#"{{"events":[{}]}}"#, valid.join(","));
    let dup_keys = fill(&format!(r#"{{"events":[{open}"#), r#","a":1"#, "", "}]}");
    let deep = format!(
        r#"{{"events":[{open},"x":{}1{}}}]}}"#,
        "[".repeat(SIZE / 2 - 200),
        "]".repeat(SIZE / 2 - 200)
    );
    let long_string = format!(
        r#"{{"events":[{open},"note":"{}"}}]}}"#,
        "y".repeat(SIZE - 400)
    );
    let escapes = format!(
        r#"{{"events":[{open},"note":"{}"}}]}}"#,
        r"\u00e9".repeat((SIZE - 400) / 6)
    );
    let tiny_events = fill(r#"{"events":["#, "{}", ",", "]}");
    let wide_error = fill(
        &format!(r#"{{"events":[{open},"error":{{"type":"x""#),
        r#","z":[1,2]"#,
        "",
        "}}]}",
    );
    vec![
        ("valid_10000_runs", valid),
        ("many_keys_one_event", many_keys),
        ("one_key_repeated", dup_keys),
        ("deep_nesting_unknown_key", deep),
        ("one_long_string", long_string),
        ("escaped_string", escapes),
        ("empty_objects_past_max_events", tiny_events),
        ("wide_error_object", wide_error),
    ]
}

fn bench(c: &mut Criterion) {
    let now = Utc::now();
    let mut g = c.benchmark_group("hostile_10mib");
    g.sample_size(10)
        .measurement_time(StdDuration::from_secs(4))
        .warm_up_time(StdDuration::from_secs(1));
    for (name, body) in shapes() {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_events(body.as_bytes(), BodyFormat::Json, &rules(), now))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
