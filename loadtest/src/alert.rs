//! The `alert` scenario: event → signed webhook, end to end.
//!
//! The run starts a webhook receiver in this process (hyper, HTTP/1.1 with keep-alive;
//! every POST is answered 204 at once, so the hub has no reason to retry), creates a
//! webhook channel to it and one alert rule on the run's workspace — `error_rate` over `1m`
//! `> 0.5` with `min_samples` 1, grouped by agent — and then posts on an open-loop schedule:
//! slot `i` is due at `start + i/rate` and posts ONE failed run of the fresh agent `a{i}`,
//! which makes that agent's alert fire at once. `--connections` posting loops share the
//! schedule, so a slow answer does not hold the next slot back.
//!
//! Latency is the slot's *due* time → its agent's firing webhook received (coordinated
//! omission corrected: a POST sent late counts from when it was due), for slots due in the
//! measured time. Correctness covers the whole run: after the load the run waits up to
//! `--timeout` for outstanding firings, then listens [`SETTLE`] longer, and counts
//! acknowledged agents without a firing (`lost`), agents that fired twice under different
//! webhook-ids (duplicates), webhook-ids delivered again (retries seen, legitimate
//! at-least-once behaviour), signatures that do not verify with the channel's secret, and
//! firings for agents whose POST was not acknowledged.
//!
//! The rule and the channel are deleted at the end (best effort).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::cli::{show_duration, Plan, Workload};
use crate::hub::{self, Hub};
use crate::report::{Alert, Outcome};
use crate::run::{self, Stats};

/// After every acknowledged agent fired, how much longer the receiver listens for duplicates
/// before the counts are final.
const SETTLE: Duration = Duration::from_millis(500);
/// How often the wait after the load looks at what arrived.
const POLL: Duration = Duration::from_millis(20);
/// Largest webhook body the receiver reads.
const MAX_BODY: usize = 1 << 20;
/// The hub's default `limits.max_agents_per_workspace`: agents past it are counted under
/// one overflow agent, so their alerts cannot fire.
const HUB_MAX_AGENTS: u64 = 10_000;

/// A slot's POST: not sent yet, in flight, answered 200, failed, or due after the end.
const UNSENT: u8 = 0;
const SENT: u8 = 1;
const ACKED: u8 = 2;
const FAILED: u8 = 3;
const SKIPPED: u8 = 4;

/// One slot of the schedule.
struct Slot {
    state: AtomicU8,
    /// µs from the start to the POST's answer, plus 1; 0 while unanswered.
    answered: AtomicU64,
}

/// What the posting loops share.
struct Shared {
    hub: Hub,
    start: Instant,
    measure_start: Instant,
    end: Instant,
    rate: u32,
    next_slot: AtomicUsize,
    slots: Vec<Slot>,
    /// Latest send after its due time, µs.
    max_lag_us: AtomicU64,
    max_latency_us: u64,
}

impl Shared {
    fn due(&self, slot: usize) -> Instant {
        self.start + Duration::from_secs_f64(slot as f64 / f64::from(self.rate))
    }
}

pub async fn run(plan: &Plan, hub: Hub, workspace: &str, settings: String) -> Result<Outcome> {
    let Workload::Alert {
        receiver_bind,
        ref receiver_url,
        ..
    } = plan.workload
    else {
        bail!("not an alert plan");
    };
    let c = &plan.common;
    let base = c.url.trim_end_matches('/');

    let listener = TcpListener::bind(receiver_bind).await.with_context(|| {
        format!("binding the webhook receiver to --receiver-bind {receiver_bind}")
    })?;
    let bound = listener.local_addr()?;
    let receiver_url = match receiver_url {
        Some(url) => url.clone(),
        None => default_receiver_url(bound),
    };
    let receiver = Arc::new(Receiver::default());
    let server = tokio::spawn(serve(listener, receiver.clone()));

    let token_ttl = c.run.warmup + c.run.duration + c.run.timeout + Duration::from_secs(3600);
    let mut admin = HeaderValue::try_from(format!(
        "Bearer {}",
        hub::token_with_scope(&c.secret, workspace, token_ttl, hub::ADMIN_SCOPE)?
    ))?;
    admin.set_sensitive(true);
    let api = Api {
        hub: &hub,
        base,
        workspace,
        admin,
    };
    let (channel, secret) = api.create_channel(&receiver_url).await?;
    let key = secret_key(&secret).context("the channel's secret")?;
    receiver
        .key
        .set(key)
        .map_err(|_| anyhow::anyhow!("the receiver's key is set once"))?;
    // Whatever happens from here, the rule and the channel are deleted.
    let measured = match api.create_rule(&channel).await {
        Ok(rule) => {
            let measured = measure(plan, &hub, &receiver, receiver_url, bound, settings).await;
            api.delete(&format!("alerts/{rule}")).await;
            measured
        }
        Err(e) => Err(e),
    };
    server.abort();
    api.delete(&format!("notifications/channels/{channel}"))
        .await;
    measured
}

