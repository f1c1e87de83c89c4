//! Request bodies of run events, hand-formatted.
//!
//! Everything that does not change per event (agent id, status, runtime, tokens, model,
//! error) is pre-formatted once into a shared [`Fragments`] table; per event only the
//! event id, run id and `completed_at` are written. The timestamp is formatted at most
//! every [`STAMP_REFRESH`] per connection, so events are never older than that when built.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

/// How stale a body's `completed_at` may be when built.
pub const STAMP_REFRESH: Duration = Duration::from_millis(100);

/// Distinct agents a workspace's events come from.
pub const AGENTS: usize = 50;
/// Distinct users the runs are for (each run names one, so the hub counts distinct users).
pub const USERS: usize = 5_000;

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

/// The name of the posted agent `i` (modulo the agents posted).
pub fn agent_name(i: usize) -> String {
    format!("agent-{}", i % AGENTS)
}

/// The per-event parts that do not depend on the event's identity or time.
#[derive(Debug)]
pub struct Fragments {
    /// `agent-N`, and the same as `"agent_id":"agent-N",`.
    agents: Vec<(String, String)>,
    /// Status and measurements, each with its JSON `"status":…,"model":"…"}` (closes the
    /// event object).
    tails: Vec<Tail>,
}

impl Fragments {
    pub fn new(seed: u64) -> Arc<Self> {
        let mut rng = Rng::new(seed);
        let agents = (0..AGENTS)
            .map(|i| {
                (
                    agent_name(i),
                    format!("\"agent_id\":\"{}\",", agent_name(i)),
                )
            })
            .collect();
        let tails = (0..FRAGMENTS).map(|_| Tail::new(&mut rng)).collect();
        Arc::new(Self { agents, tails })
    }
}

/// One event's status and measurements, with the values exactly as its JSON carries them.
#[derive(Debug)]
struct Tail {
    status: &'static str,
    runtime_ms: f64,
    credits: f64,
    tokens_in: i64,
    tokens_out: i64,
    model: &'static str,
    json: String,
}

impl Tail {
    /// ~94% succeeded, 5% failed, 0.5% timeout, 0.5% cancelled; runtime log-normal (median
    /// ~400ms) clamped to 50..5000ms.
    fn new(rng: &mut Rng) -> Self {
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
        let runtime_ms = format!(
            "{:.1}",
            (400f64.ln() + 0.9 * rng.normal()).exp().clamp(50.0, 5000.0)
        );
        let (model, in_price, out_price) = match rng.below(10) {
            0..=4 => ("gpt-4o", 2.5, 10.0),
            5..=7 => ("gpt-4o-mini", 0.15, 0.6),
            _ => ("claude-sonnet-4", 3.0, 15.0),
        };
        let tokens_in = 200 + rng.below(3800) as i64;
        let tokens_out = 50 + rng.below(1450) as i64;
        let credits = format!(
            "{:.4}",
            (tokens_in as f64 * in_price + tokens_out as f64 * out_price) / 10_000.0
        );
        let mut json = format!(
            "\"status\":\"{status}\",\"runtime_ms\":{runtime_ms},\"credits\":{credits},\
             \"tokens_in\":{tokens_in},\"tokens_out\":{tokens_out},\"model\":\"{model}\""
        );
        if let Some(error) = error {
            json.push_str(",\"error\":");
            json.push_str(error);
        }
        json.push('}');
        Self {
            status,
            // The numbers as the hub parses them from the JSON.
            runtime_ms: runtime_ms.parse().expect("a formatted number"),
            credits: credits.parse().expect("a formatted number"),
            tokens_in,
            tokens_out,
            model,
            json,
        }
    }
}

