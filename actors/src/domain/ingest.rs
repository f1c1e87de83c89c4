//! The ingest body, wire → domain, parsed once.
//!
//! Validation is all-or-nothing: every problem of every event is collected with its index
//! and field, and a single bad event rejects the request. Each event object is first read
//! as a list of `(key, value)` pairs so that a key given twice is reported (serde's derive
//! would keep one silently), unknown keys are ignored, and a type error in one field does
//! not hide the errors in the others.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::event::{Event, EventKind, Feedback, Heartbeat, Run, RunError, RunStatus, Severity};
use super::ids::{AgentId, EventId};

/// Longest accepted `run_id`, `user_id` and `model`.
pub const MAX_SHORT_TEXT: usize = 256;
/// Longest accepted error message, error type/category and feedback text.
pub const MAX_LONG_TEXT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `{"events": [...]}`
    Json,
    /// One event object per line; blank lines are skipped but still counted for `index`.
    Ndjson,
}

/// The bounds an ingest request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct IngestRules {
    /// More events than this in one request → [`IngestError::TooManyEvents`] (413).
    pub max_events: usize,
    /// Events older than `now − max_age` are rejected (agents buffer while offline up to this).
    pub max_age: Duration,
    /// Events later than `now + max_future` are rejected (clock skew allowance).
    pub max_future: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub index: usize,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("{count} events in one request, more than the limit of {max}")]
    TooManyEvents { count: usize, max: usize },
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    #[error("{} invalid event(s); nothing was stored", .0.len())]
    Invalid(Vec<FieldError>),
}

/// Parses and validates a whole request body. `now` is the hub clock.
pub fn parse_events(
    body: &[u8],
    format: BodyFormat,
    rules: &IngestRules,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, IngestError> {
    let raw = match format {
        BodyFormat::Json => parse_json(body, rules)?,
        BodyFormat::Ndjson => parse_ndjson(body, rules)?,
    };
    let mut errors = Vec::new();
    let mut events = Vec::with_capacity(raw.len());
    for (index, raw) in raw {
        let mut check = Check {
            index,
            errors: &mut errors,
            now,
            rules,
        };
        if let Some(event) = check.event(&raw) {
            events.push(event);
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(IngestError::Invalid(errors))
    }
}

fn parse_json(body: &[u8], rules: &IngestRules) -> Result<Vec<(usize, RawObject)>, IngestError> {
    #[derive(Deserialize)]
    struct Body {
        events: Vec<RawObject>,
    }
    // serde also reads a struct from an array (`[[…]]` as `{"events": […]}`): only the
    // documented object form is accepted.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(IngestError::Malformed(
            "the body must be a JSON object {\"events\": [...]}".into(),
        ));
    }
    let body: Body =
        serde_json::from_slice(body).map_err(|e| IngestError::Malformed(e.to_string()))?;
    if body.events.is_empty() {
        return Err(IngestError::Malformed("no events in the body".into()));
    }
    if body.events.len() > rules.max_events {
        return Err(IngestError::TooManyEvents {
            count: body.events.len(),
            max: rules.max_events,
        });
    }
    Ok(body.events.into_iter().enumerate().collect())
}

fn parse_ndjson(body: &[u8], rules: &IngestRules) -> Result<Vec<(usize, RawObject)>, IngestError> {
    let is_blank = |line: &[u8]| line.iter().all(u8::is_ascii_whitespace);
    let count = body.split(|&b| b == b'\n').filter(|l| !is_blank(l)).count();
    if count > rules.max_events {
        return Err(IngestError::TooManyEvents {
            count,
            max: rules.max_events,
        });
    }
    let mut out = Vec::with_capacity(count);
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        if is_blank(line) {
            continue;
        }
        let raw: RawObject = serde_json::from_slice(line)
            .map_err(|e| IngestError::Malformed(format!("line {}: {e}", index + 1)))?;
        out.push((index, raw));
    }
    if out.is_empty() {
        return Err(IngestError::Malformed("no events in the body".into()));
    }
    Ok(out)
}

/// One event as sent: its keys in order, with duplicates noted rather than merged.
#[derive(Debug, Default)]
struct RawObject {
    fields: Vec<(String, Value)>,
    duplicate_key: Option<String>,
    not_an_object: bool,
}

impl RawObject {
    /// The value of `key`; JSON `null` counts as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawObjectVisitor)
    }
}

struct RawObjectVisitor;

impl RawObjectVisitor {
    fn not_object<E>() -> Result<RawObject, E> {
        Ok(RawObject {
            not_an_object: true,
            ..RawObject::default()
        })
    }
}

