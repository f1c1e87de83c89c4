//! Request bodies of run events, hand-formatted.
//!
//! Everything that does not change per event (agent id, status, runtime, tokens, model,
//! error) is pre-formatted once into a shared [`Fragments`] table; per event only the
//! event id, run id and `completed_at` are written. The timestamp is formatted at most
//! every [`STAMP_REFRESH`] per connection, so events are never older than that when built.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};

/// How stale a body's `completed_at` may be when built.
pub const STAMP_REFRESH: Duration = Duration::from_millis(100);

/// Distinct agents a workspace's events come from.
pub const AGENTS: usize = 50;

/// Pre-formatted event parts picked at random per event.
const FRAGMENTS: usize = 4096;

/// A small, fast, non-cryptographic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A seed that differs between runs and processes.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The per-event parts that do not depend on the event's identity or time.
#[derive(Debug)]
pub struct Fragments {
    /// `"agent_id":"agent-N",`
    agents: Vec<String>,
    /// `"status":…,"runtime_ms":…,…,"model":"…"}` (closes the event object).
    tails: Vec<String>,
}

impl Fragments {
    pub fn new(seed: u64) -> Arc<Self> {
        let mut rng = Rng::new(seed);
        let agents = (0..AGENTS)
            .map(|i| format!("\"agent_id\":\"agent-{i}\","))
            .collect();
        let tails = (0..FRAGMENTS).map(|_| tail(&mut rng)).collect();
        Arc::new(Self { agents, tails })
    }
}

/// One event's status and measurements: ~94% succeeded, 5% failed, 0.5% timeout, 0.5%
/// cancelled; runtime log-normal (median ~400ms) clamped to 50..5000ms.
fn tail(rng: &mut Rng) -> String {
    let p = rng.unit();
    let (status, error) = if p < 0.94 {
        ("succeeded", None)
    } else if p < 0.99 {
        (
            "failed",
            Some(
                r#"{"type":"ToolError","category":"tool","severity":"medium","message":"upstream tool returned 502"}"#,
            ),
        )
    } else if p < 0.995 {
        (
            "timeout",
            Some(
                r#"{"type":"Timeout","category":"timeout","severity":"high","message":"run exceeded its deadline"}"#,
            ),
        )
    } else {
        ("cancelled", None)
    };
    let runtime_ms = (400f64.ln() + 0.9 * rng.normal()).exp().clamp(50.0, 5000.0);
    let (model, in_price, out_price) = match rng.below(10) {
        0..=4 => ("gpt-4o", 2.5, 10.0),
        5..=7 => ("gpt-4o-mini", 0.15, 0.6),
        _ => ("claude-sonnet-4", 3.0, 15.0),
    };
    let tokens_in = 200 + rng.below(3800);
    let tokens_out = 50 + rng.below(1450);
    let credits = (tokens_in as f64 * in_price + tokens_out as f64 * out_price) / 10_000.0;
    let mut s = format!(
        "\"status\":\"{status}\",\"runtime_ms\":{runtime_ms:.1},\"credits\":{credits:.4},\
         \"tokens_in\":{tokens_in},\"tokens_out\":{tokens_out},\"model\":\"{model}\""
    );
    if let Some(error) = error {
        s.push_str(",\"error\":");
        s.push_str(error);
    }
    s.push('}');
    s
}

/// `completed_at` text, refreshed at most every [`STAMP_REFRESH`].
struct Stamp {
    text: String,
    at: Instant,
}

impl Stamp {
    fn new() -> Self {
        Self {
            text: now_rfc3339(),
            at: Instant::now(),
        }
    }

