//! A batch's rollup deltas, computed in Rust (see `migrations/0005_rollups.sql`).
//!
//! The batch statement appends them when every event of the batch was new, which is the common
//! case; when some were already stored it computes the deltas of the new ones in SQL instead
//! (`sql/delta_*.sql`). Both must give the same rows, value for value, so every quantity is
//! computed here exactly as the SQL computes it: hours truncated in UTC, values quantized with
//! round-half-to-even (PostgreSQL's `round(float8)`), sketch bins with the same logarithm,
//! user hashes from the same SHA-256. The rollup exactness tests compare rollups built through
//! both paths with a recomputation in SQL from the raw rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use chrono::{DateTime, DurationRound, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::event::{EventKind, RunStatus};

use super::Row;

/// ln γ, γ = 1.009 ÷ 0.991, computed at run time with the C library's logarithm like
/// PostgreSQL's `ln(float8 '1.009' / float8 '0.991')` (a constant folded by the compiler
/// could differ in its last bit).
static LN_GAMMA: LazyLock<f64> =
    LazyLock::new(|| (std::hint::black_box(1.009_f64) / std::hint::black_box(0.991_f64)).ln());

/// `hub_sketch_key(ms)`: the sketch bin of a runtime, `None` for the zero bin.
pub fn sketch_key(ms: f64) -> Option<i32> {
    (ms > 1e-9).then(|| (ms.ln() / *LN_GAMMA).ceil() as i32)
}

/// `round(x * scale)::int8`.
fn quantize(x: f64, scale: f64) -> i128 {
    (x * scale).round_ties_even() as i64 as i128
}

/// `hub_user_hash(user_id)`: the first 8 bytes of its SHA-256, big-endian, as an int8.
pub fn user_hash(user: &str) -> i64 {
    let digest = Sha256::digest(user.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("32 bytes"))
}

fn hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::hours(1)).unwrap_or(t)
}

#[derive(Default, Serialize)]
struct RunDelta {
    runs: i64,
    succeeded: i64,
    failed: i64,
    timeout: i64,
    cancelled: i64,
    runtime_us: i128,
    runtime_min: f64,
    runtime_max: f64,
    #[serde(skip)]
    bins: BTreeMap<Option<i32>, i64>,
    sketch_bins: Vec<Option<i32>>,
    sketch_counts: Vec<i64>,
    credits_micro: i128,
    tokens_in: i128,
    tokens_out: i128,
    #[serde(skip)]
    user_set: BTreeSet<i64>,
    users: Option<Vec<i64>>,
}

#[derive(Default, Serialize)]
struct ModelDelta {
    runs: i64,
    succeeded: i64,
    runtime_us: i128,
    credits_micro: i128,
    tokens_in: i128,
    tokens_out: i128,
}

#[derive(Default, Serialize)]
struct ResourceDelta {
    samples: i64,
    cpu_n: i64,
    cpu_milli: i128,
    cpu_max: Option<f64>,
    mem_n: i64,
    mem_milli: i128,
    mem_max: Option<f64>,
    cpu_limit_n: i64,
    cpu_limit_milli: i128,
    mem_limit_n: i64,
    mem_limit_milli: i128,
    cpu_use_n: i64,
    cpu_use_micro: i128,
    mem_use_n: i64,
    mem_use_micro: i128,
    concurrent_max: Option<i64>,
    queue_max: Option<i64>,
}

#[derive(Default, Serialize)]
struct FeedbackDelta {
    feedback: i64,
    rating_sum: i64,
    r1: i64,
    r2: i64,
    r3: i64,
    r4: i64,
    r5: i64,
}