/// The load and the wait for its webhooks, once the channel and the rule exist.
async fn measure(
    plan: &Plan,
    hub: &Hub,
    receiver: &Receiver,
    receiver_url: String,
    bound: SocketAddr,
    settings: String,
) -> Result<Outcome> {
    let Workload::Alert { rate, .. } = plan.workload else {
        bail!("not an alert plan");
    };
    let c = &plan.common;
    let slots =
        (f64::from(rate) * (c.run.warmup + c.run.duration).as_secs_f64()).ceil() as usize + 1;
    if slots as u64 > HUB_MAX_AGENTS {
        eprintln!(
            "loadtest alert: warning: {slots} fresh agents exceed the hub's default \
             limits.max_agents_per_workspace ({HUB_MAX_AGENTS}); agents past the hub's limit \
             cannot fire and will show as lost"
        );
    }
    let max_latency_us =
        (c.run.warmup + c.run.duration + c.run.timeout + Duration::from_secs(1)).as_micros() as u64;
    eprintln!(
        "loadtest alert: webhooks to {receiver_url} (listening on {bound}); posting {rate} \
         failed runs/s of fresh agents from {} connections to {}, warmup {}, measuring {}…",
        plan.connections,
        c.url,
        show_duration(c.run.warmup),
        show_duration(c.run.duration)
    );
    let start = Instant::now();
    let measure_start = start + c.run.warmup;
    let end = measure_start + c.run.duration;
    let shared = Arc::new(Shared {
        hub: hub.clone(),
        start,
        measure_start,
        end,
        rate,
        next_slot: AtomicUsize::new(0),
        slots: (0..slots)
            .map(|_| Slot {
                state: AtomicU8::new(UNSENT),
                answered: AtomicU64::new(0),
            })
            .collect(),
        max_lag_us: AtomicU64::new(0),
        max_latency_us,
    });
    let cpu = tokio::spawn(crate::sample_cpu(measure_start, end, c.hub_pid));
    let posters: Vec<_> = (0..plan.connections)
        .map(|_| tokio::spawn(poster(shared.clone())))
        .collect();
    let mut stats = Stats::new(max_latency_us);
    for p in posters {
        stats.merge(p.await.context("a posting task failed")?);
    }

    // Every acked agent's firing, or the timeout.
    let load_done = Instant::now();
    let acked: Vec<usize> = (0..slots)
        .filter(|&i| shared.slots[i].state.load(Ordering::Acquire) == ACKED)
        .collect();
    let mut tally = Tally::default();
    let outstanding = acked.len() - tally.absorb(receiver, &acked);
    if outstanding > 0 {
        eprintln!(
            "loadtest alert: load done; waiting up to {} for {outstanding} outstanding \
             firings…",
            show_duration(c.run.timeout)
        );
    }
    let give_up = load_done + c.run.timeout;
    while tally.absorb(receiver, &acked) < acked.len() && Instant::now() < give_up {
        tokio::time::sleep(POLL).await;
    }
    let tail = load_done.elapsed();
    tokio::time::sleep(SETTLE).await;
    tally.absorb(receiver, &acked);
    let finished = start.elapsed();
    let cpu = cpu.await.ok().flatten();
    let hub_rss = c
        .hub_pid
        .map(|pid| hub::rss_mib(pid).map_err(|e| format!("{e:#}")));

    let figures = tally.figures(&shared, receiver, receiver_url, tail);
    Ok(Outcome {
        scenario: plan.scenario,
        settings,
        ingest: true,
        measured: c.run.duration,
        finished,
        stats,
        hub_runs: None,
        hub_rss,
        cpu,
        seeded: None,
        fanout: None,
        alert: Some(figures),
        ceiling: None,
        noisy: None,
    })
}

