//! The bare broadcast server of `loadtest ceiling fanout` (`loadtest ceiling serve`): about
//! the least a server must do to carry the `fanout` scenario's load, so the hub's fan-out
//! can be read against it.
//!
//! It speaks just enough of the hub's protocol for the `fanout` scenario to run against it
//! unchanged (HTTP/1.1 with keep-alive, hyper; WebSocket, tungstenite):
//! - `POST …/events`: counts the `"event_id"` keys of the body and answers 200
//!   `{"accepted":n}` at once; nothing is parsed, checked (no auth) or stored.
//! - `GET …/realtime`: `{"execution":{"runs":N}}`, N the events counted so far.
//! - `GET /ws/…` with an upgrade: a `snapshot` frame with N, then every update frame.
//!
//! Update frames follow the hub's coalescing rule: after a change, a frame goes out at once
//! if the last one is at least `--coalesce` old, else when it is. A frame carries N as
//! `execution.1m.runs` and `execution.1h.runs`, its `seq` and its build time `ts`, padded
//! with an `agents` string to exactly `--frame-bytes`. It is built once and shared by every
//! session; each session may fall [`MAX_QUEUE`] frames behind and is then closed with
//! [`CLOSE_SLOW_CONSUMER`], as the hub evicts a full session mailbox.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Notify};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::cli::BareArgs;

/// Frames a session may fall behind before it is closed (the hub's default `ws.max_queue`).
pub const MAX_QUEUE: usize = 256;
/// Close code of a session that fell [`MAX_QUEUE`] frames behind (the hub's).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Read buffer per session: clients send next to nothing (the 128 KiB default would make
/// the bare server's memory per session a poor ceiling).
const READ_BUFFER: usize = 4096;

/// The server's state, shared by its connections and its broadcaster.
struct Bare {
    /// Events counted from POSTs so far.
    events: AtomicU64,
    /// Rung by every POST that counted events; the broadcaster waits on it.
    changed: Notify,
    /// Update frames to every session.
    frames: broadcast::Sender<Message>,
    frame_bytes: usize,
    coalesce: Duration,
}

/// `loadtest ceiling serve`: binds, prints `listening on http://<address>` on stdout, and
/// serves until standard input closes (or a signal ends the process).
pub fn serve(bind: SocketAddr, args: BareArgs) -> ExitCode {
    let threads = args.server_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest ceiling serve: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_until_stdin_closes(bind, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest ceiling serve: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_stdin_closes(bind: SocketAddr, args: BareArgs) -> Result<()> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    // Printed (and flushed, as stdout is a pipe) only once the port accepts connections.
    println!("listening on http://{}", listener.local_addr()?);
    let state = Arc::new(Bare {
        events: AtomicU64::new(0),
        changed: Notify::new(),
        frames: broadcast::channel(MAX_QUEUE).0,
        frame_bytes: args.frame_bytes as usize,
        coalesce: args.coalesce,
    });
    tokio::spawn(broadcaster(state.clone()));
    tokio::spawn(accept(listener, state));
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.context("reading stdin")? > 0 {}
    Ok(())
}

/// Accepts connections; each is served with HTTP/1.1 keep-alive, upgrades allowed.
async fn accept(listener: TcpListener, state: Arc<Bare>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of files, for one: try again shortly rather than stop serving.
                eprintln!("loadtest ceiling serve: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, "application/json".parse().expect("a header"));
    r
}

async fn handle(
    state: Arc<Bare>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if req.method() == Method::POST && path.ends_with("/events") {
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Ok(respond(StatusCode::BAD_REQUEST, format!("{e}"))),
        };
        let n = count_events(&body);
        if n > 0 {
            state.events.fetch_add(n, Ordering::Relaxed);
            state.changed.notify_one();
        }
        return Ok(respond(StatusCode::OK, format!("{{\"accepted\":{n}}}")));
    }
    if req.method() == Method::GET && path.ends_with("/realtime") {
        let runs = state.events.load(Ordering::Relaxed);
        return Ok(respond(
            StatusCode::OK,
            format!("{{\"execution\":{{\"runs\":{runs}}}}}"),
        ));
    }
    if req.method() == Method::GET && path.starts_with("/ws/") {
        let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
            return Ok(respond(StatusCode::BAD_REQUEST, "not an upgrade".into()));
        };
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session(state, ws).await;
            }
        });
        let mut r = respond(StatusCode::SWITCHING_PROTOCOLS, String::new());
        let h = r.headers_mut();
        h.remove(CONTENT_TYPE);
        h.insert(UPGRADE, "websocket".parse().expect("a header"));
        h.insert(CONNECTION, "Upgrade".parse().expect("a header"));
        h.insert(
            SEC_WEBSOCKET_ACCEPT,
            accept.parse().expect("base64 is a valid header value"),
        );
        return Ok(r);
    }
    Ok(respond(StatusCode::NOT_FOUND, String::new()))
}