fn max_opt<T: PartialOrd + Copy>(acc: Option<T>, v: Option<T>) -> Option<T> {
    match (acc, v) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The deltas of every event in `rows`, as the JSON arrays the batch statement reads with
/// `jsonb_populate_recordset` (runs, models, errors, resources, feedback).
pub fn of(rows: &[Row<'_>]) -> [Value; 5] {
    type Key<'a> = (&'a str, &'a str, DateTime<Utc>);
    let mut runs: BTreeMap<Key, RunDelta> = BTreeMap::new();
    let mut models: BTreeMap<(Key, &str), ModelDelta> = BTreeMap::new();
    let mut errors: BTreeMap<(Key, &str, &str), i64> = BTreeMap::new();
    let mut resources: BTreeMap<Key, ResourceDelta> = BTreeMap::new();
    let mut feedback: BTreeMap<Key, FeedbackDelta> = BTreeMap::new();
    for &(ws, e) in rows {
        let agent = e.agent_id.as_str();
        match &e.kind {
            EventKind::Run(r) => {
                let key = (ws.as_str(), agent, hour(r.completed_at));
                let d = runs.entry(key).or_default();
                if d.runs == 0 {
                    d.runtime_min = r.runtime_ms;
                    d.runtime_max = r.runtime_ms;
                }
                d.runs += 1;
                match r.status {
                    RunStatus::Succeeded => d.succeeded += 1,
                    RunStatus::Failed => d.failed += 1,
                    RunStatus::Timeout => d.timeout += 1,
                    RunStatus::Cancelled => d.cancelled += 1,
                }
                let runtime_us = quantize(r.runtime_ms, 1000.0);
                let credits_micro = quantize(r.credits, 1e6);
                d.runtime_us += runtime_us;
                d.runtime_min = d.runtime_min.min(r.runtime_ms);
                d.runtime_max = d.runtime_max.max(r.runtime_ms);
                *d.bins.entry(sketch_key(r.runtime_ms)).or_default() += 1;
                d.credits_micro += credits_micro;
                d.tokens_in += r.tokens_in as i128;
                d.tokens_out += r.tokens_out as i128;
                if let Some(user) = &r.user_id {
                    d.user_set.insert(user_hash(user));
                }
                let m = models
                    .entry((key, r.model.as_deref().unwrap_or("")))
                    .or_default();
                m.runs += 1;
                m.succeeded += (r.status == RunStatus::Succeeded) as i64;
                m.runtime_us += runtime_us;
                m.credits_micro += credits_micro;
                m.tokens_in += r.tokens_in as i128;
                m.tokens_out += r.tokens_out as i128;
                if let Some(err) = &r.error {
                    *errors
                        .entry((
                            key,
                            err.error_type.as_deref().unwrap_or(""),
                            err.category.as_deref().unwrap_or(""),
                        ))
                        .or_default() += 1;
                }
            }
            EventKind::Heartbeat(h) => {
                let d = resources
                    .entry((ws.as_str(), agent, hour(h.ts)))
                    .or_default();
                d.samples += 1;
                if let Some(cpu) = h.cpu_pct {
                    d.cpu_n += 1;
                    d.cpu_milli += quantize(cpu, 1000.0);
                    d.cpu_max = max_opt(d.cpu_max, Some(cpu));
                }
                if let Some(mem) = h.mem_mb {
                    d.mem_n += 1;
                    d.mem_milli += quantize(mem, 1000.0);
                    d.mem_max = max_opt(d.mem_max, Some(mem));
                }
                if let Some(cores) = h.cpu_limit_cores {
                    d.cpu_limit_n += 1;
                    d.cpu_limit_milli += quantize(cores, 1000.0);
                    if let Some(cpu) = h.cpu_pct.filter(|_| cores > 0.0) {
                        d.cpu_use_n += 1;
                        d.cpu_use_micro += quantize((cpu / (100.0 * cores)).min(1e6), 1e6);
                    }
                }
                if let Some(limit) = h.mem_limit_mb {
                    d.mem_limit_n += 1;
                    d.mem_limit_milli += quantize(limit, 1000.0);
                    if let Some(mem) = h.mem_mb.filter(|_| limit > 0.0) {
                        d.mem_use_n += 1;
                        d.mem_use_micro += quantize((mem / limit).min(1e6), 1e6);
                    }
                }
                d.concurrent_max = max_opt(d.concurrent_max, h.concurrent_runs);
                d.queue_max = max_opt(d.queue_max, h.queue_depth);
            }
            EventKind::Feedback(f) => {
                let d = feedback
                    .entry((ws.as_str(), agent, hour(f.ts)))
                    .or_default();
                d.feedback += 1;
                d.rating_sum += f.rating as i64;
                match f.rating {
                    1 => d.r1 += 1,
                    2 => d.r2 += 1,
                    3 => d.r3 += 1,
                    4 => d.r4 += 1,
                    _ => d.r5 += 1,
                }
            }
        }
    }
    let keyed = |(ws, agent, bucket): Key, mut v: Value| {
        v["workspace_id"] = ws.into();
        v["agent_id"] = agent.into();
        v["bucket"] = Value::String(bucket.to_rfc3339());
        v
    };
    [
        Value::Array(
            runs.into_iter()
                .map(|(k, mut d)| {
                    let bins = std::mem::take(&mut d.bins);
                    (d.sketch_bins, d.sketch_counts) = bins.into_iter().unzip();
                    let users = std::mem::take(&mut d.user_set);
                    d.users = (!users.is_empty()).then(|| users.into_iter().collect());
                    keyed(k, to_json(&d))
                })
                .collect(),
        ),
        Value::Array(
            models
                .into_iter()
                .map(|((k, model), d)| {
                    let mut v = keyed(k, to_json(&d));
                    v["model"] = model.into();
                    v
                })
                .collect(),
        ),
        Value::Array(
            errors
                .into_iter()
                .map(|((k, error_type, category), n)| {
                    let mut v = keyed(k, serde_json::json!({ "errors": n }));
                    v["error_type"] = error_type.into();
                    v["category"] = category.into();
                    v
                })
                .collect(),
        ),
        Value::Array(
            resources
                .into_iter()
                .map(|(k, d)| keyed(k, to_json(&d)))
                .collect(),
        ),
        Value::Array(
            feedback
                .into_iter()
                .map(|(k, d)| keyed(k, to_json(&d)))
                .collect(),
        ),
    ]
}

fn to_json(delta: &impl Serialize) -> Value {
    serde_json::to_value(delta).expect("a delta serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizing_rounds_half_to_even_like_postgres() {
        assert_eq!(quantize(0.0005, 1000.0), 0);
        assert_eq!(quantize(0.0015, 1000.0), 2);
        assert_eq!(quantize(2.5, 1.0), 2);
        assert_eq!(quantize(3.5, 1.0), 4);
    }

    #[test]
    fn sketch_keys_bin_like_the_live_sketch() {
        assert_eq!(sketch_key(0.0), None);
        assert_eq!(sketch_key(1.0), Some(0));
        assert_eq!(sketch_key(1.01), Some(1));
        assert!(sketch_key(1e15).is_some());
    }

    #[test]
    fn user_hashes_are_the_first_bytes_of_sha256() {
        // The rollup tests check it against PostgreSQL's hub_user_hash; here only that it is
        // a function of the user.
        assert_eq!(user_hash("u-9"), user_hash("u-9"));
        assert_ne!(user_hash("u-9"), user_hash("u-8"));
    }
}
