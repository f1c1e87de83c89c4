//! The notifier: delivers queued webhooks, retries failures with exponential backoff and
//! jitter, and records every attempt.
//!
//! Deliveries are rows of `webhook_deliveries`, written with the transition that caused them
//! (so a crash before the first attempt loses nothing). The notifier claims due rows with a
//! lease (`FOR UPDATE SKIP LOCKED`, so several nodes can share the queue), sends each signed
//! afresh — `webhook-id` is the delivery id, `webhook-timestamp` the attempt's time — and
//! records the outcome, which releases the lease. A node that dies mid-attempt leaves a
//! lease that lapses after `timeout` + [`LEASE_MARGIN`]; the delivery is then attempted
//! again under the same `webhook-id` (at-least-once; receivers de-duplicate on it).
//!
//! It runs on its own arbiter and is woken by [`Wake`] when deliveries are queued, and on a
//! timer for retries that come due.

pub mod format;
pub mod seal;
pub mod sign;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use deadpool_postgres::Pool;

use crate::config::NotificationsConfig;
use crate::metrics::{HubMetrics, OutcomeLabel};
use crate::store::channels::{self, AttemptResult, Due};
use format::Format;
use seal::SealKey;
use sign::WebhookSecret;

/// Added to `timeout` for the lease on an attempt in flight.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Longest error text kept per attempt.
const MAX_ERROR_LEN: usize = 500;

/// Deliveries were queued: look for due ones now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// The rustls crypto provider every HTTPS client of the process uses (ring: pure-Rust
/// build cost, no C toolchain beyond `cc`). Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct Notifier {
    pool: Pool,
    client: reqwest::Client,
    cfg: Arc<NotificationsConfig>,
    seal: SealKey,
    metrics: Arc<HubMetrics>,
    in_flight: usize,
    claiming: bool,
    /// A wake-up arrived while claiming: claim again after.
    again: bool,
}

impl Notifier {
    pub fn new(
        pool: Pool,
        cfg: NotificationsConfig,
        seal: SealKey,
        metrics: Arc<HubMetrics>,
    ) -> Result<Self, reqwest::Error> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout.get())
            .timeout(cfg.timeout.get())
            .dns_resolver(Arc::new(target::GuardedResolver {
                allow_private: cfg.allow_private_targets,
            }))
            .user_agent(concat!("shadower-hub/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Self {
            pool,
            client,
            cfg: Arc::new(cfg),
            seal,
            metrics,
            in_flight: 0,
            claiming: false,
            again: false,
        })
    }

    fn claim(&mut self, ctx: &mut Context<Self>) {
        let free = self.cfg.concurrency.saturating_sub(self.in_flight);
        if self.claiming || free == 0 {
            self.again = true;
            return;
        }
        self.claiming = true;
        self.again = false;
        let pool = self.pool.clone();
        let lease = self.cfg.timeout.get() + LEASE_MARGIN;
        ctx.spawn(
            async move { channels::claim_due(&pool, free as i64, lease).await }
                .into_actor(self)
                .map(move |claimed, act, ctx| {
                    act.claiming = false;
                    match claimed {
                        Ok(due) => {
                            let full = due.len() == free;
                            for d in due {
                                act.start(d, ctx);
                            }
                            if full || act.again {
                                act.claim(ctx);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Claiming webhook deliveries failed; retrying on the timer.")
                        }
                    }
                }),
        );
    }

    fn start(&mut self, due: Due, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        let attempt = Attempt {
            client: self.client.clone(),
            pool: self.pool.clone(),
            cfg: self.cfg.clone(),
            seal: self.seal.clone(),
            metrics: self.metrics.clone(),
        };
        ctx.spawn(attempt.run(due).into_actor(self).map(|(), act, ctx| {
            act.in_flight -= 1;
            if act.again {
                act.claim(ctx);
            }
        }));
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.claim(ctx);
        ctx.run_interval(self.cfg.poll_interval.get(), |act, ctx| act.claim(ctx));
    }
}

impl Handler<Wake> for Notifier {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.claim(ctx);
    }
}

/// What one attempt needs, moved into its future.
struct Attempt {
    client: reqwest::Client,
    pool: Pool,
    cfg: Arc<NotificationsConfig>,
    seal: SealKey,
    metrics: Arc<HubMetrics>,
}

/// How a send ended, before it is recorded.
enum Sent {
    Ok(u16),
    Status(u16),
    Failed {
        outcome: &'static str,
        error: String,
    },
}