/// Events in a body: its `"event_id"` keys (no event of the load has that text elsewhere).
fn count_events(body: &[u8]) -> u64 {
    const KEY: &[u8] = b"\"event_id\"";
    body.windows(KEY.len()).filter(|w| *w == KEY).count() as u64
}

/// One session: the snapshot, then every update frame until the client leaves or falls
/// [`MAX_QUEUE`] frames behind.
async fn session<S>(state: Arc<Bare>, mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Subscribed before the count is read, so no later frame is missed.
    let mut frames = state.frames.subscribe();
    let runs = state.events.load(Ordering::Relaxed);
    if ws.send(Message::text(snapshot_frame(runs))).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if ws.send(frame).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::from(CLOSE_SLOW_CONSUMER),
                            reason: "slow consumer".into(),
                        }))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            message = ws.next() => match message {
                // Pings are answered by the library with the next write.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends an update frame after changes, at most one per coalescing period (the hub's rule:
/// at once after a quiet spell, else when the last frame is `coalesce` old).
async fn broadcaster(state: Arc<Bare>) {
    let mut sent_runs = 0;
    let mut last: Option<Instant> = None;
    let mut seq = 0;
    loop {
        state.changed.notified().await;
        if let Some(due) = last.map(|t| t + state.coalesce) {
            tokio::time::sleep_until(due.into()).await;
        }
        let runs = state.events.load(Ordering::Relaxed);
        if runs == sent_runs {
            // A POST counted during the wait left a permit; its events went in that frame.
            continue;
        }
        sent_runs = runs;
        seq += 1;
        last = Some(Instant::now());
        let frame = update_frame(runs, seq, state.frame_bytes);
        // No receivers is fine: nobody listens yet.
        let _ = state.frames.send(Message::Text(Utf8Bytes::from(frame)));
    }
}

fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn snapshot_frame(runs: u64) -> String {
    format!(
        r#"{{"execution":{{"1h":{{"runs":{runs}}},"1m":{{"runs":{runs}}}}},"seq":0,"ts":"{}","type":"snapshot"}}"#,
        now_ts()
    )
}

/// An update frame of exactly `frame_bytes` (or the shortest it can be, when that is more).
fn update_frame(runs: u64, seq: u64, frame_bytes: usize) -> String {
    const HEAD: &str = r#"{"agents":""#;
    let tail = format!(
        r#"","execution":{{"1h":{{"runs":{runs}}},"1m":{{"runs":{runs}}}}},"seq":{seq},"ts":"{}","type":"update"}}"#,
        now_ts()
    );
    let pad = frame_bytes.saturating_sub(HEAD.len() + tail.len());
    let mut frame = String::with_capacity(HEAD.len() + pad + tail.len());
    frame.push_str(HEAD);
    frame.extend(std::iter::repeat_n('x', pad));
    frame.push_str(&tail);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let frame = update_frame(1234, 7, 5000);
        assert_eq!(frame.len(), 5000);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "update");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["execution"]["1m"]["runs"], 1234);
        assert_eq!(v["execution"]["1h"]["runs"], 1234);
        let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).unwrap();
        assert!((Utc::now() - ts.with_timezone(&Utc)).num_seconds().abs() < 5);
        // Too small a size: the frame is as short as it can be, and still whole.
        let short = update_frame(1, 1, 10);
        assert!(short.len() > 10);
        serde_json::from_str::<serde_json::Value>(&short).unwrap();
        let snapshot: serde_json::Value = serde_json::from_str(&snapshot_frame(3)).unwrap();
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["execution"]["1h"]["runs"], 3);
    }

    #[test]
    fn counts_events() {
        let mut gen =
            crate::events::EventGen::new("p0".into(), 1, crate::events::Fragments::new(2));
        assert_eq!(count_events(&gen.body(1)), 1);
        assert_eq!(count_events(&gen.body(250)), 250);
        assert_eq!(count_events(b"{\"events\":[]}"), 0);
    }
}
