//! The ingest body, wire → domain, parsed once, in time linear in its size.
//!
//! Two passes, both linear whatever the body's shape:
//! 1. [`frame`] checks the JSON syntax and cuts the body into one raw slice per event
//!    (no tree is built), so the request's size in events is known — and charged to the
//!    workspace's rate limit — before any per-event work;
//! 2. [`Framed::check`] reads each event's keys: known keys keep their raw value, unknown
//!    ones are skipped without allocating, a key given twice is found through a hash set,
//!    and an object with more than `ingest.max_keys_per_event` keys is refused.
//!
//! Validation is all-or-nothing: every problem of every event is collected with its index
//! and field, and a single bad event rejects the request; a type error in one field does
//! not hide the errors in the others.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Duration, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::event::{Event, EventKind, Feedback, Heartbeat, Run, RunError, RunStatus, Severity};
use super::ids::{AgentId, EventId};
use super::text;

/// Longest accepted `run_id`, `user_id` and `model`.
pub const MAX_SHORT_TEXT: usize = 256;
/// Longest accepted error message, error type/category and feedback text.
pub const MAX_LONG_TEXT: usize = 4096;
/// Largest accepted runtime, credits, cpu, memory and limits (10^15): far past any real
/// value, and small enough that a day of sums at the rate limit stays finite.
pub const MAX_NUMBER: f64 = 1e15;
/// Largest accepted `credits` of one run (10^12): the rollups sum credits exactly in
/// millionths, in 64-bit integers, per run.
pub const MAX_CREDITS: f64 = 1e12;

/// Largest `tokens_in` / `tokens_out` of one run (a trillion: far past any context window,
/// and small enough that sums over any window stay exact in an `i64`).
pub const MAX_TOKENS: i64 = 1_000_000_000_000;

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
    /// More keys than this in one event object (or its `error` object) → 400.
    pub max_keys_per_event: usize,
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
    frame(body, format, rules)?.check(rules, now)
}

/// A body cut into its events: the body itself and where each event lies in it.
#[derive(Debug)]
pub struct Framed<B> {
    body: B,
    /// `(index, bytes)`: the index is the position in `events`, or the line number − 1.
    events: Vec<(usize, Range<usize>)>,
}

impl<B: AsRef<[u8]>> Framed<B> {
    /// Events in the body (≥ 1, ≤ `max_events`).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Reads and validates every event.
    pub fn check(
        &self,
        rules: &IngestRules,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, IngestError> {
        let body = self.body.as_ref();
        let mut errors = Vec::new();
        let mut events = Vec::with_capacity(self.events.len());
        for (index, span) in &self.events {
            let mut check = Check {
                index: *index,
                errors: &mut errors,
                now,
                rules,
            };
            let seed = ObjectSeed {
                known: EVENT_KEYS,
                max_keys: rules.max_keys_per_event,
            };
            let mut de = serde_json::Deserializer::from_slice(&body[span.clone()]);
            // The framing pass has checked the syntax, so this fails only on what valid
            // JSON cannot be read as (nothing today); reported all the same.
            match seed.deserialize(&mut de) {
                Ok(object) => {
                    if let Some(event) = check.event(&object) {
                        events.push(event);
                    }
                }
                Err(e) => check.fail("", e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(events)
        } else {
            Err(IngestError::Invalid(errors))
        }
    }
}

/// Checks the body's syntax and finds its events, without building any tree.
pub fn frame<B: AsRef<[u8]>>(
    body: B,
    format: BodyFormat,
    rules: &IngestRules,
) -> Result<Framed<B>, IngestError> {
    let bytes = body.as_ref();
    let raw = match format {
        BodyFormat::Json => frame_json(bytes, rules)?,
        BodyFormat::Ndjson => frame_ndjson(bytes, rules)?,
    };
    if raw.is_empty() {
        return Err(IngestError::Malformed("no events in the body".into()));
    }
    let base = bytes.as_ptr() as usize;
    let events = raw
        .into_iter()
        .map(|(index, raw)| {
            let start = raw.get().as_ptr() as usize - base;
            (index, start..start + raw.get().len())
        })
        .collect();
    Ok(Framed { body, events })
}

fn malformed(e: serde_json::Error) -> IngestError {
    IngestError::Malformed(e.to_string())
}

fn frame_json<'a>(
    body: &'a [u8],
    rules: &IngestRules,
) -> Result<Vec<(usize, &'a RawValue)>, IngestError> {
    // Only the documented object form is accepted (serde would also read a struct from an
    // array, `[[…]]`).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(IngestError::Malformed(
            "the body must be a JSON object {\"events\": [...]}".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let list = BodySeed {
        max_events: rules.max_events,
    }
    .deserialize(&mut de)
    .map_err(malformed)?;
    de.end().map_err(malformed)?;
    let list = list.ok_or_else(|| IngestError::Malformed("missing field `events`".into()))?;
    if list.count > rules.max_events {
        return Err(IngestError::TooManyEvents {
            count: list.count,
            max: rules.max_events,
        });
    }
    Ok(list.events.into_iter().enumerate().collect())
}

fn frame_ndjson<'a>(
    body: &'a [u8],
    rules: &IngestRules,
) -> Result<Vec<(usize, &'a RawValue)>, IngestError> {
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
        let raw: &RawValue = serde_json::from_slice(line)
            .map_err(|e| IngestError::Malformed(format!("line {}: {e}", index + 1)))?;
        out.push((index, raw));
    }
    Ok(out)
}