/// `http://<bound address>/hook`; an unspecified address (0.0.0.0, ::) is advertised as
/// loopback.
fn default_receiver_url(bound: SocketAddr) -> String {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}/hook")
}

/// The hub's admin endpoints for the run's workspace.
struct Api<'a> {
    hub: &'a Hub,
    base: &'a str,
    workspace: &'a str,
    admin: HeaderValue,
}

impl Api<'_> {
    fn url(&self, path: &str) -> Result<Url> {
        let mut url = Url::parse(&format!("{}/api/v1/{path}", self.base))?;
        url.query_pairs_mut()
            .append_pair("workspace_id", self.workspace);
        Ok(url)
    }

    /// POSTs `body`; returns the status and the answer's JSON (null when it is not JSON).
    async fn post(&self, path: &str, body: &Value) -> Result<(StatusCode, Value, String)> {
        let url = self.url(path)?;
        let resp = self
            .hub
            .client
            .post(url.clone())
            .header(AUTHORIZATION, self.admin.clone())
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of POST {url}"))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, value, run::snippet(text.as_bytes())))
    }

    /// A webhook channel to `receiver_url`: its id and secret.
    async fn create_channel(&self, receiver_url: &str) -> Result<(String, String)> {
        let body = json!({"type": "webhook", "url": receiver_url, "format": "shadower"});
        let (status, v, text) = self.post("notifications/channels", &body).await?;
        if status == StatusCode::BAD_REQUEST && v["error"]["code"] == "invalid_target" {
            bail!(
                "the hub refused the webhook URL {receiver_url} (400 invalid_target): it refuses \
                 loopback and private targets unless it runs with \
                 notifications.allow_private_targets = true \
                 (SHADOWER__NOTIFICATIONS__ALLOW_PRIVATE_TARGETS=true), or give a --receiver-url \
                 it accepts. The hub said: {text}"
            );
        }
        if status != StatusCode::CREATED {
            bail!(
                "creating the webhook channel answered {status} (the token has scopes `{}`): \
                 {text}",
                hub::ADMIN_SCOPE
            );
        }
        match (v["id"].as_str(), v["secret"].as_str()) {
            (Some(id), Some(secret)) => Ok((id.to_string(), secret.to_string())),
            _ => bail!("the created channel has no id and secret: {text}"),
        }
    }

    /// One alert per agent, firing on its first failed run.
    async fn create_rule(&self, channel: &str) -> Result<String> {
        let body = json!({
            "name": "loadtest", "metric": "error_rate", "window": "1m", "op": ">",
            "threshold": 0.5, "min_samples": 1, "group_by": "agent",
            "channel_ids": [channel],
        });
        let (status, v, text) = self.post("alerts", &body).await?;
        if status != StatusCode::CREATED {
            bail!("creating the alert rule answered {status}: {text}");
        }
        v["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the created rule has no id: {text}"))
    }

    /// DELETE, reporting a failure on stderr only.
    async fn delete(&self, path: &str) {
        let outcome = async {
            let url = self.url(path)?;
            let resp = self
                .hub
                .client
                .delete(url.clone())
                .header(AUTHORIZATION, self.admin.clone())
                .send()
                .await?;
            let status = resp.status();
            if !status.is_success() {
                bail!("DELETE {url} answered {status}");
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            eprintln!("loadtest alert: cleaning up: {e:#}");
        }
    }
}

/// `{"events":[…]}` with one failed run of agent `a{slot}`, completed now.
fn event_body(slot: usize) -> String {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    format!(
        "{{\"events\":[{{\"type\":\"run\",\"event_id\":\"alert-{slot}\",\"agent_id\":\"a{slot}\",\
         \"status\":\"failed\",\"completed_at\":\"{now}\",\"runtime_ms\":10}}]}}"
    )
}

