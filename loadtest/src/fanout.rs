//! The `fanout` scenario: `--sessions` WebSocket sessions on the run's workspace, run events
//! posted at `--rate` per second (one per POST), and for every session the time from each
//! POST being sent to the first frame that counts its event.
//!
//! Matching frames to events: every `update` frame with execution data carries the
//! workspace's absolute `execution.<window>.runs`. Events are numbered in the order they are
//! *sent* (one paced schedule, event `i` due at `start + i/rate`, taken by whichever posting
//! loop is free) and their send times go into a shared log. When a session sees `runs = N`,
//! every event up to the N-th (skipping posts known to have failed) it has not counted yet
//! is attributed to that frame: latency = frame arrival − send time. The hub commits with
//! several transactions in flight, so event `j+1` may be applied before `j`; those events
//! are then attributed off by up to about one coalescing period (`ws.coalesce_ms`).
//!
//! The count comes from the `1m` window when the run (warmup, measured time and tail) fits in
//! [`M1_LIMIT`] (the window spans at least 55 s), else from `1h`.
//!
//! Client cost is kept low: 4 KiB read buffers per session, and per frame only the
//! workspace's `execution` object is deserialized (into just the window's `runs`). Latencies
//! go into a few shared histograms (one per session would be ~250 KiB each).
//!
//! With `--distinct-subscriptions` every session, once it has its snapshot, subscribes to
//! every posted agent and a name of its own: no two subscriptions are equal, so the hub
//! assembles and serializes every session's frame apart, while each update still reaches
//! every session (and carries the workspace's windows the count comes from).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::http::header::RETRY_AFTER;
use tokio_tungstenite::tungstenite::http::{Response, StatusCode, Uri};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::cli::{show_duration, Plan, Workload};
use crate::events::{EventGen, Fragments, Rng};
use crate::hub::{self, Hub};
use crate::report::{CpuUse, Fanout, Outcome};
use crate::run::{self, Stats};

/// Read buffer per session (the 128 KiB default would make the client, not the hub, hold
/// the memory with thousands of sessions).
const READ_BUFFER: usize = 4096;
/// WebSocket handshakes in flight while connecting.
const CONNECTS_IN_FLIGHT: usize = 64;
/// Longest `Retry-After` honoured for a refused upgrade.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// After the last POST, how long sessions may take to count every acked event.
const TAIL: Duration = Duration::from_secs(2);
/// Runs up to this long (warmup + duration + tail) count with the 1m window.
const M1_LIMIT: Duration = Duration::from_secs(50);
/// Runs up to this long count with the 1h window (it spans at least 59 minutes).
const H1_LIMIT: Duration = Duration::from_secs(55 * 60);
/// Pause after connecting before the idle RSS is read.
const SETTLE: Duration = Duration::from_millis(500);
/// Latency histograms shared by the sessions (a session always uses the same one).
const SHARDS: usize = 16;

/// In the send log: this event has not been sent yet.
const UNSENT: u64 = 0;
/// In the send log: this event's POST failed, so the hub does not count it.
const FAILED: u64 = u64::MAX;
/// In the send log: this event was due before the end but not sent by then.
const SKIPPED: u64 = u64::MAX - 1;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The window whose `runs` count is read from frames.
#[derive(Debug, Clone, Copy)]
enum CountWindow {
    M1,
    H1,
}

impl CountWindow {
    fn as_str(self) -> &'static str {
        match self {
            Self::M1 => "1m",
            Self::H1 => "1h",
        }
    }
}

/// When the posting runs; set once every session is connected.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub start: Instant,
    pub measure_start: Instant,
    pub end: Instant,
}

/// The end of the posting: sessions stop once they counted `acked` events or at `deadline`.
#[derive(Debug, Clone, Copy)]
struct Finish {
    acked: u64,
    deadline: Instant,
}

