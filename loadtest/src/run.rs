//! The closed request loops ("connections") and what each one measures.
//!
//! Each connection sends one request at a time until the run's end and keeps its own
//! histogram and counters (no shared state on the hot path); they are merged at the end.
//! A request belongs to the measured phase when it was *sent* at or after the end of the
//! warmup; requests still in flight at the end are awaited (bounded by `--timeout`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Deserialize;

use crate::events::{EventGen, Fragments};
use crate::hub::Hub;

/// Pause after an error without `Retry-After`.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What every connection shares.
pub struct Shared {
    pub hub: Hub,
    pub measure_start: Instant,
    pub end: Instant,
    pub load: LoadKind,
    /// Highest latency the histograms hold (µs); longer ones are recorded as this.
    pub max_latency_us: u64,
}

/// The request loop of a scenario.
pub enum LoadKind {
    Ingest {
        batch: usize,
        fragments: Arc<Fragments>,
    },
    Query {
        url: Url,
    },
}

/// One connection's request maker.
enum Load {
    Ingest { gen: EventGen, batch: usize },
    Query { url: Url },
}

fn json_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

impl Load {
    fn new(kind: &LoadKind, index: usize, seed: u64) -> Self {
        match kind {
            LoadKind::Ingest { batch, fragments } => Self::Ingest {
                gen: EventGen::new(format!("c{index}"), seed, fragments.clone()),
                batch: *batch,
            },
            LoadKind::Query { url } => Self::Query { url: url.clone() },
        }
    }

    fn request(&mut self, hub: &Hub) -> RequestBuilder {
        match self {
            Self::Ingest { gen, batch } => hub
                .client
                .post(hub.events_url.clone())
                .header(AUTHORIZATION, hub.auth.clone())
                .header(CONTENT_TYPE, json_content_type())
                .body(gen.body(*batch)),
            Self::Query { url } => hub
                .client
                .get(url.clone())
                .header(AUTHORIZATION, hub.auth.clone()),
        }
    }

    fn is_ingest(&self) -> bool {
        matches!(self, Self::Ingest { .. })
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy)]
pub enum ErrorKind {
    /// 503 (overloaded, with Retry-After).
    Overloaded,
    /// 429.
    Throttled,
    /// Any other non-200 status.
    Status,
    /// No answer within `--timeout`.
    Timeout,
    /// Connect or I/O failure.
    Transport,
    /// 200 whose body is not `{"accepted": n}`.
    BadResponse,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    pub overloaded: u64,
    pub throttled: u64,
    pub status: u64,
    pub timeout: u64,
    pub transport: u64,
    pub bad_response: u64,
}

impl Errors {
    fn count(&mut self, kind: ErrorKind) {
        *match kind {
            ErrorKind::Overloaded => &mut self.overloaded,
            ErrorKind::Throttled => &mut self.throttled,
            ErrorKind::Status => &mut self.status,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Transport => &mut self.transport,
            ErrorKind::BadResponse => &mut self.bad_response,
        } += 1;
    }

    pub fn total(&self) -> u64 {
        self.overloaded
            + self.throttled
            + self.status
            + self.timeout
            + self.transport
            + self.bad_response
    }

    fn add(&mut self, o: &Errors) {
        self.overloaded += o.overloaded;
        self.throttled += o.throttled;
        self.status += o.status;
        self.timeout += o.timeout;
        self.transport += o.transport;
        self.bad_response += o.bad_response;
    }
}

/// What connections measured.
pub struct Stats {
    /// Latency of the measured successful requests, µs.
    pub latency: Histogram<u64>,
    /// Measured successful requests.
    pub ok: u64,
    /// Events acknowledged by measured successful requests.
    pub events: u64,
    /// Events acknowledged in every phase (what the hub must count).
    pub acked_total: u64,
    /// Measured failed requests.
    pub errors: Errors,
    /// Failed requests of the warmup.
    pub warmup_errors: u64,
    /// The first error seen, for the summary.
    pub sample_error: Option<String>,
}