impl<'de> Visitor<'de> for RawObjectVisitor {
    type Value = RawObject;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
        let mut raw = RawObject::default();
        while let Some(key) = map.next_key::<String>()? {
            if raw.fields.iter().any(|(k, _)| *k == key) {
                map.next_value::<IgnoredAny>()?;
                raw.duplicate_key.get_or_insert(key);
                continue;
            }
            let value: Value = map.next_value()?;
            raw.fields.push((key, value));
        }
        Ok(raw)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawObject, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Self::not_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawObject, E> {
        Self::not_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawObject, E> {
        Self::not_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawObject, E> {
        Self::not_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawObject, E> {
        Self::not_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawObject, E> {
        Self::not_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawObject, E> {
        Self::not_object()
    }
}

/// Validates one raw event, pushing every problem it finds.
struct Check<'a> {
    index: usize,
    errors: &'a mut Vec<FieldError>,
    now: DateTime<Utc>,
    rules: &'a IngestRules,
}

const NON_NEGATIVE: &str = "must be a finite number ≥ 0";
const POSITIVE: &str = "must be a finite number > 0";

impl Check<'_> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            index: self.index,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn event(&mut self, raw: &RawObject) -> Option<Event> {
        if raw.not_an_object {
            self.fail("", "must be a JSON object");
            return None;
        }
        if let Some(key) = &raw.duplicate_key {
            self.fail(key, "is given more than once");
        }
        let kind_name = self.required_str(raw, "type", 32);
        let event_id = self
            .required_str(raw, "event_id", usize::MAX)
            .and_then(|s| {
                EventId::parse(s)
                    .map_err(|e| self.fail("event_id", e.to_string()))
                    .ok()
            });
        let agent_id = self
            .required_str(raw, "agent_id", usize::MAX)
            .and_then(|s| {
                AgentId::parse(s)
                    .map_err(|e| self.fail("agent_id", e.to_string()))
                    .ok()
            });
        let kind = match kind_name {
            Some("run") => self.run(raw),
            Some("heartbeat") => self.heartbeat(raw),
            Some("feedback") => self.feedback(raw),
            Some(_) => {
                self.fail("type", "must be one of run, heartbeat, feedback");
                None
            }
            None => None,
        };
        match (event_id, agent_id, kind) {
            (Some(event_id), Some(agent_id), Some(kind)) if raw.duplicate_key.is_none() => {
                Some(Event {
                    event_id,
                    agent_id,
                    kind,
                })
            }
            _ => None,
        }
    }

    fn run(&mut self, raw: &RawObject) -> Option<EventKind> {
        let status = self.required_str(raw, "status", 32).and_then(|s| {
            RunStatus::parse(s).or_else(|| {
                self.fail(
                    "status",
                    "must be one of succeeded, failed, timeout, cancelled",
                );
                None
            })
        });
        let completed_at = self.required_time(raw, "completed_at");
        let started_at = self.optional_time(raw, "started_at");
        let runtime_ms = match self.optional_number(raw, "runtime_ms", NON_NEGATIVE, |v| v >= 0.0) {
            Some(ms) => Some(ms),
            None if raw.get("runtime_ms").is_some() => None, // already reported
            None => match (started_at, completed_at) {
                (Some(start), Some(end)) if start <= end => {
                    Some((end - start).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0)
                }
                (Some(_), Some(_)) => {
                    self.fail("started_at", "must not be after completed_at");
                    None
                }
                (None, _) if raw.get("started_at").is_none() => {
                    self.fail("runtime_ms", "is required when started_at is absent");
                    None
                }
                _ => None,
            },
        };
        let credits = self.optional_number(raw, "credits", NON_NEGATIVE, |v| v >= 0.0);
        let tokens_in = self.optional_count(raw, "tokens_in");
        let tokens_out = self.optional_count(raw, "tokens_out");
        let run_id = self.optional_str(raw, "run_id", MAX_SHORT_TEXT);
        let user_id = self.optional_str(raw, "user_id", MAX_SHORT_TEXT);
        let model = self.optional_str(raw, "model", MAX_SHORT_TEXT);
        let error = self.run_error(raw);
        Some(EventKind::Run(Run {
            run_id,
            user_id,
            status: status?,
            started_at,
            completed_at: completed_at?,
            runtime_ms: runtime_ms?,
            credits: credits.unwrap_or(0.0),
            tokens_in: tokens_in.unwrap_or(0),
            tokens_out: tokens_out.unwrap_or(0),
            model,
            error: error?,
        }))
    }

    /// `Some(None)` when absent, `None` when invalid.
    fn run_error(&mut self, raw: &RawObject) -> Option<Option<RunError>> {
        let Some(value) = raw.get("error") else {
            return Some(None);
        };
        let Value::Object(obj) = value else {
            self.fail("error", "must be an object or null");
            return None;
        };
        let mut ok = true;
        let mut text = |check: &mut Self, key: &str| -> Option<String> {
            match obj.get(key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.chars().count() <= MAX_LONG_TEXT => Some(s.clone()),
                Some(Value::String(_)) => {
                    check.fail(
                        &format!("error.{key}"),
                        format!("must be at most {MAX_LONG_TEXT} characters"),
                    );
                    ok = false;
                    None
                }
                Some(_) => {
                    check.fail(&format!("error.{key}"), "must be a string");
                    ok = false;
                    None
                }
            }
        };
        let error_type = text(self, "type");
        let category = text(self, "category");
        let message = text(self, "message");
        let severity = text(self, "severity").and_then(|s| {
            Severity::parse(&s).or_else(|| {
                self.fail(
                    "error.severity",
                    "must be one of low, medium, high, critical",
                );
                ok = false;
                None
            })
        });
        ok.then_some(Some(RunError {
            error_type,
            category,
            severity,
            message,
        }))
    }

    fn heartbeat(&mut self, raw: &RawObject) -> Option<EventKind> {
        let ts = self.required_time(raw, "ts");
        let cpu_pct = self.optional_number(raw, "cpu_pct", NON_NEGATIVE, |v| v >= 0.0);
        let mem_mb = self.optional_number(raw, "mem_mb", NON_NEGATIVE, |v| v >= 0.0);
        let mem_limit_mb = self.optional_number(raw, "mem_limit_mb", POSITIVE, |v| v > 0.0);
        let cpu_limit_cores = self.optional_number(raw, "cpu_limit_cores", POSITIVE, |v| v > 0.0);
        let concurrent_runs = self.optional_count(raw, "concurrent_runs");
        let queue_depth = self.optional_count(raw, "queue_depth");
        Some(EventKind::Heartbeat(Heartbeat {
            ts: ts?,
            cpu_pct,
            mem_mb,
            mem_limit_mb,
            cpu_limit_cores,
            concurrent_runs,
            queue_depth,
        }))
    }

    fn feedback(&mut self, raw: &RawObject) -> Option<EventKind> {
        let ts = self.required_time(raw, "ts");
        let rating = match raw.get("rating") {
            None => {
                self.fail("rating", "is required");
                None
            }
            Some(v) => match v.as_i64() {
                Some(r @ 1..=5) => Some(r as i16),
                _ => {
                    self.fail("rating", "must be an integer from 1 to 5");
                    None
                }
            },
        };
        let user_id = self.optional_str(raw, "user_id", MAX_SHORT_TEXT);
        let text = self.optional_str(raw, "text", MAX_LONG_TEXT);
        Some(EventKind::Feedback(Feedback {
            user_id,
            ts: ts?,
            rating: rating?,
            text,
        }))
    }

    fn required_str<'r>(&mut self, raw: &'r RawObject, key: &str, max: usize) -> Option<&'r str> {
        match raw.get(key) {
            None => {
                self.fail(key, "is required");
                None
            }
            Some(v) => self.string(key, v, max),
        }
    }