/// What sessions and posting loops share.
struct Shared {
    hub: Hub,
    ws_uri: Uri,
    window: CountWindow,
    timeout: Duration,
    /// How long a session retries upgrades refused by the rate limit.
    connect_timeout: Duration,
    connects: Semaphore,
    /// Upgrades refused by the rate limit (and retried).
    refusals: AtomicU64,
    timing: OnceLock<Timing>,
    /// Each session subscribes to agents of its own.
    distinct: bool,
    rate: u32,
    fragments: Arc<Fragments>,
    /// Next event of the paced schedule.
    next_event: AtomicUsize,
    /// Per event in schedule order: µs from `Timing::start` to its send, plus 1; or
    /// [`UNSENT`], [`FAILED`] or [`SKIPPED`].
    sent: Vec<AtomicU64>,
    /// Per event: µs from `Timing::start` to its POST's 200 answer, plus 1; or [`UNSENT`]
    /// while unanswered.
    answered: Vec<AtomicU64>,
    /// Latest send after its due time, µs.
    max_lag_us: AtomicU64,
    /// Per shard, POST sent → frame and POST answered → frame (0 when the frame came
    /// first), µs, measured events only.
    delivery: Vec<Mutex<Latencies>>,
    max_latency_us: u64,
}

fn latency_histogram(max_us: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, max_us.max(2), 3).expect("valid histogram bounds")
}

/// A shard of delivery latencies.
struct Latencies {
    from_send: Histogram<u64>,
    from_answer: Histogram<u64>,
    /// Per measured frame: its `ts` (when the hub built it) → received.
    transit: Histogram<u64>,
}

impl Latencies {
    fn new(max_us: u64) -> Self {
        Self {
            from_send: latency_histogram(max_us),
            from_answer: latency_histogram(max_us),
            transit: latency_histogram(max_us),
        }
    }
}

/// How one session ended.
#[derive(Default)]
struct SessionEnd {
    connected: bool,
    /// Why the session could not connect or closed before the end.
    failure: Option<String>,
    /// Frames received during the measured time, and in all.
    frames: u64,
    frames_total: u64,
    frame_bytes: u64,
    /// Highest run count seen, relative to the snapshot's.
    seen: u64,
    /// Kept open until the final RSS is read.
    ws: Option<Ws>,
}