    fn refresh(&mut self) {
        if self.at.elapsed() >= STAMP_REFRESH {
            self.text = now_rfc3339();
            self.at = Instant::now();
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-24T10:00:00.123Z`.
fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Builds the bodies of one connection. Event ids are `<prefix>-<request>-<index>`, so
/// they are unique per run as long as prefixes are.
pub struct EventGen {
    prefix: String,
    request: u64,
    rng: Rng,
    stamp: Stamp,
    fragments: Arc<Fragments>,
    /// Largest body so far, to allocate each body once.
    capacity: usize,
    id: String,
}

impl EventGen {
    pub fn new(prefix: String, seed: u64, fragments: Arc<Fragments>) -> Self {
        Self {
            prefix,
            request: 0,
            rng: Rng::new(seed),
            stamp: Stamp::new(),
            fragments,
            capacity: 256,
            id: String::with_capacity(32),
        }
    }

    /// `{"events":[…]}` with `n` run events completed now.
    pub fn body(&mut self, n: usize) -> Vec<u8> {
        self.stamp.refresh();
        self.request += 1;
        let mut s = String::with_capacity(self.capacity);
        s.push_str("{\"events\":[");
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            self.id.clear();
            let _ = write!(self.id, "{}-{}-{}", self.prefix, self.request, i);
            s.push_str("{\"type\":\"run\",\"event_id\":\"");
            s.push_str(&self.id);
            s.push_str("\",\"run_id\":\"r-");
            s.push_str(&self.id);
            s.push_str("\",\"completed_at\":\"");
            s.push_str(&self.stamp.text);
            s.push_str("\",");
            let f = &*self.fragments;
            s.push_str(&f.agents[self.rng.below(f.agents.len())]);
            s.push_str(&f.tails[self.rng.below(f.tails.len())]);
        }
        s.push_str("]}");
        self.capacity = self.capacity.max(s.len());
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::HashSet;

    #[test]
    fn bodies_are_valid_events() {
        let mut gen = EventGen::new("c3".into(), 7, Fragments::new(1));
        let mut ids = HashSet::new();
        let mut statuses = std::collections::HashMap::<String, usize>::new();
        for _ in 0..20 {
            let body: Value = serde_json::from_slice(&gen.body(500)).unwrap();
            let events = body["events"].as_array().unwrap();
            assert_eq!(events.len(), 500);
            for e in events {
                assert_eq!(e["type"], "run");
                let id = e["event_id"].as_str().unwrap().to_owned();
                assert!(id.starts_with("c3-"));
                assert_eq!(e["run_id"].as_str().unwrap(), format!("r-{id}"));
                assert!(ids.insert(id), "event ids are unique");
                let agent = e["agent_id"].as_str().unwrap();
                let n: usize = agent.strip_prefix("agent-").unwrap().parse().unwrap();
                assert!(n < AGENTS);
                let at = e["completed_at"].as_str().unwrap();
                let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
                assert!((Utc::now() - at.with_timezone(&Utc)).num_seconds().abs() < 5);
                let ms = e["runtime_ms"].as_f64().unwrap();
                assert!((50.0..=5000.0).contains(&ms));
                assert!(e["credits"].as_f64().unwrap() >= 0.0);
                assert!(e["tokens_in"].as_u64().is_some() && e["tokens_out"].as_u64().is_some());
                let status = e["status"].as_str().unwrap();
                assert_eq!(
                    e.get("error").is_some(),
                    matches!(status, "failed" | "timeout")
                );
                *statuses.entry(status.to_owned()).or_default() += 1;
            }
        }
        let share = |s: &str| statuses.get(s).copied().unwrap_or(0) as f64 / 10_000.0;
        assert!((0.90..0.97).contains(&share("succeeded")), "{statuses:?}");
        assert!((0.03..0.08).contains(&share("failed")), "{statuses:?}");
    }

    #[test]
    fn single_event_body() {
        let mut gen = EventGen::new("c0".into(), 1, Fragments::new(2));
        let body: Value = serde_json::from_slice(&gen.body(1)).unwrap();
        assert_eq!(body["events"].as_array().unwrap().len(), 1);
        assert_eq!(body["events"][0]["event_id"], "c0-1-0");
    }

    #[test]
    fn rng_ranges() {
        let mut rng = Rng::new(random_seed());
        for _ in 0..10_000 {
            assert!(rng.below(50) < 50);
            assert!((0.0..1.0).contains(&rng.unit()));
        }
    }
}