/// The `events` list as found: up to `max_events` raw events, and how many there were.
struct EventList<'a> {
    events: Vec<&'a RawValue>,
    count: usize,
}

/// Reads `{"events": [...], ...}`; other top-level keys are skipped.
struct BodySeed {
    max_events: usize,
}

impl<'de> DeserializeSeed<'de> for BodySeed {
    type Value = Option<EventList<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed {
    type Value = Option<EventList<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object {\"events\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<KeyName>()? {
            if key.0 != "events" {
                map.next_value::<IgnoredAny>()?;
            } else if found.is_some() {
                return Err(de::Error::duplicate_field("events"));
            } else {
                found = Some(map.next_value_seed(ListSeed {
                    max_events: self.max_events,
                })?);
            }
        }
        Ok(found)
    }
}

/// Reads the `events` array: keeps the first `max_events` elements raw, counts the rest.
struct ListSeed {
    max_events: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = EventList<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = EventList<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = EventList {
            events: Vec::new(),
            count: 0,
        };
        loop {
            if list.count < self.max_events {
                match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => list.events.push(raw),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            list.count += 1;
        }
        Ok(list)
    }
}

/// A key, read without keeping it when it has no escapes to undo.
struct KeyName<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(KeyName(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(KeyName(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(KeyName(std::borrow::Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Every key an event object may carry; others are ignored.
const EVENT_KEYS: &[&str] = &[
    "type",
    "event_id",
    "agent_id",
    "run_id",
    "user_id",
    "status",
    "started_at",
    "completed_at",
    "runtime_ms",
    "credits",
    "tokens_in",
    "tokens_out",
    "model",
    "error",
    "ts",
    "cpu_pct",
    "mem_mb",
    "mem_limit_mb",
    "cpu_limit_cores",
    "concurrent_runs",
    "queue_depth",
    "rating",
    "text",
];

/// Every key a run's `error` object may carry.
const ERROR_KEYS: &[&str] = &["type", "category", "severity", "message"];

/// One object as sent: the raw values of its known keys, duplicates and excess noted.
#[derive(Debug, Default)]
struct RawObject<'de> {
    fields: Vec<(&'static str, &'de RawValue)>,
    duplicate_key: Option<String>,
    /// Keys in the object when that is more than the cap.
    too_many_keys: Option<usize>,
    not_an_object: bool,
}

impl<'de> RawObject<'de> {
    /// The raw value of `key`; JSON `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'de RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| v.get() != "null")
    }

    fn is_clean(&self) -> bool {
        self.duplicate_key.is_none() && self.too_many_keys.is_none()
    }
}

/// Reads one object with the keys in `known`, at most `max_keys` keys in all.
#[derive(Clone, Copy)]
struct ObjectSeed {
    known: &'static [&'static str],
    max_keys: usize,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = RawObject<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ObjectSeed {
    fn not_object<E>() -> Result<RawObject<'static>, E> {
        Ok(RawObject {
            not_an_object: true,
            ..RawObject::default()
        })
    }
}

impl<'de> Visitor<'de> for ObjectSeed {
    type Value = RawObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject<'de>, A::Error> {
        let mut raw = RawObject::default();
        let mut seen: HashSet<std::borrow::Cow<'de, str>> = HashSet::new();
        let mut keys = 0usize;
        while let Some(KeyName(key)) = map.next_key::<KeyName<'de>>()? {
            keys += 1;
            if keys > self.max_keys {
                // Past the cap the object is refused: the rest is only skipped.
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let known = self.known.iter().find(|k| **k == key);
            if !seen.insert(key.clone()) {
                raw.duplicate_key.get_or_insert_with(|| key.into_owned());
                map.next_value::<IgnoredAny>()?;
            } else if let Some(known) = known {
                raw.fields.push((known, map.next_value::<&'de RawValue>()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if keys > self.max_keys {
            raw.too_many_keys = Some(keys);
        }
        Ok(raw)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawObject<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Self::not_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawObject<'de>, E> {
        Self::not_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawObject<'de>, E> {
        Self::not_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawObject<'de>, E> {
        Self::not_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawObject<'de>, E> {
        Self::not_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawObject<'de>, E> {
        Self::not_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawObject<'de>, E> {
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

/// Reads a raw JSON value as `T`, or `None` when it is something else.
fn read<'de, T: de::Deserialize<'de>>(v: &'de RawValue) -> Option<T> {
    serde_json::from_str(v.get()).ok()
}

impl Check<'_> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            index: self.index,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The object-level problems: not an object, a duplicate key, too many keys.
    fn shape(&mut self, raw: &RawObject, prefix: &str) -> bool {
        if let Some(key) = &raw.duplicate_key {
            self.fail(&format!("{prefix}{key}"), "is given more than once");
        }
        if let Some(keys) = raw.too_many_keys {
            let max = self.rules.max_keys_per_event;
            self.fail(
                prefix.trim_end_matches('.'),
                format!("has {keys} keys, more than ingest.max_keys_per_event ({max})"),
            );
        }
        raw.is_clean()
    }

    fn event(&mut self, raw: &RawObject) -> Option<Event> {
        if raw.not_an_object {
            self.fail("", "must be a JSON object");
            return None;
        }
        let clean = self.shape(raw, "");
        let kind_name = self.required_str(raw, "type", 32);
        let event_id = self
            .required_str(raw, "event_id", usize::MAX)
            .and_then(|s| {
                EventId::parse(&s)
                    .map_err(|e| self.fail("event_id", e.to_string()))
                    .ok()
            });
        let agent_id = self
            .required_str(raw, "agent_id", usize::MAX)
            .and_then(|s| {
                AgentId::parse(&s)
                    .map_err(|e| self.fail("agent_id", e.to_string()))
                    .ok()
            });
        let kind = match kind_name.as_deref() {
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
            (Some(event_id), Some(agent_id), Some(kind)) if clean => Some(Event {
                event_id,
                agent_id,
                kind,
            }),
            _ => None,
        }
    }

    fn run(&mut self, raw: &RawObject) -> Option<EventKind> {
        let status = self.required_str(raw, "status", 32).and_then(|s| {
            RunStatus::parse(&s).or_else(|| {
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
        let credits = self
            .optional_number(raw, "credits", NON_NEGATIVE, |v| v >= 0.0)
            .and_then(|c| {
                if c <= MAX_CREDITS {
                    Some(c)
                } else {
                    self.fail("credits", "must be at most 1e12");
                    None
                }
            });
        let tokens_in = self.optional_tokens(raw, "tokens_in");
        let tokens_out = self.optional_tokens(raw, "tokens_out");
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
        let seed = ObjectSeed {
            known: ERROR_KEYS,
            max_keys: self.rules.max_keys_per_event,
        };
        let obj = match seed.deserialize(&mut serde_json::Deserializer::from_str(value.get())) {
            Ok(obj) if !obj.not_an_object => obj,
            _ => {
                self.fail("error", "must be an object or null");
                return None;
            }
        };
        let errors_before = self.errors.len();
        self.shape(&obj, "error.");
        let error_type = self.optional_str_as(&obj, "type", "error.type", MAX_LONG_TEXT);
        let category = self.optional_str_as(&obj, "category", "error.category", MAX_LONG_TEXT);
        let message = self.optional_str_as(&obj, "message", "error.message", MAX_LONG_TEXT);
        let severity = self
            .optional_str_as(&obj, "severity", "error.severity", MAX_LONG_TEXT)
            .and_then(|s| {
                Severity::parse(&s).or_else(|| {
                    self.fail(
                        "error.severity",
                        "must be one of low, medium, high, critical",
                    );
                    None
                })
            });
        (self.errors.len() == errors_before).then_some(Some(RunError {
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
            Some(v) => match read::<i64>(v) {
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

    fn required_str(&mut self, raw: &RawObject, key: &str, max: usize) -> Option<String> {
        match raw.get(key) {
            None => {
                self.fail(key, "is required");
                None
            }
            Some(v) => self.string(key, v, max),
        }
    }

    fn optional_str(&mut self, raw: &RawObject, key: &str, max: usize) -> Option<String> {
        self.optional_str_as(raw, key, key, max)
    }

    /// `key` of `raw`, reported as `field`.
    fn optional_str_as(
        &mut self,
        raw: &RawObject,
        key: &str,
        field: &str,
        max: usize,
    ) -> Option<String> {
        raw.get(key).and_then(|v| self.string(field, v, max))
    }

    fn string(&mut self, field: &str, v: &RawValue, max: usize) -> Option<String> {
        let Some(s) = read::<String>(v) else {
            self.fail(field, "must be a string");
            return None;
        };
        if max != usize::MAX && s.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
            return None;
        }
        if let Err(e) = text::storable(&s) {
            self.fail(field, e.to_string());
            return None;
        }
        Some(s)
    }

    fn optional_number(
        &mut self,
        raw: &RawObject,
        key: &str,
        rule: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let v = raw.get(key)?;
        match read::<f64>(v) {
            Some(n) if n.is_finite() && ok(n) && n <= MAX_NUMBER => Some(n),
            Some(n) if n.is_finite() && ok(n) => {
                self.fail(key, "must be at most 1e15");
                None
            }
            _ => {
                self.fail(key, rule);
                None
            }
        }
    }

    fn optional_count(&mut self, raw: &RawObject, key: &str) -> Option<i64> {
        let v = raw.get(key)?;
        match read::<i64>(v) {
            Some(n) if n >= 0 => Some(n),
            _ => {
                self.fail(key, "must be an integer ≥ 0");
                None
            }
        }
    }

    fn optional_tokens(&mut self, raw: &RawObject, key: &str) -> Option<i64> {
        let v = raw.get(key)?;
        match read::<i64>(v) {
            Some(n) if (0..=MAX_TOKENS).contains(&n) => Some(n),
            _ => {
                self.fail(key, format!("must be an integer from 0 to {MAX_TOKENS}"));
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
        let Some(text) = read::<String>(v) else {
            self.fail(key, "must be an RFC 3339 timestamp string");
            return None;
        };
        let ts = match DateTime::parse_from_rfc3339(&text) {
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