impl Attempt {
    async fn run(self, due: Due) {
        let number = due.attempts + 1;
        let started = Instant::now();
        let sent = match self.prepare(&due) {
            Ok(request) => self.send(request).await,
            Err(refusal) => refusal,
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (outcome, result) = match sent {
            Sent::Ok(status) => ("ok", AttemptResult::Delivered { status }),
            Sent::Status(status) => (
                "http_error",
                self.failed(
                    Some(status),
                    format!("receiver answered {status}"),
                    number,
                    &due,
                ),
            ),
            Sent::Failed { outcome, error } => (outcome, self.failed(None, error, number, &due)),
        };
        self.metrics
            .webhook_attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        match &result {
            AttemptResult::Delivered { .. } => {
                self.metrics
                    .webhook_deliveries
                    .get_or_create(&OutcomeLabel {
                        outcome: "delivered",
                    })
                    .inc();
                let since = (Utc::now() - due.created_at).num_milliseconds().max(0);
                self.metrics
                    .webhook_delivery_seconds
                    .observe(since as f64 / 1000.0);
            }
            AttemptResult::Failed {
                retry_at: None,
                error,
                ..
            } => {
                self.metrics
                    .webhook_deliveries
                    .get_or_create(&OutcomeLabel {
                        outcome: "given_up",
                    })
                    .inc();
                tracing::warn!(delivery = %due.id, workspace = %due.workspace_id, attempts = number, %error, "Webhook delivery given up.");
            }
            AttemptResult::Failed { .. } => {}
        }
        // Recording is retried: a 2xx not recorded would be sent again when the lease lapses.
        for wait in [0u64, 200, 1000, 3000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match channels::record_attempt(&self.pool, &due.id, number, duration_ms, &result).await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(delivery = %due.id, error = %e, "Recording a webhook attempt failed.")
                }
            }
        }
    }

    /// A retry at the next backoff step, or giving up after `max_attempts`.
    fn failed(&self, status: Option<u16>, error: String, number: i32, due: &Due) -> AttemptResult {
        let error: String = error.chars().take(MAX_ERROR_LEN).collect();
        let retry_at = (number < self.cfg.max_attempts && !due.channel_deleted).then(|| {
            Utc::now() + chrono::Duration::from_std(self.backoff(number)).unwrap_or_default()
        });
        AttemptResult::Failed {
            status,
            error,
            retry_at,
        }
    }

    /// `backoff_base × 2^(n−1)`, capped at `backoff_max`, times a jitter in [0.5, 1).
    fn backoff(&self, attempts_made: i32) -> Duration {
        let base = self.cfg.backoff_base.get().as_secs_f64();
        let exp = base * 2f64.powi(attempts_made.clamp(1, 30) - 1);
        let capped = exp.min(self.cfg.backoff_max.get().as_secs_f64());
        Duration::from_secs_f64(capped * (0.5 + 0.5 * unit_random()))
    }

    /// The signed request, or why none is sent.
    fn prepare(&self, due: &Due) -> Result<reqwest::Request, Sent> {
        let refuse = |error: String| Sent::Failed {
            outcome: "refused",
            error,
        };
        if due.channel_deleted {
            return Err(refuse("channel deleted".into()));
        }
        let url = target::parse(&due.url, self.cfg.allow_private_targets)
            .map_err(|e| refuse(e.to_string()))?;
        let mut secrets = vec![self.secret(&due.secret_sealed, &due.channel_id)?];
        if let (Some(prev), Some(until)) = (&due.previous_sealed, due.previous_until) {
            if until > Utc::now() {
                secrets.push(self.secret(prev, &due.channel_id)?);
            }
        }
        let format = Format::parse(&due.format).unwrap_or(Format::Shadower);
        let body = format::render(format, &due.payload);
        let timestamp = Utc::now().timestamp();
        let signature = sign::signature_header(&secrets, &due.id, timestamp, &body);
        self.client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &due.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .build()
            .map_err(|e| refuse(e.to_string()))
    }

    fn secret(&self, sealed: &[u8], channel: &str) -> Result<WebhookSecret, Sent> {
        self.seal
            .open(sealed, channel)
            .ok()
            .and_then(|b| WebhookSecret::from_bytes(b).ok())
            .ok_or(Sent::Failed {
                outcome: "error",
                error: "the channel's secret does not open with notifications.secret_key".into(),
            })
    }

    async fn send(&self, request: reqwest::Request) -> Sent {
        match self.client.execute(request).await {
            Ok(res) => {
                let status = res.status().as_u16();
                // Read a bounded part of the body (in bytes and time) so the connection can
                // be reused; a receiver that sends more only loses the connection.
                let _ = tokio::time::timeout(Duration::from_secs(1), drain(res)).await;
                if (200..300).contains(&status) {
                    Sent::Ok(status)
                } else {
                    Sent::Status(status)
                }
            }
            Err(e) => {
                let e = e.without_url();
                let outcome = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "error"
                };
                // The chain names the cause (refused address, DNS, TLS) without the URL's query.
                let mut error = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    error.push_str(": ");
                    error.push_str(&s.to_string());
                    source = s.source();
                }
                Sent::Failed { outcome, error }
            }
        }
    }
}

/// A number in [0, 1) from the OS random source (jitter; 0.5 if the source fails).
fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Most bytes of a receiver's response body read (and thrown away).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Reads and discards at most [`MAX_RESPONSE_BYTES`] of a response body; returns how many.
async fn drain(mut res: reqwest::Response) -> usize {
    let mut read = 0;
    while read < MAX_RESPONSE_BYTES {
        match res.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    read
}
