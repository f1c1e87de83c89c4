//! The WebSocket stream, as a dashboard sees it.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Bound on waiting for one frame; a test fails, never hangs.
const FRAME_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn connect(app: &TestApp, ws: &str, extra: &str) -> Ws {
    let url = format!(
        "{}/ws/metrics/{ws}?token={}{extra}",
        app.base.replace("http", "ws"),
        token(&[ws], "read")
    );
    // A small read buffer: hundreds of test clients must not be what uses the memory.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (stream, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .expect("connect");
    stream
}

/// The next text frame, as JSON (pings are answered by the library).
pub(crate) async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + FRAME_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Frames until one of type `kind` satisfies `done`.
pub(crate) async fn until(ws: &mut Ws, kind: &str, done: impl Fn(&Value) -> bool) -> Value {
    loop {
        let f = next(ws).await;
        if f["type"] == kind && done(&f) {
            return f;
        }
    }
}

#[actix_web::test]
async fn auth_is_checked_before_the_upgrade() {
    let app = spawn_app().await;
    let url = format!("{}/ws/metrics/ws1", app.base);
    let cases = [
        (None, 401),
        (Some(token(&["ws2"], "read")), 403),
        (Some(token(&["ws1"], "ingest")), 403),
        (Some("garbage".to_string()), 401),
    ];
    for (t, want) in cases {
        let url = match &t {
            Some(t) => format!("{url}?token={t}"),
            None => url.clone(),
        };
        let res = app.client.get(url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), want);
        assert!(res.json::<Value>().await.unwrap()["error"]["code"].is_string());
    }
    // The header works as well as ?token=; a plain GET is not a WebSocket.
    let res = app
        .client
        .get(&url)
        .bearer_auth(token(&["ws1"], "read"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let ws_url = format!(
        "{}/ws/metrics/ws1?token=bad",
        app.base.replace("http", "ws")
    );
    match tokio_tungstenite::connect_async(ws_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    app.stop().await;
}

#[actix_web::test]
async fn snapshot_first_then_updates_naming_the_agent_with_increasing_seq() {
    let app = spawn_app().await;
    assert_eq!(
        app.post_events(
            "ws1",
            &[run_event("old", "bot", "succeeded", 5.0, Utc::now())]
        )
        .await
        .status(),
        200
    );
    let mut ws = connect(&app, "ws1", "").await;
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["protocol"], 1);
    assert_eq!(snap["execution"]["5m"]["runs"], 1);
    assert!(snap["execution"]["1m"].is_object() && snap["execution"]["1h"].is_object());
    assert_eq!(snap["alerts"], json!([]));
    let mut last_seq = snap["seq"].as_u64().unwrap();
    let mut update = Value::Null;
    for i in 0..3 {
        let agent = format!("agent-{i}");
        assert_eq!(
            app.post_events(
                "ws1",
                &[run_event(
                    &format!("e{i}"),
                    &agent,
                    "failed",
                    9.0,
                    Utc::now()
                )]
            )
            .await
            .status(),
            200
        );
        update = until(&mut ws, "update", |f| f["agents"].get(&agent).is_some()).await;
        assert_eq!(update["epoch"], snap["epoch"]);
        let seq = update["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "seq {seq} after {last_seq}");
        last_seq = seq;
        assert_eq!(update["agents"][&agent]["5m"]["failed"], 1);
    }
    assert_eq!(update["execution"]["5m"]["runs"], 4);
    assert_eq!(update["execution"]["5m"]["failed"], 3);
    app.stop().await;
}

#[actix_web::test]
async fn client_messages_ping_errors_and_subscribe_filters() {
    let app = spawn_app().await;
    let mut all = connect(&app, "ws1", "").await;
    let mut narrow = connect(&app, "ws1", "").await;
    next(&mut all).await;
    next(&mut narrow).await;

    narrow
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next(&mut narrow).await, json!({"type": "pong"}));
    for bad in [
        r#"{"type":"dance"}"#,
        "not json",
        r#"{"type":"subscribe","channels":["logs"]}"#,
    ] {
        narrow.send(Message::text(bad)).await.unwrap();
        let f = next(&mut narrow).await;
        assert_eq!(f["type"], "error", "{bad}");
        assert!(f["message"].is_string());
    }

    let heartbeat = |id: &str, agent: &str| json!({"type": "heartbeat", "event_id": id, "agent_id": agent, "ts": ts(Utc::now()), "cpu_pct": 10.0});
    narrow
        .send(Message::text(
            r#"{"type":"subscribe","channels":["resources"],"agent_ids":["a1"]}"#,
        ))
        .await
        .unwrap();
    // Until the subscription is in force, updates still carry execution; wait for one that does not.
    let mut n = 0;
    loop {
        n += 1;
        let batch = [
            run_event(&format!("r{n}"), "a1", "succeeded", 1.0, Utc::now()),
            heartbeat(&format!("h{n}"), "a1"),
        ];
        assert_eq!(app.post_events("ws1", &batch).await.status(), 200);
        let f = until(&mut narrow, "update", |_| true).await;
        if f.get("execution").is_none() {
            assert!(f["resources"]["a1"].is_object());
            break;
        }
        assert!(n < 50, "the subscription never took effect");
    }
    // An update about a2 reaches the full stream, never the narrowed one.
    assert_eq!(
        app.post_events(
            "ws1",
            &[
                heartbeat("x2", "a2"),
                run_event("y2", "a2", "succeeded", 1.0, Utc::now())
            ]
        )
        .await
        .status(),
        200
    );
    until(&mut all, "update", |f| f["resources"].get("a2").is_some()).await;
    assert_eq!(
        app.post_events("ws1", &[heartbeat("x3", "a1")])
            .await
            .status(),
        200
    );
    let f = until(&mut narrow, "update", |_| true).await;
    assert!(
        f.get("execution").is_none() && f.get("agents").is_none(),
        "{f}"
    );
    assert_eq!(
        f["resources"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["a1"],
        "{f}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn five_hundred_sessions_all_receive_the_same_update() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let app = spawn_app().await;
    let mut sessions = Vec::new();
    for _ in 0..500 {
        let mut ws = connect(&app, "ws1", "").await;
        assert_eq!(next(&mut ws).await["type"], "snapshot");
        sessions.push(ws);
    }
    assert_eq!(
        app.post_events(
            "ws1",
            &[run_event("e", "bot", "succeeded", 3.0, Utc::now())]
        )
        .await
        .status(),
        200
    );
    let mut seqs = std::collections::HashSet::new();
    for ws in &mut sessions {
        let f = until(ws, "update", |f| f["execution"]["5m"]["runs"] == 1).await;
        seqs.insert(f["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs.len(), 1, "every session got the same frame");
    app.stop().await;
}

#[actix_web::test]
async fn a_burst_is_coalesced_into_a_handful_of_frames() {
    let app = spawn_app().await;
    let mut ws = connect(&app, "ws1", "").await;
    next(&mut ws).await;
    let started = Instant::now();
    let posts = (0..20).map(|r| {
        let events: Vec<Value> = (0..50)
            .map(|i| {
                run_event(
                    &format!("b{r}-{i}"),
                    &format!("a{}", i % 5),
                    "succeeded",
                    2.0,
                    Utc::now(),
                )
            })
            .collect();
        let app = &app;
        async move { app.post_events("ws1", &events).await.status() }
    });
    for status in futures_util::future::join_all(posts).await {
        assert_eq!(status, 200);
    }
    let burst_ms = started.elapsed().as_millis() as u64;
    let mut frames = 0;
    loop {
        let f = until(&mut ws, "update", |_| true).await;
        frames += 1;
        if f["execution"]["5m"]["runs"] == 1000 {
            break;
        }
    }
    // At most one frame per coalescing period (100 ms) while the burst lasted, plus the first.
    let bound = 2 + burst_ms / 100;
    assert!(
        frames <= bound,
        "{frames} update frames for a {burst_ms} ms burst (bound {bound})"
    );
    app.stop().await;
}

/// Positive control of the coalescing test: the same posts, one after the other, give one
/// update each with `ws.coalesce_ms = 0`, and at most one per period with 100 ms.
#[actix_web::test]
async fn coalescing_is_what_merges_updates() {
    for coalesce_ms in [0u64, 100] {
        let app = spawn_app_with(&[("ws.coalesce_ms", json!(coalesce_ms))]).await;
        let mut ws = connect(&app, "ws1", "").await;
        next(&mut ws).await;
        let started = Instant::now();
        for r in 0..20 {
            let run = run_event(&format!("s{r}"), "bot", "succeeded", 2.0, Utc::now());
            assert_eq!(app.post_events("ws1", &[run]).await.status(), 200);
        }
        let posting_ms = started.elapsed().as_millis() as u64;
        let mut frames = 0;
        loop {
            let f = until(&mut ws, "update", |_| true).await;
            frames += 1;
            if f["execution"]["5m"]["runs"] == 20 {
                break;
            }
        }
        match posting_ms.checked_div(coalesce_ms) {
            // Each post's events reach the windows before its 200, one apply each.
            None => assert!(
                frames >= 20,
                "{frames} updates for 20 applies without coalescing"
            ),
            Some(periods) => assert!(
                frames <= 2 + periods,
                "{frames} updates for {posting_ms} ms of posts (bound {})",
                2 + periods
            ),
        }
        app.stop().await;
    }
}

#[actix_web::test]
async fn resume_replays_missed_alert_frames_or_says_not_recovered() {
    let app = spawn_app_with(&[
        ("ws.test_hooks", json!(true)),
        ("ws.replay_frames", json!(3)),
    ])
    .await;
    let emit = |n: u32| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(format!("{}/api/v1/workspaces/ws1/test-frames", app.base))
                .bearer_auth(token(&["ws1"], "admin"))
                .json(&json!({"channel": "alert", "payload": {"rule_id": format!("r{n}"), "state": "firing"}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
        }
    };
    let mut ws = connect(&app, "ws1", "").await;
    let snap = next(&mut ws).await;
    assert_eq!(snap["recovered"], false);
    let epoch = snap["epoch"].as_u64().unwrap();
    emit(1).await;
    let first = until(&mut ws, "alert", |_| true).await;
    assert_eq!(first["alert"]["rule_id"], "r1");
    let seen = first["seq"].as_u64().unwrap();
    drop(ws);
    emit(2).await;
    emit(3).await;

    let mut ws = connect(&app, "ws1", &format!("&since={epoch}:{seen}")).await;
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["recovered"], true);
    for (n, want_seq) in [(2, seen + 1), (3, seen + 2)] {
        let f = next(&mut ws).await;
        assert_eq!(
            (f["type"].as_str(), f["replay"].as_bool()),
            (Some("alert"), Some(true))
        );
        assert_eq!(f["alert"]["rule_id"], format!("r{n}"));
        assert_eq!(f["seq"], want_seq);
    }
    drop(ws);
    // Three more roll the buffer (3 frames) past what the first session saw.
    for n in 4..=6 {
        emit(n).await;
    }
    let mut ws = connect(&app, "ws1", &format!("&since={epoch}:{seen}")).await;
    assert_eq!(next(&mut ws).await["recovered"], false);
    let mut ws = connect(&app, "ws1", &format!("&since={}:{seen}", epoch + 1)).await;
    assert_eq!(next(&mut ws).await["recovered"], false, "another epoch");
    let res = app.get("/ws/metrics/ws1?since=nope", "ws1").await;
    assert_eq!(res.status(), 400);
    app.stop().await;
}

/// 80 posts of 500 agents' runs to ws1: big frames (500 agents each, ~275 KB; 22 MB in all)
/// that fill a non-reading client's socket buffers (a few MB on loopback), then its queue.
async fn flood(app: &TestApp) {
    for r in 0..80 {
        let events: Vec<Value> = (0..500)
            .map(|i| {
                run_event(
                    &format!("s{r}-{i}"),
                    &format!("agent-{i}"),
                    "succeeded",
                    2.0,
                    Utc::now(),
                )
            })
            .collect();
        assert_eq!(app.post_events("ws1", &events).await.status(), 200);
    }
}

#[actix_web::test]
async fn a_client_that_never_reads_is_closed_with_4008_and_readers_keep_up() {
    let app = spawn_app_with(&[("ws.max_queue", json!(4)), ("ws.coalesce_ms", json!(5))]).await;
    let mut slow = connect(&app, "ws1", "").await; // never read until the end
    let mut reader = connect(&app, "ws1", "").await;
    next(&mut reader).await;
    let reading = actix_web::rt::spawn(async move {
        loop {
            let f = until(&mut reader, "update", |_| true).await;
            if f["execution"]["5m"]["runs"] == 40_000 {
                return f;
            }
        }
    });
    flood(&app).await;
    let last = reading.await.unwrap();
    assert_eq!(last["agents"].as_object().map(|a| a.len()), Some(500));
    let metrics = app.get_plain("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hub_ws_evictions_total{reason=\"slow_consumer\"} 1"),
        "no eviction counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("hub_ws"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // What the slow client finds when it finally reads: what was buffered, then 4008.
    loop {
        match tokio::time::timeout(FRAME_WAIT, slow.next())
            .await
            .expect("the close in time")
        {
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(close.code, CloseCode::from(4008));
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    app.stop().await;
}

/// Whether the hub's end of a TCP connection from the client port `peer` to the hub's
/// `port` is still open, read from the kernel's table (the hub runs in this process's
/// network namespace).
fn hub_holds_connection(port: u16, peer: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3 && port_of(f[1]) == Some(port) && port_of(f[2]) == Some(peer)
    })
}

/// A client that stops reading holds nothing of the hub's past `server.send_timeout`: once its
/// session is over, the bytes still queued for it can never be flushed, and before the
/// bound (TCP_USER_TIMEOUT) the hub kept that connection until the client read or left, so
/// one token could pile up evicted connections without end.
#[actix_web::test]
async fn a_client_that_stops_reading_loses_its_connection_after_the_send_timeout() {
    let app = spawn_app_with(&[
        ("ws.max_queue", json!(4)),
        ("ws.coalesce_ms", json!(5)),
        ("server.send_timeout", json!("1s")),
    ])
    .await;
    let mut slow = connect(&app, "ws1", "").await; // never read until the end
    let peer = match slow.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().unwrap().port(),
        _ => unreachable!("the test connects without TLS"),
    };
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        hub_holds_connection(port, peer),
        "the connection is not in the table"
    );
    flood(&app).await;
    // The session ends either way: evicted (4008), or its connection cut by the kernel
    // first when the flood keeps the client's window shut past the timeout.
    eventually("the slow session ends", || async {
        app.metric("hub_ws_sessions").await == Some(0.0)
    })
    .await;
    eventually(
        "the hub lets go of the non-reading client's connection",
        || async { !hub_holds_connection(port, peer) },
    )
    .await;
    // The client finds what reached its buffer, then a reset: the 4008 never left the hub.
    loop {
        match tokio::time::timeout(FRAME_WAIT, slow.next())
            .await
            .expect("the end in time")
        {
            Some(Ok(Message::Close(_))) => panic!("the close frame was flushed after all"),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => break,
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn sessions_get_1001_when_the_hub_shuts_down() {
    let app = spawn_app().await;
    let mut ws = connect(&app, "ws1", "").await;
    next(&mut ws).await;
    let reading = actix_web::rt::spawn(async move {
        loop {
            match tokio::time::timeout(FRAME_WAIT, ws.next())
                .await
                .expect("the close in time")
            {
                Some(Ok(Message::Close(Some(close)))) => return close.code,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    });
    app.stop().await;
    assert_eq!(reading.await.unwrap(), CloseCode::Away);
}

#[actix_web::test]
async fn session_caps_refuse_with_429_and_free_up() {
    let app = spawn_app_with(&[("ws.max_sessions_per_workspace", json!(2))]).await;
    let mut a = connect(&app, "ws1", "").await;
    let mut b = connect(&app, "ws1", "").await;
    next(&mut a).await;
    next(&mut b).await;
    let url = format!(
        "{}/ws/metrics/ws1?token={}",
        app.base.replace("http", "ws"),
        token(&["ws1"], "read")
    );
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
            let body: Value =
                serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_sessions");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    // Another workspace has its own count.
    let mut other = connect(&app, "ws2", "").await;
    assert_eq!(next(&mut other).await["type"], "snapshot");
    a.close(None).await.unwrap();
    let mut freed = false;
    for _ in 0..100 {
        if let Ok((mut c, _)) = tokio_tungstenite::connect_async(url.clone()).await {
            assert_eq!(next(&mut c).await["type"], "snapshot");
            freed = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "a closed session did not give its place back");
    app.stop().await;
}

#[actix_web::test]
async fn an_agent_turning_stale_on_the_timer_is_an_update() {
    let app = spawn_app_with(&[("resources.stale_after", json!("2s"))]).await;
    let mut ws = connect(&app, "ws1", "").await;
    next(&mut ws).await;
    let hb = json!({"type": "heartbeat", "event_id": "h1", "agent_id": "a1", "ts": ts(Utc::now()), "cpu_pct": 5.0});
    assert_eq!(app.post_events("ws1", &[hb]).await.status(), 200);
    until(&mut ws, "update", |f| {
        f["resources"]["a1"]["state"] == "live"
    })
    .await;
    // No event is posted: the hub's own timer notices the silence.
    let f = until(&mut ws, "update", |f| f["resources"].get("a1").is_some()).await;
    assert_eq!(f["resources"]["a1"]["state"], "stale", "{f}");
    app.stop().await;
}

#[actix_web::test]
async fn peers_that_stop_answering_pings_are_dropped() {
    let app = spawn_app_with(&[
        ("ws.ping_interval", json!("100ms")),
        ("ws.client_timeout", json!("300ms")),
    ])
    .await;
    let mut ws = connect(&app, "ws1", "").await;
    next(&mut ws).await;
    // From now on the client reads nothing, so it answers no ping.
    let mut dropped = false;
    for _ in 0..100 {
        if app.metric("hub_ws_sessions").await == Some(0.0) {
            dropped = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped, "a silent peer was not dropped");
    drop(ws);
    app.stop().await;
}

/// After the closing handshake the server closes the TCP connection (RFC 6455 §7.1.1): a
/// client that closes sees the end of the stream at once, not after the server's linger.
/// The linger is set far beyond the test's guard, so only the hub ending the connection
/// itself can pass (before, the client waited out the linger: 0.98 s at the default 1s).
#[actix_web::test]
async fn the_server_closes_tcp_right_after_the_closing_handshake() {
    let app = spawn_app_with(&[("server.client_disconnect_timeout", json!("60s"))]).await;
    let mut ws = connect(&app, "ws1", "").await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    let started = Instant::now();
    ws.send(Message::Close(None)).await.unwrap();
    let mut answered = false;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => answered = true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    eprintln!("closed after {:?}", started.elapsed());
    assert!(ended.is_ok(), "the server kept the connection open");
    assert!(answered, "the server did not answer the close frame");
    app.stop().await;
}