/// `completed_at`, refreshed at most every [`STAMP_REFRESH`].
struct Stamp {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-24T10:00:00.123Z`.
    text: String,
    /// The same instant (whole milliseconds).
    time: DateTime<Utc>,
    at: Instant,
}

impl Stamp {
    fn new() -> Self {
        let time = now_millis();
        Self {
            text: time.to_rfc3339_opts(SecondsFormat::Millis, true),
            time,
            at: Instant::now(),
        }
    }

    fn refresh(&mut self) {
        if self.at.elapsed() >= STAMP_REFRESH {
            *self = Self::new();
        }
    }
}

/// Now, truncated to whole milliseconds (what the JSON carries).
fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Run events as columns: what `ceiling ingest-*` binds to its `unnest` insert, the same
/// events a body of [`EventGen::body`] carries.
#[derive(Debug, Default)]
pub struct Rows {
    pub event_id: Vec<String>,
    pub agent_id: Vec<String>,
    pub run_id: Vec<String>,
    pub user_id: Vec<String>,
    pub status: Vec<&'static str>,
    pub completed_at: Vec<DateTime<Utc>>,
    pub runtime_ms: Vec<f64>,
    pub credits: Vec<f64>,
    pub tokens_in: Vec<i64>,
    pub tokens_out: Vec<i64>,
    pub model: Vec<&'static str>,
}

impl Rows {
    fn clear(&mut self) {
        self.event_id.clear();
        self.agent_id.clear();
        self.run_id.clear();
        self.user_id.clear();
        self.status.clear();
        self.completed_at.clear();
        self.runtime_ms.clear();
        self.credits.clear();
        self.tokens_in.clear();
        self.tokens_out.clear();
        self.model.clear();
    }
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
            let (agent, tail, user) = self.pick();
            s.push_str(&agent.1);
            let _ = write!(s, "\"user_id\":\"u-{user}\",");
            s.push_str(&tail.json);
        }
        s.push_str("]}");
        self.capacity = self.capacity.max(s.len());
        s.into_bytes()
    }

    /// The `n` events [`EventGen::body`] would have put in its next body, as columns (into
    /// `rows`, replacing what it held).
    pub fn rows(&mut self, n: usize, rows: &mut Rows) {
        self.stamp.refresh();
        self.request += 1;
        rows.clear();
        for i in 0..n {
            let id = format!("{}-{}-{}", self.prefix, self.request, i);
            rows.run_id.push(format!("r-{id}"));
            rows.event_id.push(id);
            rows.completed_at.push(self.stamp.time);
            let (agent, tail, user) = self.pick();
            rows.agent_id.push(agent.0.clone());
            rows.user_id.push(format!("u-{user}"));
            rows.status.push(tail.status);
            rows.runtime_ms.push(tail.runtime_ms);
            rows.credits.push(tail.credits);
            rows.tokens_in.push(tail.tokens_in);
            rows.tokens_out.push(tail.tokens_out);
            rows.model.push(tail.model);
        }
    }

    /// The next event's agent, tail and user.
    fn pick(&mut self) -> (&(String, String), &Tail, usize) {
        let f = &*self.fragments;
        let agent = &f.agents[self.rng.below(f.agents.len())];
        let tail = &f.tails[self.rng.below(f.tails.len())];
        (agent, tail, self.rng.below(USERS))
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
    fn rows_are_the_events_of_a_body() {
        let fragments = Fragments::new(5);
        let mut json = EventGen::new("c1".into(), 9, fragments.clone());
        let mut columns = EventGen::new("c1".into(), 9, fragments);
        let mut rows = Rows::default();
        for n in [300, 1, 40] {
            let body: Value = serde_json::from_slice(&json.body(n)).unwrap();
            let events = body["events"].as_array().unwrap();
            columns.rows(n, &mut rows);
            assert_eq!(rows.event_id.len(), n);
            for (i, e) in events.iter().enumerate() {
                assert_eq!(e["event_id"], rows.event_id[i]);
                assert_eq!(e["run_id"], rows.run_id[i]);
                assert_eq!(e["agent_id"], rows.agent_id[i]);
                assert_eq!(e["status"], rows.status[i]);
                assert_eq!(e["model"], rows.model[i]);
                assert_eq!(e["runtime_ms"].as_f64(), Some(rows.runtime_ms[i]));
                assert_eq!(e["credits"].as_f64(), Some(rows.credits[i]));
                assert_eq!(e["tokens_in"].as_i64(), Some(rows.tokens_in[i]));
                assert_eq!(e["tokens_out"].as_i64(), Some(rows.tokens_out[i]));
                // Each generator reads the clock itself: the same instant unless a refresh
                // fell between the two calls.
                let at = chrono::DateTime::parse_from_rfc3339(e["completed_at"].as_str().unwrap())
                    .unwrap();
                let apart = at.with_timezone(&Utc) - rows.completed_at[i];
                assert!(apart.num_seconds().abs() < 5, "{apart}");
                assert_eq!(rows.completed_at[i].timestamp_subsec_micros() % 1000, 0);
            }
        }
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