/// The slot of agent `a{slot}`.
fn agent_slot(agent: &str) -> Option<usize> {
    let digits = agent.strip_prefix('a')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One posting loop: takes the next slot of the schedule, posts it when due, waits for the
/// answer, repeats. Nothing is sent after the end: slots still due then are never sent.
async fn poster(shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::new(shared.max_latency_us);
    let end = tokio::time::Instant::from_std(shared.end);
    let hub = &shared.hub;
    loop {
        let i = shared.next_slot.fetch_add(1, Ordering::Relaxed);
        let due = shared.due(i);
        if i >= shared.slots.len() || due >= shared.end {
            break;
        }
        let slot = &shared.slots[i];
        tokio::time::sleep_until(due.into()).await;
        if Instant::now() >= shared.end {
            slot.state.store(SKIPPED, Ordering::Release);
            break;
        }
        let request = hub
            .client
            .post(hub.events_url.clone())
            .header(AUTHORIZATION, hub.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(event_body(i));
        let sent = Instant::now();
        shared.max_lag_us.fetch_max(
            sent.saturating_duration_since(due).as_micros() as u64,
            Ordering::Relaxed,
        );
        slot.state.store(SENT, Ordering::Release);
        let outcome = run::execute(request, true).await;
        let answered = Instant::now();
        slot.answered.store(
            answered.duration_since(shared.start).as_micros() as u64 + 1,
            Ordering::Release,
        );
        let acked = matches!(outcome, run::Outcome::Ok { events: 1 });
        slot.state
            .store(if acked { ACKED } else { FAILED }, Ordering::Release);
        let wait = stats.count(
            outcome,
            answered.duration_since(sent),
            due >= shared.measure_start,
        );
        if let Some(wait) = wait {
            tokio::time::sleep_until((tokio::time::Instant::now() + wait).min(end)).await;
        }
    }
    stats
}

/// What the receiver concluded about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// No webhook headers, or a signature that does not verify.
    BadSignature,
    /// Validly signed, but not an alert webhook this run can read.
    Malformed,
    /// `alert.firing`, of this agent (`None`: without one).
    Firing(Option<String>),
    /// Another type (`alert.resolved`, …).
    Other,
}

/// One webhook as received.
struct Received {
    at: Instant,
    id: String,
    verdict: Verdict,
}

/// The webhook receiver's state.
#[derive(Default)]
struct Receiver {
    /// The channel's HMAC key; set before the rule exists, so before any webhook.
    key: OnceLock<Vec<u8>>,
    got: Mutex<Vec<Received>>,
    answered_2xx: AtomicU64,
    answered_other: AtomicU64,
}

/// Accepts connections until aborted; each is served with HTTP/1.1 keep-alive.
async fn serve(listener: TcpListener, receiver: Arc<Receiver>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of files, for one: try again shortly rather than stop receiving.
                eprintln!("loadtest alert: receiver: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| receive(receiver.clone(), req));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut r = Response::new(Empty::new());
    *r.status_mut() = status;
    r
}

/// One request to the receiver: a POST is read, checked, recorded and answered 204, also
/// when its signature is bad (the hub would only retry it); anything else is answered 405.
async fn receive(
    receiver: Arc<Receiver>,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        receiver.answered_other.fetch_add(1, Ordering::Relaxed);
        return Ok(answer(StatusCode::METHOD_NOT_ALLOWED));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let signature = header("webhook-signature");
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            receiver.answered_other.fetch_add(1, Ordering::Relaxed);
            return Ok(answer(StatusCode::BAD_REQUEST));
        }
    };
    let at = Instant::now();
    let verdict = match (receiver.key.get(), &id, &timestamp, &signature) {
        (Some(key), Some(id), Some(ts), Some(sig)) if signature_valid(key, id, ts, &body, sig) => {
            classify(id, &body)
        }
        _ => Verdict::BadSignature,
    };
    receiver
        .got
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            at,
            id: id.unwrap_or_default(),
            verdict,
        });
    receiver.answered_2xx.fetch_add(1, Ordering::Relaxed);
    Ok(answer(StatusCode::NO_CONTENT))
}