    fn optional_str(&mut self, raw: &RawObject, key: &str, max: usize) -> Option<String> {
        raw.get(key)
            .and_then(|v| self.string(key, v, max))
            .map(str::to_owned)
    }

    fn string<'v>(&mut self, key: &str, v: &'v Value, max: usize) -> Option<&'v str> {
        match v {
            Value::String(s) if max == usize::MAX || s.chars().count() <= max => Some(s),
            Value::String(_) => {
                self.fail(key, format!("must be at most {max} characters"));
                None
            }
            _ => {
                self.fail(key, "must be a string");
                None
            }
        }
    }

    fn optional_number(
        &mut self,
        raw: &RawObject,
        key: &str,
        rule: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let v = raw.get(key)?;
        match v.as_f64() {
            Some(n) if n.is_finite() && ok(n) => Some(n),
            _ => {
                self.fail(key, rule);
                None
            }
        }
    }

    fn optional_count(&mut self, raw: &RawObject, key: &str) -> Option<i64> {
        let v = raw.get(key)?;
        match v.as_i64() {
            Some(n) if n >= 0 => Some(n),
            _ => {
                self.fail(key, "must be an integer ≥ 0");
                None
            }
        }
    }

    fn required_time(&mut self, raw: &RawObject, key: &str) -> Option<DateTime<Utc>> {
        if raw.get(key).is_none() {
            self.fail(key, "is required");
            return None;
        }
        self.optional_time(raw, key)
    }

    fn optional_time(&mut self, raw: &RawObject, key: &str) -> Option<DateTime<Utc>> {
        let v = raw.get(key)?;
        let Some(text) = v.as_str() else {
            self.fail(key, "must be an RFC 3339 timestamp string");
            return None;
        };
        let ts = match DateTime::parse_from_rfc3339(text) {
            Ok(ts) => ts.with_timezone(&Utc),
            Err(_) => {
                self.fail(
                    key,
                    "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-24T10:00:00Z",
                );
                return None;
            }
        };
        if ts > self.now + self.rules.max_future {
            self.fail(
                key,
                "is too far in the future (past ingest.max_future, 5m by default)",
            );
            return None;
        }
        if ts < self.now - self.rules.max_age {
            self.fail(key, "is older than ingest.max_age");
            return None;
        }
        Some(ts)
    }
}

#[cfg(test)]
mod tests;