/// Runs the scenario; `started` (if given) is told the posting's timing once every session
/// is connected, for load that runs beside it (`noisy-neighbour`).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    plan: &Plan,
    hub: Hub,
    workspace: &str,
    token_ttl: Duration,
    fragments: Arc<Fragments>,
    rng: &mut Rng,
    settings: String,
    started: Option<watch::Sender<Option<Timing>>>,
) -> Result<Outcome> {
    let Workload::Fanout {
        sessions,
        rate,
        connect_timeout,
        distinct,
    } = plan.workload
    else {
        bail!("not a fanout plan");
    };
    let c = &plan.common;
    // Idle sessions have nothing to warm up.
    let warmup = if rate == 0 {
        Duration::ZERO
    } else {
        c.run.warmup
    };
    let span = warmup + c.run.duration + TAIL;
    let window = if span <= M1_LIMIT {
        CountWindow::M1
    } else if span <= H1_LIMIT {
        CountWindow::H1
    } else {
        bail!(
            "fanout matches frames to events by the 1h run count, so warmup + duration must \
             stay under {}",
            show_duration(H1_LIMIT - TAIL)
        );
    };
    let token = hub::token(&c.secret, workspace, token_ttl)?;
    let ws_uri: Uri = hub::ws_url(&c.url, workspace, &token)?
        .as_str()
        .parse()
        .context("the WebSocket URL")?;
    let rss = || {
        c.hub_pid
            .and_then(|pid| hub::rss_mib(pid).ok())
            .map(|r| r.0)
    };
    let rss_before = rss();

    // Room in the send log for every event of the schedule.
    let events = match rate {
        0 => 0,
        _ => (f64::from(rate) * (warmup + c.run.duration).as_secs_f64()).ceil() as usize + 1,
    };
    let max_latency_us = (span + c.run.timeout).as_micros() as u64;
    let shared = Arc::new(Shared {
        hub,
        ws_uri,
        window,
        timeout: c.run.timeout,
        connect_timeout,
        connects: Semaphore::new(CONNECTS_IN_FLIGHT),
        refusals: AtomicU64::new(0),
        timing: OnceLock::new(),
        distinct,
        rate,
        fragments,
        next_event: AtomicUsize::new(0),
        sent: (0..events).map(|_| AtomicU64::new(UNSENT)).collect(),
        answered: (0..events).map(|_| AtomicU64::new(UNSENT)).collect(),
        max_lag_us: AtomicU64::new(0),
        delivery: (0..SHARDS)
            .map(|_| Mutex::new(Latencies::new(max_latency_us)))
            .collect(),
        max_latency_us,
    });

    eprintln!(
        "loadtest fanout: connecting {sessions} sessions to {}…",
        redact(&shared.ws_uri)
    );
    let connect_start = Instant::now();
    let connect_cpu = CpuProbe::new(c.hub_pid);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (finish_tx, finish_rx) = watch::channel(None);
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            tokio::spawn(session(
                shared.clone(),
                i,
                ready_tx.clone(),
                finish_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let (mut connected, mut sample_failure) = (0u64, None);
    while let Some(ready) = ready_rx.recv().await {
        match ready {
            Ok(()) => connected += 1,
            Err(why) => {
                sample_failure.get_or_insert(why);
            }
        }
    }
    let connect_time = connect_start.elapsed();
    let connect_cpu = connect_cpu.finish();
    if connected == 0 {
        bail!(
            "no session connected: {}",
            sample_failure.as_deref().unwrap_or("?")
        );
    }
    eprintln!(
        "loadtest fanout: {connected} of {sessions} sessions connected in {:.2}s",
        connect_time.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let rss_idle = rss();

    let start = Instant::now();
    let measure_start = start + warmup;
    let end = measure_start + c.run.duration;
    let timing = Timing {
        start,
        measure_start,
        end,
    };
    shared.timing.set(timing).expect("timing is set once");
    if let Some(started) = &started {
        let _ = started.send(Some(timing));
    }
    if rate > 0 {
        eprintln!(
            "loadtest fanout: posting {rate} events/s from {} connections, warmup {}, measuring {}…",
            plan.connections,
            show_duration(warmup),
            show_duration(c.run.duration)
        );
    } else {
        eprintln!(
            "loadtest fanout: holding the sessions idle for {}…",
            show_duration(c.run.duration)
        );
    }
    let cpu = tokio::spawn(crate::sample_cpu(measure_start, end, c.hub_pid));
    let stalls = tokio::spawn(timer_lateness(measure_start, end, max_latency_us));
    let mut stats = Stats::new(max_latency_us);
    if rate > 0 {
        let posters: Vec<_> = (0..plan.connections)
            .map(|i| tokio::spawn(poster(shared.clone(), i, rng.next_u64())))
            .collect();
        for p in posters {
            stats.merge(p.await.context("a posting task failed")?);
        }
    } else {
        tokio::time::sleep_until(end.into()).await;
    }
    let _ = finish_tx.send(Some(Finish {
        acked: stats.acked_total,
        deadline: Instant::now() + TAIL,
    }));

    let mut ends = Vec::with_capacity(sessions);
    for t in tasks {
        ends.push(t.await.context("a session task failed")?);
    }
    let finished = connect_start.elapsed();
    let hub_rss = c
        .hub_pid
        .map(|pid| hub::rss_mib(pid).map_err(|e| format!("{e:#}")));
    let cpu = cpu.await.ok().flatten();
    let stalls = stalls.await.context("the timer probe failed")?;
    let hub_runs = if rate > 0 {
        Some(shared.hub.runs_24h().await.map_err(|e| format!("{e:#}")))
    } else {
        None
    };

    let mut figures = Fanout {
        sessions: sessions as u64,
        rate,
        window: window.as_str(),
        connected,
        connect_time,
        connect_cpu,
        refused_upgrades: shared.refusals.load(Ordering::Relaxed),
        failed_to_connect: sessions as u64 - connected,
        closed_early: 0,
        sample_failure,
        frames: 0,
        frames_total: 0,
        frame_bytes: 0,
        delivery: latency_histogram(max_latency_us),
        after_answer: latency_histogram(max_latency_us),
        transit: latency_histogram(max_latency_us),
        client_stalls: stalls,
        lost: 0,
        sessions_behind: 0,
        max_schedule_lag: Duration::from_micros(shared.max_lag_us.load(Ordering::Relaxed)),
        unsent: unsent(&shared, &timing),
        rss_before,
        rss_idle,
    };
    for e in &mut ends {
        figures.frames += e.frames;
        figures.frames_total += e.frames_total;
        figures.frame_bytes += e.frame_bytes;
        if !e.connected {
            continue;
        }
        if let Some(why) = e.failure.take() {
            figures.closed_early += 1;
            figures.sample_failure.get_or_insert(why);
            continue;
        }
        let missed = stats.acked_total.saturating_sub(e.seen);
        figures.lost += missed;
        figures.sessions_behind += u64::from(missed > 0);
    }
    // The sessions close only now, after the final RSS.
    drop(ends);
    for shard in &shared.delivery {
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        figures
            .delivery
            .add(&shard.from_send)
            .expect("histograms with the same bounds");
        figures
            .after_answer
            .add(&shard.from_answer)
            .expect("histograms with the same bounds");
        figures
            .transit
            .add(&shard.transit)
            .expect("histograms with the same bounds");
    }

    Ok(Outcome {
        scenario: plan.scenario,
        settings,
        ingest: rate > 0,
        measured: c.run.duration,
        finished,
        stats,
        hub_runs,
        hub_rss,
        cpu,
        seeded: None,
        fanout: Some(figures),
        alert: None,
        ceiling: None,
        noisy: None,
    })
}

/// Events due before the end that were never sent (every posting loop was waiting for an
/// answer until the end).
fn unsent(shared: &Shared, t: &Timing) -> u64 {
    let per_event = 1.0 / f64::from(shared.rate.max(1));
    shared
        .sent
        .iter()
        .enumerate()
        .take_while(|(i, _)| t.start + Duration::from_secs_f64(*i as f64 * per_event) < t.end)
        .filter(|(_, s)| matches!(s.load(Ordering::Relaxed), UNSENT | SKIPPED))
        .count() as u64
}

/// How late a 1 ms timer fires in this process from `from` to `to`, µs: when it is late, the
/// client itself delays reading frames and sending posts.
async fn timer_lateness(from: Instant, to: Instant, max_us: u64) -> Histogram<u64> {
    let mut h = latency_histogram(max_us);
    tokio::time::sleep_until(from.into()).await;
    while Instant::now() < to {
        let due = Instant::now() + Duration::from_millis(1);
        tokio::time::sleep_until(due.into()).await;
        h.saturating_record(
            (Instant::now().saturating_duration_since(due).as_micros() as u64).max(1),
        );
    }
    h
}

/// The URL without its token, for messages.
fn redact(uri: &Uri) -> String {
    let s = uri.to_string();
    match s.split_once("token=") {
        Some((head, _)) => format!("{head}token=<jwt>"),
        None => s,
    }
}

/// CPU use of this process and the hub from its creation to [`CpuProbe::finish`].
struct CpuProbe {
    at: Instant,
    hub_pid: Option<String>,
    client: Option<Duration>,
    hub: Option<Duration>,
}

impl CpuProbe {
    fn new(hub_pid: Option<u32>) -> Self {
        let hub_pid = hub_pid.map(|p| p.to_string());
        Self {
            at: Instant::now(),
            client: hub::cpu_time("self"),
            hub: hub_pid.as_deref().and_then(hub::cpu_time),
            hub_pid,
        }
    }

    fn finish(self) -> Option<CpuUse> {
        let wall = self.at.elapsed().as_secs_f64();
        let share = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.saturating_sub(before?).as_secs_f64() / wall * 100.0)
        };
        Some(CpuUse {
            client_pct: share(self.client, hub::cpu_time("self"))?,
            hub_pct: share(self.hub, self.hub_pid.as_deref().and_then(hub::cpu_time)),
        })
    }
}

/// One posting loop: takes the next event of the paced schedule, sends it when due (one
/// event per POST), waits for the answer, repeats until the end. Nothing is sent after the
/// end: events still due then are counted as unsent, so a slipping schedule shows as a lower
/// rate rather than a longer run.
async fn poster(shared: Arc<Shared>, index: usize, seed: u64) -> Stats {
    let t = *shared.timing.get().expect("timing is set before posting");
    let mut stats = Stats::new(shared.max_latency_us);
    let mut gen = EventGen::new(format!("p{index}"), seed, shared.fragments.clone());
    let end = tokio::time::Instant::from_std(t.end);
    let hub = &shared.hub;
    let per_event = 1.0 / f64::from(shared.rate);
    loop {
        let i = shared.next_event.fetch_add(1, Ordering::Relaxed);
        let due = t.start + Duration::from_secs_f64(i as f64 * per_event);
        if i >= shared.sent.len() || due >= t.end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if Instant::now() >= t.end {
            shared.sent[i].store(SKIPPED, Ordering::Release);
            break;
        }
        let request = hub
            .client
            .post(hub.events_url.clone())
            .header(AUTHORIZATION, hub.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(gen.body(1));
        let sent = Instant::now();
        shared.max_lag_us.fetch_max(
            sent.saturating_duration_since(due).as_micros() as u64,
            Ordering::Relaxed,
        );
        shared.sent[i].store(
            sent.duration_since(t.start).as_micros() as u64 + 1,
            Ordering::Release,
        );
        let outcome = run::execute(request, true).await;
        let answered = Instant::now();
        shared.answered[i].store(
            answered.duration_since(t.start).as_micros() as u64 + 1,
            Ordering::Release,
        );
        let latency = answered.duration_since(sent);
        if let Some(wait) = stats.count(outcome, latency, sent >= t.measure_start) {
            shared.sent[i].store(FAILED, Ordering::Release);
            tokio::time::sleep_until((tokio::time::Instant::now() + wait).min(end)).await;
        }
    }
    stats
}

/// One session: connect, report the snapshot, then count frames and attribute events until
/// it has counted every acked event or the tail is over.
async fn session(
    shared: Arc<Shared>,
    index: usize,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    mut finish: watch::Receiver<Option<Finish>>,
) -> SessionEnd {
    let mut end = SessionEnd::default();
    let (mut ws, baseline) = match open(&shared, index).await {
        Ok(opened) => opened,
        Err(why) => {
            let _ = ready.send(Err(why));
            return end;
        }
    };
    end.connected = true;
    let _ = ready.send(Ok(()));
    drop(ready);
    let shard = &shared.delivery[index % shared.delivery.len()];
    let mut attribution = Attribution::default();
    let mut target: Option<Finish> = None;
    loop {
        if target.is_some_and(|f| end.seen >= f.acked) {
            break;
        }
        let deadline = target.map(|f| f.deadline);
        let message = tokio::select! {
            message = ws.next() => message,
            changed = finish.changed(), if target.is_none() => {
                match changed {
                    Ok(()) => target = *finish.borrow_and_update(),
                    Err(_) => break,
                }
                continue;
            }
            () = sleep_until(deadline) => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                end.failure = Some(closed(frame));
                break;
            }
            // Pings are answered by the library.
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                end.failure = Some(format!("session error: {}", run::error_chain(&e)));
                break;
            }
            None => {
                end.failure = Some("the connection ended without a close frame".into());
                break;
            }
        };
        if shared.distinct && text.as_str().starts_with(r#"{"type":"error""#) {
            // The workspace was busy: subscribe again (the hub says so in the error).
            let _ = ws.send(Message::text(subscription(index))).await;
            continue;
        }
        let now = Instant::now();
        end.frames_total += 1;
        end.frame_bytes += text.as_str().len() as u64;
        let Some(t) = shared.timing.get() else {
            continue;
        };
        if now >= t.measure_start && now < t.end {
            end.frames += 1;
            if let Some(built) = frame_ts(text.as_str()) {
                let us = (Utc::now() - built).num_microseconds().unwrap_or(0).max(1);
                let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
                h.transit.saturating_record(us as u64);
            }
        }
        let Some(runs) = frame_runs(text.as_str(), shared.window) else {
            continue;
        };
        let runs = runs.saturating_sub(baseline);
        if runs > end.seen {
            end.seen = runs;
            attribution.advance(&shared, t, shard, runs, now);
        }
    }
    if end.failure.is_none() {
        end.ws = Some(ws);
    }
    end
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Connects and reads the snapshot; returns the session and the snapshot's run count.
/// Upgrades refused by the rate limit are retried after their `Retry-After` (plus jitter, so
/// the refused sessions do not come back all at once) for up to `--connect-timeout`.
async fn open(shared: &Shared, index: usize) -> Result<(Ws, u64), String> {
    let give_up = Instant::now() + shared.connect_timeout;
    let mut rng = Rng::new(index as u64);
    loop {
        let permit = shared.connects.acquire().await.map_err(|e| e.to_string())?;
        let attempt = tokio::time::timeout(shared.timeout, handshake(shared, index)).await;
        drop(permit);
        let wait = match attempt {
            Ok(Ok(opened)) => return Ok(opened),
            Ok(Err(Refusal::Retry { wait, why })) => {
                let wait = wait.mul_f64(1.0 + rng.unit());
                if Instant::now() + wait >= give_up {
                    return Err(format!(
                        "{why}, still after {}",
                        show_duration(shared.connect_timeout)
                    ));
                }
                wait
            }
            Ok(Err(Refusal::Final(why))) => return Err(why),
            Err(_) => {
                return Err(format!(
                    "no snapshot within {}",
                    show_duration(shared.timeout)
                ))
            }
        };
        shared.refusals.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

/// Why an attempt to open a session failed.
enum Refusal {
    /// Refused for now (rate limit, 503): try again after `wait`.
    Retry {
        wait: Duration,
        why: String,
    },
    Final(String),
}

/// One attempt: the upgrade, then the snapshot (and the session's own subscription).
async fn handshake(shared: &Shared, index: usize) -> Result<(Ws, u64), Refusal> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let mut ws = match tokio_tungstenite::connect_async_with_config(
        &shared.ws_uri,
        Some(config),
        true,
    )
    .await
    {
        Ok((ws, _)) => ws,
        Err(WsError::Http(response)) => return Err(refused(&response)),
        Err(e) => {
            return Err(Refusal::Final(format!(
                "connecting: {}",
                run::error_chain(&e)
            )))
        }
    };
    loop {
        let why = match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let text = text.as_str();
                if !text.contains(r#""type":"snapshot""#) {
                    return Err(Refusal::Final(format!(
                        "the first frame is not a snapshot: {}",
                        run::snippet(text.as_bytes())
                    )));
                }
                let Some(runs) = frame_runs(text, shared.window) else {
                    return Err(Refusal::Final("the snapshot has no execution runs".into()));
                };
                if shared.distinct {
                    ws.send(Message::text(subscription(index)))
                        .await
                        .map_err(|e| Refusal::Final(format!("subscribing: {e}")))?;
                }
                return Ok((ws, runs));
            }
            Some(Ok(Message::Close(frame))) => closed(frame),
            Some(Ok(_)) => continue,
            Some(Err(e)) => format!("before the snapshot: {}", run::error_chain(&e)),
            None => "the connection ended before the snapshot".into(),
        };
        return Err(Refusal::Final(why));
    }
}