/// What a validly signed body is.
fn classify(id: &str, body: &[u8]) -> Verdict {
    #[derive(Deserialize)]
    struct Webhook {
        id: String,
        #[serde(rename = "type")]
        kind: String,
        alert: Option<AlertPart>,
    }
    #[derive(Deserialize)]
    struct AlertPart {
        agent_id: Option<String>,
    }
    match serde_json::from_slice::<Webhook>(body) {
        // The body's id is the webhook-id.
        Ok(w) if w.id != id => Verdict::Malformed,
        Ok(w) if w.kind == "alert.firing" => match w.alert {
            Some(a) => Verdict::Firing(a.agent_id),
            None => Verdict::Malformed,
        },
        Ok(_) => Verdict::Other,
        Err(_) => Verdict::Malformed,
    }
}

/// The HMAC key of a `whsec_<base64>` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>> {
    let b64 = secret
        .strip_prefix("whsec_")
        .context("a webhook secret starts with whsec_")?;
    STANDARD
        .decode(b64)
        .context("a webhook secret is whsec_ and base64")
}

/// Standard Webhooks: whether any of the space-separated `v1,<base64>` signatures in
/// `header` is the HMAC-SHA256 of `"{id}.{timestamp}.{body}"` under `key`.
pub fn signature_valid(key: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok())
}

/// The webhooks received so far, read incrementally.
#[derive(Default)]
struct Tally {
    /// How many of the receiver's records were read.
    read: usize,
    ids: HashSet<String>,
    /// Per slot whose agent fired: when its first firing arrived, and how many firings
    /// (distinct webhook-ids) it got.
    firings: HashMap<usize, (Instant, u64)>,
    /// Firings naming no agent of this run's schedule.
    strays: u64,
    retries_seen: u64,
    bad_signatures: u64,
    malformed: u64,
    other_types: u64,
    webhooks: u64,
    /// Arrival times, for the count in the measured time.
    arrivals: Vec<Instant>,
}

impl Tally {
    /// Reads what arrived since the last call; returns how many of `acked` have fired.
    fn absorb(&mut self, receiver: &Receiver, acked: &[usize]) -> usize {
        {
            let got = receiver.got.lock().unwrap_or_else(|e| e.into_inner());
            for r in &got[self.read..] {
                self.webhooks += 1;
                self.arrivals.push(r.at);
                if r.verdict == Verdict::BadSignature {
                    self.bad_signatures += 1;
                    continue;
                }
                if !self.ids.insert(r.id.clone()) {
                    self.retries_seen += 1;
                    continue;
                }
                match &r.verdict {
                    Verdict::BadSignature => unreachable!("counted above"),
                    Verdict::Malformed => self.malformed += 1,
                    Verdict::Other => self.other_types += 1,
                    Verdict::Firing(agent) => match agent.as_deref().and_then(agent_slot) {
                        Some(slot) => {
                            self.firings
                                .entry(slot)
                                .and_modify(|(_, n)| *n += 1)
                                .or_insert((r.at, 1));
                        }
                        None => self.strays += 1,
                    },
                }
            }
            self.read = got.len();
        }
        acked
            .iter()
            .filter(|slot| self.firings.contains_key(slot))
            .count()
    }

