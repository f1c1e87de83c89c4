//! Entry points shared by the `cargo fuzz` targets (`fuzz/`) and the regression test that
//! replays their corpus (`actors/tests/fuzz_corpus.rs`). Each takes arbitrary bytes and
//! checks the invariants that must hold whatever the input: no panic, and what is accepted
//! is well-formed.

use chrono::{DateTime, Duration, Utc};

use crate::domain::alert::RuleSpec;
use crate::domain::duration::HubDuration;
use crate::domain::ingest::{parse_events, BodyFormat, IngestError, IngestRules};
use crate::domain::subscription::Subscription;
use crate::domain::window::Window;
use crate::notifier::{sign::WebhookSecret, target};

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_072_000, 0).unwrap_or_default()
}

fn rules() -> IngestRules {
    IngestRules {
        max_events: 10_000,
        max_keys_per_event: 64,
        max_age: Duration::days(7),
        max_future: Duration::minutes(5),
    }
}

fn ingest(data: &[u8], format: BodyFormat) {
    match parse_events(data, format, &rules(), now()) {
        Ok(events) => {
            assert!(!events.is_empty(), "an accepted body holds events");
            assert!(events.len() <= rules().max_events);
            for e in &events {
                let t = e.time();
                assert!(t >= now() - rules().max_age && t <= now() + rules().max_future);
            }
        }
        Err(IngestError::Invalid(details)) => assert!(!details.is_empty()),
        Err(_) => {}
    }
}

/// A `{"events": [...]}` body.
pub fn ingest_json(data: &[u8]) {
    ingest(data, BodyFormat::Json);
}

/// An NDJSON body.
pub fn ingest_ndjson(data: &[u8]) {
    ingest(data, BodyFormat::Ndjson);
}

/// A WebSocket client's `subscribe` message.
pub fn ws_message(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(sub) = Subscription::parse(text) {
            let _ = sub.agent_window();
        }
    }
}

/// An alert rule body: a rule that validates has a finite threshold and known metric.
pub fn alert_rule(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<RuleSpec>(data) {
        if let Ok(rule) = spec.validate("00000000-0000-0000-0000-000000000000") {
            assert!(rule.threshold.is_finite());
            assert!(rule.for_ >= Duration::zero() && rule.cooldown >= Duration::zero());
        }
    }
}

/// The config and API value parsers: durations round-trip through their display, windows,
/// webhook secrets and target URLs never panic.
pub fn parsers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = text.parse::<HubDuration>() {
        assert_eq!(d.to_string().parse::<HubDuration>(), Ok(d));
    }
    if let Ok(w) = text.parse::<Window>() {
        assert_eq!(w.as_str(), text);
    }
    if let Ok(s) = WebhookSecret::parse(text) {
        assert_eq!(WebhookSecret::parse(&s.to_text()), Ok(s));
    }
    let _ = target::parse(text, false);
}