/// Session `index`'s own subscription: every posted agent and a name no other session asks
/// for.
fn subscription(index: usize) -> String {
    let agents: String = (0..crate::events::AGENTS)
        .map(|a| format!(r#""{}","#, crate::events::agent_name(a)))
        .collect();
    format!(r#"{{"type":"subscribe","agent_ids":[{agents}"s-{index}"]}}"#)
}

/// A refused upgrade: retried when the rate limit (429 `rate_limited`) or a 503 refused it,
/// not when a session cap did (429 `too_many_sessions`).
fn refused(response: &Response<Option<Vec<u8>>>) -> Refusal {
    let status = response.status();
    let body = response.body().as_deref().unwrap_or_default();
    let why = format!("upgrade refused: {status}: {}", run::snippet(body));
    let cap = String::from_utf8_lossy(body).contains("too_many_sessions");
    if !(status == StatusCode::SERVICE_UNAVAILABLE
        || (status == StatusCode::TOO_MANY_REQUESTS && !cap))
    {
        return Refusal::Final(why);
    }
    let wait = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER);
    Refusal::Retry { wait, why }
}

fn closed(frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed by the hub: {} {}", u16::from(f.code), f.reason),
        None => "closed by the hub without a code".into(),
    }
}

/// A session's place in the send log.
#[derive(Default)]
struct Attribution {
    /// Next entry of the send log to look at.
    next: usize,
    /// Events counted so far (failed posts are skipped, not counted).
    counted: u64,
}

impl Attribution {
    /// The frame that arrived `now` counts `runs` events: the ones not counted before are
    /// delivered by it.
    fn advance(
        &mut self,
        shared: &Shared,
        t: &Timing,
        shard: &Mutex<Latencies>,
        runs: u64,
        now: Instant,
    ) {
        let mut histogram = None;
        while self.counted < runs {
            let Some(slot) = shared.sent.get(self.next) else {
                break;
            };
            let sent = slot.load(Ordering::Acquire);
            if sent == UNSENT {
                // Counted before its send was logged: the next frame takes it.
                break;
            }
            self.next += 1;
            if sent == FAILED || sent == SKIPPED {
                continue;
            }
            self.counted += 1;
            let sent = t.start + Duration::from_micros(sent - 1);
            if sent >= t.measure_start {
                let us =
                    |from: Instant| (now.saturating_duration_since(from).as_micros() as u64).max(1);
                let answered = match shared.answered[self.next - 1].load(Ordering::Acquire) {
                    UNSENT => now,
                    at => t.start + Duration::from_micros(at - 1),
                };
                let h = histogram
                    .get_or_insert_with(|| shard.lock().unwrap_or_else(|e| e.into_inner()));
                h.from_send.saturating_record(us(sent));
                h.from_answer.saturating_record(us(answered));
            }
        }
    }
}

/// A frame's `ts` (when the hub built it; milliseconds, so up to 1 ms early).
fn frame_ts(text: &str) -> Option<DateTime<Utc>> {
    const KEY: &str = r#""ts":""#;
    let at = text.rfind(KEY)? + KEY.len();
    let ts = text[at..].split('"').next()?;
    Some(DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc))
}

