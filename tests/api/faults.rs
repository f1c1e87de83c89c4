//! Faults: the hub killed mid-ingest, PostgreSQL taken away and given back.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;

/// A free port for a hub run as a separate process (it must be known before the hub starts, and
/// is kept across restarts). Picked below the kernel's ephemeral range, so that neither an
/// outgoing connection nor a port-0 listener of a test running alongside can take it between
/// this check and the hub's bind.
pub(crate) fn free_port() -> u16 {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    if ephemeral_low > 12_000 {
        for _ in 0..1_000 {
            let span = (ephemeral_low - 10_000) as u128;
            let port = 10_000 + (uuid::Uuid::new_v4().as_u128() % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary, as an operator runs it.
fn start_hub(db_url: &str, port: u16) -> Child {
    start_hub_with(db_url, port, &[])
}

/// The real binary with extra `SHADOWER__…` settings.
pub(crate) fn start_hub_with(db_url: &str, port: u16, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shadower-hub"))
        .envs(env.iter().copied())
        .arg("serve")
        .env("SHADOWER_ENV", "test")
        .env(
            "SHADOWER_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("SHADOWER__DATABASE__URL", db_url)
        .env("SHADOWER__SERVER__PORT", port.to_string())
        .env("SHADOWER__AUTH__JWT_SECRET", SECRET)
        .env("SHADOWER__NOTIFICATIONS__SECRET_KEY", SEAL_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shadower-hub")
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        actix_web::rt::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!("the hub did not become ready");
}

#[actix_web::test]
async fn every_acknowledged_event_survives_sigkill_exactly_once() {
    let db = TestDb::create().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    let mut hub = start_hub(&db.url(), port);
    wait_ready(&client, &base).await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for task in 0..8 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        writers.push(actix_web::rt::spawn(async move {
            let auth = token(&["ws1"], "ingest");
            for n in 0.. {
                let ids: Vec<String> = (0..25).map(|i| format!("c{task}-{n}-{i}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| run_event(id, "bot", "succeeded", 3.0, Utc::now()))
                    .collect();
                let sent = client
                    .post(format!("{base}/api/v1/workspaces/ws1/events"))
                    .bearer_auth(&auth)
                    .json(&json!({ "events": events }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                    Ok(_) => {}
                    Err(_) => break, // the hub is gone
                }
            }
        }));
    }
    // Kill once a fair amount is acknowledged, while the writers are still posting.
    for _ in 0..600 {
        if acked.lock().unwrap().len() >= 2_000 {
            break;
        }
        actix_web::rt::time::sleep(StdDuration::from_millis(10)).await;
    }
    hub.kill().unwrap(); // SIGKILL
    hub.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 2_000,
        "only {} acked before the kill",
        acked.len()
    );

    let mut hub = start_hub(&db.url(), port);
    wait_ready(&client, &base).await;
    let pg = pg(&db.url()).await;
    let stored: i64 = pg
        .query_one(
            "SELECT count(DISTINCT event_id) FROM agent_runs WHERE event_id = ANY($1)",
            &[&acked],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored as usize,
        acked.len(),
        "acknowledged events missing after SIGKILL"
    );
    let dupes: i64 = pg
        .query_one(
            "SELECT count(*) - count(DISTINCT event_id) FROM agent_runs",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "chaos: sigkill-under-load acked={} stored={stored} lost={} duplicated={dupes}",
        acked.len(),
        acked.len() as i64 - stored
    );
    assert_eq!(dupes, 0);
    // The rebuilt windows hold exactly what is stored (acked or committed just before the kill).
    let total: i64 = pg
        .query_one("SELECT count(*) FROM agent_runs", &[])
        .await
        .unwrap()
        .get(0);
    let live: Value = client
        .get(format!(
            "{base}/api/v1/metrics/execution/realtime?workspace_id=ws1&window=1h"
        ))
        .bearer_auth(token(&["ws1"], "read"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["execution"]["runs"], total);
    hub.kill().unwrap();
    hub.wait().unwrap();
}

#[actix_web::test]
async fn postgres_down_gives_503_and_ingest_recovers_by_itself() {
    let db = Arc::new(TestDb::create().await);
    let proxy = PgProxy::start(PgProxy::target()).await;
    let through_proxy = proxy.url(&db.name);
    let app = spawn_on(db, &[("database.url", json!(through_proxy))]).await;
    async fn post(app: &TestApp, id: &str) -> reqwest::Response {
        app.post_events("ws1", &[run_event(id, "bot", "succeeded", 1.0, Utc::now())])
            .await
    }
    assert_eq!(post(&app, "before").await.status(), 200);

    proxy.cut();
    let res = post(&app, "during").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let ready = app.get_plain("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["postgres"]["status"], "down");
    // Fixed words, never the driver's error text.
    let error = ready["checks"]["postgres"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        ["unreachable", "no answer within 2s"].contains(&error),
        "{ready}"
    );
    // Live reads keep working from memory.
    assert_eq!(app.realtime("ws1", "").await["execution"]["runs"], 1);

    proxy.restore();
    let mut recovered = false;
    for i in 0..100 {
        if post(&app, &format!("after-{i}")).await.status() == 200 {
            recovered = true;
            break;
        }
        actix_web::rt::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "ingest did not recover after PostgreSQL came back"
    );
    let stored = app
        .count("SELECT count(*) FROM agent_runs WHERE event_id = 'during'")
        .await;
    assert_eq!(stored, 0, "an event answered 503 was stored");
    let total = app.count("SELECT count(*) FROM agent_runs").await;
    assert_eq!(app.realtime("ws1", "").await["execution"]["runs"], total);
    app.stop().await;
}

#[actix_web::test]
async fn a_full_writer_backlog_answers_503_at_once() {
    let app = spawn_app_with(&[
        ("ingest.max_events", json!(10)),
        ("writer.max_backlog_rows", json!(10)),
    ])
    .await;
    let batch = |p: &str| -> Vec<Value> {
        (0..10)
            .map(|i| run_event(&format!("{p}{i}"), "bot", "succeeded", 1.0, Utc::now()))
            .collect()
    };
    assert_eq!(app.post_events("ws1", &batch("ok")).await.status(), 200);
    // Hold the identity table, so the next commit waits: its rows fill the backlog.
    let mut holder = pg(&app.db.url()).await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE ingested_events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let first = batch("a");
    let stuck = app.post_events("ws1", &first);
    let refused = async {
        // Wait until the first batch holds its room in the backlog.
        let app = &app;
        eventually("the first batch holds the backlog", || async move {
            app.get_plain("/metrics")
                .await
                .text()
                .await
                .unwrap()
                .contains("hub_writer_backlog_rows 10\n")
        })
        .await;
        let ready = app.get_plain("/health/ready").await;
        let second = batch("b");
        let res = app.post_events("ws1", &second).await;
        lock.rollback().await.unwrap();
        (ready, res)
    };
    let (stuck, (ready, res)) = tokio::join!(stuck, refused);
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("backlog"),
        "{body}"
    );
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["writer"]["status"], "down", "{ready}");
    // Once the lock is gone the waiting batch commits; the refused one stored nothing.
    assert_eq!(stuck.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs WHERE event_id LIKE 'a%'")
            .await,
        10
    );
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs WHERE event_id LIKE 'b%'")
            .await,
        0
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_body_upload_past_server_request_timeout_gets_503() {
    let app = spawn_app_with(&[
        ("writer.commit_timeout", json!("1s")),
        ("writer.statement_timeout", json!("500ms")),
        ("server.request_timeout", json!("2s")),
    ])
    .await;
    // A client that announces 1 000 bytes and sends a few, then stalls (slow loris).
    let text = answer_to_stalled_upload(&app, "ws1", 1000, StdDuration::from_secs(30))
        .await
        .expect("no answer to a stalled upload");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("x-request-id: "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    app.stop().await;
}

/// A commit stuck on a lock past `writer.commit_timeout`, released after the hub gave up:
/// the request is answered 503, and the windows end equal to the rows, whether PostgreSQL
/// cancels the statement (`writer.statement_timeout`) or, with that off, the hub ends the
/// backend of the unknown commit before it resyncs.
async fn stuck_commit_converges(statement_timeout: &str, resyncs: bool) {
    let app = spawn_app_with(&[
        ("writer.commit_timeout", json!("2s")),
        ("writer.statement_timeout", json!(statement_timeout)),
    ])
    .await;
    let run = |id: &str| run_event(id, "bot", "succeeded", 1.0, Utc::now());
    assert_eq!(app.post_events("ws1", &[run("before")]).await.status(), 200);

    let mut locker = app.db().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE agent_runs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let res = app.post_events("ws1", &[run("stuck")]).await;
    assert_eq!(res.status(), 503);
    // Released after the hub gave up: a statement still waiting would now commit.
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    tx.rollback().await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(1_000)).await;

    let rows = app.count("SELECT count(*) FROM agent_runs").await;
    assert_eq!(rows, 1, "the 503'd run was stored after all");
    eventually("windows equal to the rows", || async {
        app.realtime("ws1", "&window=1h").await["execution"]["runs"] == rows
    })
    .await;
    // Positive control: the unknown outcome went through the resync (and only it did).
    let resynced = app
        .metric("hub_workspace_resyncs_total")
        .await
        .expect("the resync counter");
    assert_eq!(resynced > 0.0, resyncs, "resyncs: {resynced}");
    // The writer's connections are sound: ingest goes on.
    assert_eq!(app.post_events("ws1", &[run("after")]).await.status(), 200);
    assert_eq!(
        app.realtime("ws1", "&window=1h").await["execution"]["runs"],
        2
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_stuck_commit_is_cancelled_by_postgresql_and_windows_equal_rows() {
    stuck_commit_converges("1s", false).await;
}

#[actix_web::test]
async fn a_stuck_commit_of_unknown_outcome_is_ended_and_windows_equal_rows() {
    stuck_commit_converges("0s", true).await;
}