    fn figures(
        &self,
        shared: &Shared,
        receiver: &Receiver,
        receiver_url: String,
        tail: Duration,
    ) -> Alert {
        let histogram = || {
            Histogram::new_with_bounds(1, shared.max_latency_us.max(2), 3)
                .expect("valid histogram bounds")
        };
        let mut delivery = histogram();
        let mut after_answer = histogram();
        let (mut slots, mut unsent, mut acked, mut fired, mut lost) = (0, 0, 0, 0, 0);
        let mut unexpected = self.strays;
        for (i, slot) in shared.slots.iter().enumerate() {
            let due = shared.due(i);
            if due >= shared.end {
                break;
            }
            slots += 1;
            let state = slot.state.load(Ordering::Acquire);
            unsent += u64::from(matches!(state, UNSENT | SKIPPED));
            let firing = self.firings.get(&i);
            if state != ACKED {
                unexpected += u64::from(firing.is_some());
                continue;
            }
            acked += 1;
            let Some(&(at, _)) = firing else {
                lost += 1;
                continue;
            };
            fired += 1;
            if due >= shared.measure_start {
                let us =
                    |from: Instant| (at.saturating_duration_since(from).as_micros() as u64).max(1);
                delivery.saturating_record(us(due));
                let answered = shared.start
                    + Duration::from_micros(
                        slot.answered.load(Ordering::Acquire).saturating_sub(1),
                    );
                after_answer.saturating_record(us(answered));
            }
        }
        // Firings of slots past the schedule's end (cannot be this run's).
        unexpected += self
            .firings
            .keys()
            .filter(|&&i| i >= shared.slots.len() || shared.due(i) >= shared.end)
            .count() as u64;
        let duplicates = self.firings.values().map(|(_, n)| n - 1).sum();
        let webhooks_measured = self
            .arrivals
            .iter()
            .filter(|&&at| at >= shared.measure_start && at < shared.end)
            .count() as u64;
        Alert {
            rate: shared.rate,
            receiver_url,
            slots,
            unsent,
            max_schedule_lag: Duration::from_micros(shared.max_lag_us.load(Ordering::Relaxed)),
            acked,
            fired,
            lost,
            duplicates,
            retries_seen: self.retries_seen,
            bad_signatures: self.bad_signatures,
            malformed: self.malformed,
            unexpected,
            other_types: self.other_types,
            answered_2xx: receiver.answered_2xx.load(Ordering::Relaxed),
            answered_other: receiver.answered_other.load(Ordering::Relaxed),
            webhooks: self.webhooks,
            webhooks_measured,
            delivery,
            after_answer,
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vector of the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_reference_signature() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let (id, ts, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#.as_slice(),
        );
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(signature_valid(&key, id, ts, body, good));
        // One of several (a secret rotation) is enough.
        let other = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=";
        assert!(signature_valid(
            &key,
            id,
            ts,
            body,
            &format!("{other} {good}")
        ));
        assert!(!signature_valid(&key, id, ts, body, other));
        // Anything changed breaks it.
        assert!(!signature_valid(&key, id, "1614265331", body, good));
        assert!(!signature_valid(&key, "msg_other", ts, body, good));
        assert!(!signature_valid(
            &key,
            id,
            ts,
            br#"{"test": 2432232315}"#,
            good
        ));
        assert!(!signature_valid(&key[1..], id, ts, body, good));
        assert!(!signature_valid(
            &key,
            id,
            ts,
            body,
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!signature_valid(&key, id, ts, body, ""));
        assert!(!signature_valid(&key, id, ts, body, "v1,not base64!"));
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_!!").is_err());
    }

    #[test]
    fn webhook_bodies() {
        let firing = br#"{"id":"d1","type":"alert.firing","workspace_id":"lt-1","alert":{"rule_id":"r","name":"loadtest","severity":"warning","metric":"error_rate","agent_id":"a42","value":1.0}}"#;
        assert_eq!(classify("d1", firing), Verdict::Firing(Some("a42".into())));
        assert_eq!(
            classify("d2", firing),
            Verdict::Malformed,
            "body id is not the webhook-id"
        );
        let workspace_wide = br#"{"id":"d1","type":"alert.firing","alert":{"agent_id":null}}"#;
        assert_eq!(classify("d1", workspace_wide), Verdict::Firing(None));
        let resolved = br#"{"id":"d1","type":"alert.resolved","alert":{"agent_id":"a1"}}"#;
        assert_eq!(classify("d1", resolved), Verdict::Other);
        assert_eq!(classify("d1", b"not json"), Verdict::Malformed);
        assert_eq!(agent_slot("a42"), Some(42));
        assert_eq!(agent_slot("a0"), Some(0));
        for bad in ["a", "agent-1", "a-1", "a1x", "b1", ""] {
            assert_eq!(agent_slot(bad), None, "{bad}");
        }
        let body: Value = serde_json::from_str(&event_body(7)).unwrap();
        let e = &body["events"][0];
        assert_eq!(
            (
                e["type"].as_str(),
                e["agent_id"].as_str(),
                e["status"].as_str()
            ),
            (Some("run"), Some("a7"), Some("failed"))
        );
        assert_eq!(e["event_id"], "alert-7");
        assert!(chrono::DateTime::parse_from_rfc3339(e["completed_at"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn tally_counts_every_way_a_firing_can_go_wrong() {
        let hub = Hub::new(
            "http://127.0.0.1:9",
            "secret",
            "lt-00",
            Duration::from_secs(60),
            1,
            Duration::from_secs(1),
        )
        .unwrap();
        let start = Instant::now();
        // 10 slots due in the run (10/s for 1 s), all measured; one more past the end.
        let states = [
            ACKED, ACKED, ACKED, ACKED, ACKED, ACKED, FAILED, SKIPPED, ACKED, UNSENT, UNSENT,
        ];
        let shared = Shared {
            hub,
            start,
            measure_start: start,
            end: start + Duration::from_secs(1),
            rate: 10,
            next_slot: AtomicUsize::new(0),
            slots: states
                .iter()
                .enumerate()
                .map(|(i, s)| Slot {
                    state: AtomicU8::new(*s),
                    // Answered 10 ms after due.
                    answered: AtomicU64::new(if *s == ACKED {
                        i as u64 * 100_000 + 10_001
                    } else {
                        0
                    }),
                })
                .collect(),
            max_lag_us: AtomicU64::new(0),
            max_latency_us: 10_000_000,
        };
        let receiver = Receiver::default();
        let ms = |n: u64| start + Duration::from_millis(n);
        let firing = |agent: &str| Verdict::Firing(Some(agent.into()));
        for (at, id, verdict) in [
            (ms(50), "d0", firing("a0")),
            (ms(60), "d0", firing("a0")), // the same webhook-id again: a retry
            (ms(150), "d1", firing("a1")),
            (ms(170), "d1b", firing("a1")), // another webhook-id for a1: a duplicate
            (ms(200), "d2", Verdict::BadSignature),
            (ms(260), "d2", firing("a2")),
            (ms(700), "d6", firing("a6")), // its POST failed
            (ms(700), "dx", firing("agent-x")),
            (ms(1100), "d10", firing("a10")), // due after the end
            (ms(1200), "r1", Verdict::Other),
            (ms(1300), "m1", Verdict::Malformed),
        ] {
            receiver.got.lock().unwrap().push(Received {
                at,
                id: id.into(),
                verdict,
            });
        }
        let acked = [0, 1, 2, 3, 4, 5, 8];
        let mut tally = Tally::default();
        assert_eq!(tally.absorb(&receiver, &acked), 3);
        assert_eq!(tally.absorb(&receiver, &acked), 3, "nothing is read twice");
        let a = tally.figures(&shared, &receiver, "http://x/hook".into(), Duration::ZERO);
        assert_eq!(
            (a.slots, a.unsent, a.acked, a.fired, a.lost),
            (10, 2, 7, 3, 4)
        );
        assert_eq!((a.duplicates, a.retries_seen), (1, 1));
        assert_eq!((a.bad_signatures, a.malformed, a.other_types), (1, 1, 1));
        assert_eq!(
            a.unexpected, 3,
            "a6 (failed POST), agent-x, a10 (past the end)"
        );
        assert_eq!((a.webhooks, a.webhooks_measured), (11, 8));
        assert_eq!(a.bad_webhooks(), 2);
        // First firings only: 50, 50 and 60 ms after due; 40, 40, 50 after the answers.
        assert_eq!(a.delivery.len(), 3);
        assert!(a.delivery.equivalent(a.delivery.max(), 60_000));
        assert!(a.delivery.equivalent(a.delivery.min(), 50_000));
        assert!(a.after_answer.equivalent(a.after_answer.max(), 50_000));
    }

    #[test]
    fn receiver_urls() {
        assert_eq!(
            default_receiver_url("127.0.0.1:8123".parse().unwrap()),
            "http://127.0.0.1:8123/hook"
        );
        assert_eq!(
            default_receiver_url("0.0.0.0:8123".parse().unwrap()),
            "http://127.0.0.1:8123/hook"
        );
        assert_eq!(
            default_receiver_url("[::]:8123".parse().unwrap()),
            "http://[::1]:8123/hook"
        );
    }
}