/// The workspace's `execution.<window>.runs` in a frame, if it carries execution data.
///
/// Only the `execution` object is deserialized: the frame's `agents` map (per-agent windows,
/// nearly all of an update's bytes) is skipped by a substring search, as no agent or model
/// of this load is named `execution`. The search runs from the end: the hub writes keys in
/// sorted order, so `agents` comes first and `execution` near the end.
fn frame_runs(text: &str, window: CountWindow) -> Option<u64> {
    #[derive(Deserialize)]
    struct Windows {
        #[serde(rename = "1m")]
        m1: Option<Runs>,
        #[serde(rename = "1h")]
        h1: Option<Runs>,
    }
    #[derive(Deserialize)]
    struct Runs {
        runs: u64,
    }
    const KEY: &str = r#""execution":"#;
    let at = text.rfind(KEY)? + KEY.len();
    let mut de = serde_json::Deserializer::from_str(&text[at..]);
    let windows = Windows::deserialize(&mut de).ok()?;
    match window {
        CountWindow::M1 => windows.m1,
        CountWindow::H1 => windows.h1,
    }
    .map(|r| r.runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_the_workspace_window() {
        let frame = r#"{"agents":{"agent-1":{"1h":{"runs":1,"models":{"gpt-4o":{"runs":1}}},"1m":{"runs":1}}},"epoch":1,"execution":{"1h":{"window":"1h","models":{"gpt-4o":{"runs":40}},"runs":41},"1m":{"models":{},"runs":7,"succeeded":7},"5m":{"runs":9}},"resources":{},"seq":3,"ts":"2026-01-01T00:00:00.000Z","type":"update"}"#;
        assert_eq!(frame_runs(frame, CountWindow::M1), Some(7));
        assert_eq!(frame_runs(frame, CountWindow::H1), Some(41));
        let resources_only = r#"{"epoch":1,"resources":{"agent-1":{}},"seq":4,"type":"update"}"#;
        assert_eq!(frame_runs(resources_only, CountWindow::M1), None);
        let narrowed = r#"{"execution":{"5m":{"runs":9}},"type":"update"}"#;
        assert_eq!(frame_runs(narrowed, CountWindow::M1), None);
        let ts = frame_ts(frame).unwrap();
        assert_eq!(ts.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(frame_ts(resources_only), None);
    }

    #[test]
    fn refused_upgrades() {
        let response = |status: u16, retry_after: Option<&str>, body: &str| {
            let mut r = Response::builder().status(status);
            if let Some(v) = retry_after {
                r = r.header(RETRY_AFTER, v);
            }
            r.body(Some(body.as_bytes().to_vec())).unwrap()
        };
        let limited = r#"{"error":{"code":"rate_limited","message":"…"}}"#;
        match refused(&response(429, Some("2"), limited)) {
            Refusal::Retry { wait, why } => {
                assert_eq!(wait, Duration::from_secs(2));
                assert!(why.contains("429"), "{why}");
            }
            Refusal::Final(why) => panic!("{why}"),
        }
        assert!(matches!(
            refused(&response(503, Some("60"), "{}")),
            Refusal::Retry { wait, .. } if wait == MAX_RETRY_AFTER
        ));
        assert!(matches!(
            refused(&response(429, None, limited)),
            Refusal::Retry { wait, .. } if wait == Duration::from_secs(1)
        ));
        let cap = r#"{"error":{"code":"too_many_sessions","message":"…"}}"#;
        assert!(matches!(
            refused(&response(429, Some("1"), cap)),
            Refusal::Final(_)
        ));
        assert!(matches!(
            refused(&response(401, None, "{}")),
            Refusal::Final(_)
        ));
    }

    fn shared(sent: &[u64]) -> Shared {
        let hub = Hub::new(
            "http://127.0.0.1:9",
            "secret",
            "lt-00",
            Duration::from_secs(60),
            1,
            Duration::from_secs(1),
        )
        .unwrap();
        Shared {
            hub,
            ws_uri: "ws://127.0.0.1:9/ws/metrics/lt-00".parse().unwrap(),
            window: CountWindow::M1,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            connects: Semaphore::new(1),
            refusals: AtomicU64::new(0),
            timing: OnceLock::new(),
            distinct: false,
            rate: 1000,
            fragments: Fragments::new(1),
            next_event: AtomicUsize::new(0),
            sent: sent.iter().map(|s| AtomicU64::new(*s)).collect(),
            answered: sent.iter().map(|_| AtomicU64::new(UNSENT)).collect(),
            max_lag_us: AtomicU64::new(0),
            delivery: Vec::new(),
            max_latency_us: 10_000_000,
        }
    }

    #[test]
    fn events_are_attributed_in_send_order() {
        let start = Instant::now();
        let t = Timing {
            start,
            measure_start: start + Duration::from_millis(2),
            end: start + Duration::from_secs(1),
        };
        // Sent at 1ms (warmup), 3ms, a failed post, one skipped, 5ms, and one not sent yet.
        let sh = shared(&[1001, 3001, FAILED, SKIPPED, 5001, UNSENT]);
        // Answered at 2ms, 4ms, 4ms (the failed one); the one sent at 5ms is not answered yet
        // when the frames come.
        for (slot, at) in sh.answered.iter().zip([2001, 4001, 4001]) {
            slot.store(at, Ordering::Relaxed);
        }
        let shard = Mutex::new(Latencies::new(sh.max_latency_us));
        let mut a = Attribution::default();
        a.advance(&sh, &t, &shard, 2, start + Duration::from_millis(10));
        assert_eq!((a.next, a.counted), (2, 2));
        {
            let h = &shard.lock().unwrap();
            assert_eq!(h.from_send.len(), 1, "the warmup event is not measured");
            assert!(h.from_send.equivalent(h.from_send.max(), 7000));
            assert!(h.from_answer.equivalent(h.from_answer.max(), 6000));
        }
        // A frame counting more than was logged: take what is there, the rest later.
        a.advance(&sh, &t, &shard, 4, start + Duration::from_millis(20));
        assert_eq!((a.next, a.counted), (5, 3));
        assert_eq!(unsent(&sh, &t), 2, "the skipped and the unsent one");
        let h = &shard.lock().unwrap();
        assert_eq!(h.from_send.len(), 2);
        assert!(h.from_send.equivalent(h.from_send.max(), 15_000));
        assert_eq!(
            h.from_answer.min(),
            1,
            "a frame before the answer counts as 0"
        );
    }
}