impl Stats {
    pub fn new(max_latency_us: u64) -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, max_latency_us.max(2), 3)
                .expect("valid histogram bounds"),
            ok: 0,
            events: 0,
            acked_total: 0,
            errors: Errors::default(),
            warmup_errors: 0,
            sample_error: None,
        }
    }

    /// Counts one finished request (`measured`: sent after the warmup); for a failure,
    /// returns how long to pause before the next one.
    pub fn count(
        &mut self,
        outcome: Outcome,
        latency: Duration,
        measured: bool,
    ) -> Option<Duration> {
        match outcome {
            Outcome::Ok { events } => {
                self.acked_total += events;
                if measured {
                    self.ok += 1;
                    self.events += events;
                    self.latency
                        .saturating_record((latency.as_micros() as u64).max(1));
                }
                None
            }
            Outcome::Failed { kind, wait, detail } => {
                if measured {
                    self.errors.count(kind);
                } else {
                    self.warmup_errors += 1;
                }
                if self.sample_error.is_none() {
                    self.sample_error = detail;
                }
                Some(wait)
            }
        }
    }

    pub fn merge(&mut self, o: Stats) {
        self.latency
            .add(&o.latency)
            .expect("histograms with the same bounds");
        self.ok += o.ok;
        self.events += o.events;
        self.acked_total += o.acked_total;
        self.errors.add(&o.errors);
        self.warmup_errors += o.warmup_errors;
        if self.sample_error.is_none() {
            self.sample_error = o.sample_error;
        }
    }
}

/// How one request ended.
pub enum Outcome {
    Ok {
        events: u64,
    },
    Failed {
        kind: ErrorKind,
        wait: Duration,
        detail: Option<String>,
    },
}

/// One closed loop: request, wait for the whole answer, repeat until the end.
pub async fn connection(shared: Arc<Shared>, index: usize, seed: u64) -> Stats {
    let mut stats = Stats::new(shared.max_latency_us);
    let mut load = Load::new(&shared.load, index, seed);
    let ingest = load.is_ingest();
    let end = tokio::time::Instant::from_std(shared.end);
    while Instant::now() < shared.end {
        let request = load.request(&shared.hub);
        let sent = Instant::now();
        let outcome = execute(request, ingest).await;
        let latency = sent.elapsed();
        let measured = sent >= shared.measure_start;
        if let Some(wait) = stats.count(outcome, latency, measured) {
            tokio::time::sleep_until((tokio::time::Instant::now() + wait).min(end)).await;
        }
    }
    stats
}

/// Sends one request and reads its whole answer; `ingest` expects `{"accepted": n}`.
pub async fn execute(request: RequestBuilder, ingest: bool) -> Outcome {
    let failed = |kind, wait, detail: String| Outcome::Failed {
        kind,
        wait,
        detail: Some(detail),
    };
    // Sending and reading the body fail the same ways: a timeout, or the connection.
    let transport = |e: reqwest::Error| {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Transport
        };
        failed(kind, ERROR_BACKOFF, error_chain(&e))
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    // Read the whole body: the latency includes it, and the connection stays reusable.
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return transport(e),
    };
    match status {
        StatusCode::OK if !ingest => Outcome::Ok { events: 0 },
        StatusCode::OK => {
            #[derive(Deserialize)]
            struct Accepted {
                accepted: u64,
            }
            match serde_json::from_slice::<Accepted>(&body) {
                Ok(a) => Outcome::Ok { events: a.accepted },
                Err(_) => failed(
                    ErrorKind::BadResponse,
                    Duration::ZERO,
                    format!("200 with an unexpected body: {}", snippet(&body)),
                ),
            }
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                ErrorKind::Throttled
            } else {
                ErrorKind::Overloaded
            };
            Outcome::Failed {
                kind,
                wait: retry_after.unwrap_or(ERROR_BACKOFF),
                detail: None,
            }
        }
        _ => failed(
            ErrorKind::Status,
            ERROR_BACKOFF,
            format!("{status}: {}", snippet(&body)),
        ),
    }
}

pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
