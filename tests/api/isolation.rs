//! One tenant must not hurt another: values PostgreSQL refuses, hostile body shapes, and
//! the cost of a body charged to its sender.

use std::time::Duration as StdDuration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;

fn run_with(id: &str, key: &str, value: Value) -> Value {
    let mut ev = run_event(id, "bot", "failed", 5.0, Utc::now());
    ev[key] = value;
    ev
}

async fn error_body(res: reqwest::Response) -> Value {
    res.json::<Value>().await.unwrap()["error"].clone()
}

#[actix_web::test]
async fn nul_in_any_text_field_is_a_400_with_details_and_stores_nothing() {
    let app = spawn_app().await;
    let nul = json!("gpt\u{0}x");
    let cases = [
        ("model", run_with("a", "model", nul.clone())),
        ("user_id", run_with("b", "user_id", nul.clone())),
        ("run_id", run_with("c", "run_id", nul.clone())),
        (
            "error.message",
            run_with("d", "error", json!({"message": nul})),
        ),
        (
            "error.category",
            run_with("e", "error", json!({"category": nul})),
        ),
        (
            "text",
            json!({"type": "feedback", "event_id": "f", "agent_id": "bot", "ts": ts(Utc::now()),
                   "rating": 3, "text": nul}),
        ),
        (
            "event_id",
            run_event("g\u{0}", "bot", "failed", 1.0, Utc::now()),
        ),
    ];
    for (field, event) in cases {
        // With a valid event beside it: validation is all-or-nothing.
        let ok = run_event(&format!("ok-{field}"), "bot", "succeeded", 1.0, Utc::now());
        let res = app.post_events("ws1", &[ok, event]).await;
        assert_eq!(res.status(), 400, "{field}");
        let error = error_body(res).await;
        assert_eq!(error["code"], "invalid_events", "{field}");
        assert_eq!(error["details"][0]["index"], 1, "{field}");
        assert_eq!(error["details"][0]["field"], field, "{error}");
        assert!(
            error["details"][0]["message"]
                .as_str()
                .unwrap()
                .contains("NUL"),
            "{error}"
        );
    }
    for table in ["agent_runs", "agent_errors", "agent_user_feedback"] {
        assert_eq!(app.count(&format!("SELECT count(*) FROM {table}")).await, 0);
    }
    app.stop().await;
}

#[actix_web::test]
async fn nul_in_alert_and_channel_bodies_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    let admin = token(&["ws1"], "admin");
    let rule = json!({"name": "slow\u{0}", "metric": "error_rate", "op": ">", "threshold": 0.5});
    let res = app
        .client
        .post(format!("{}/api/v1/alerts?workspace_id=ws1", app.base))
        .bearer_auth(&admin)
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let error = error_body(res).await;
    assert_eq!(error["code"], "invalid_rule");
    assert_eq!(error["details"][0]["field"], "name");
    let channel = json!({"type": "webhook", "url": "http://127.0.0.1:9/x\u{0}"});
    let res = app
        .client
        .post(format!(
            "{}/api/v1/notifications/channels?workspace_id=ws1",
            app.base
        ))
        .bearer_auth(&admin)
        .json(&channel)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_body(res).await["details"][0]["field"], "url");
    assert_eq!(app.count("SELECT count(*) FROM alert_rules").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM notification_channels")
            .await,
        0
    );
    app.stop().await;
}

/// The second line behind validation: a value PostgreSQL itself refuses (here a CHECK the
/// test adds to its own database) fails only the request that holds it, even when it shares
/// a group commit with other workspaces' requests, and the answer shows no database text.
#[actix_web::test]
async fn a_value_the_database_refuses_fails_only_its_own_request() {
    let app = spawn_app().await;
    let db = app.db().await;
    db.batch_execute(
        "ALTER TABLE agent_runs ADD CONSTRAINT test_poison CHECK (model IS DISTINCT FROM 'poison')",
    )
    .await
    .unwrap();
    // Hold the table so that requests queue and then commit together.
    let mut locker = app.db().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE agent_runs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut posts = Vec::new();
    for i in 0..12 {
        let app = &app;
        posts.push(async move {
            let (ws, event) = if i % 4 == 0 {
                ("ws-x", run_with(&format!("p{i}"), "model", json!("poison")))
            } else {
                (
                    "ws-y",
                    run_event(&format!("v{i}"), "bot", "succeeded", 1.0, Utc::now()),
                )
            };
            let res = app.post_events(ws, &[event]).await;
            let id = res
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                ws,
                res.status().as_u16(),
                id,
                res.json::<Value>().await.unwrap(),
            )
        });
    }
    let release = async {
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        tx.rollback().await.unwrap();
    };
    let (answers, ()) = tokio::join!(futures_util::future::join_all(posts), release);
    for (ws, status, id, body) in &answers {
        match *ws {
            "ws-y" => assert_eq!(*status, 200, "{body}"),
            _ => {
                assert_eq!(*status, 400, "{body}");
                let error = &body["error"];
                assert_eq!(error["code"], "invalid_events");
                let message = error["message"].as_str().unwrap();
                assert!(
                    !message.contains("db error") && !message.contains("test_poison"),
                    "{message}"
                );
                assert_eq!(error["request_id"].as_str(), id.as_deref());
            }
        }
    }
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs WHERE workspace_id = 'ws-y'")
            .await,
        9
    );
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs WHERE workspace_id = 'ws-x'")
            .await,
        0
    );
    // Positive control: the poisoned requests did share group commits with others.
    let split = app
        .metric("hub_writer_split_batches_total")
        .await
        .expect("the split counter");
    assert!(split >= 1.0, "no batch was shared: the test proved nothing");
    // The windows hold exactly what was stored.
    assert_eq!(
        app.realtime("ws-y", "&window=5m").await["execution"]["runs"],
        9
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_event_with_too_many_keys_is_a_400_and_one_under_the_cap_passes() {
    let app = spawn_app().await;
    let mut ok = run_event("ok", "bot", "succeeded", 1.0, Utc::now());
    for i in 0..50 {
        ok[format!("extra_{i}")] = json!(i);
    }
    assert_eq!(app.post_events("ws1", &[ok]).await.status(), 200);
    let mut hostile = run_event("h", "bot", "succeeded", 1.0, Utc::now());
    for i in 0..200_000 {
        hostile[format!("k{i}")] = json!(1);
    }
    let res = app.post_events("ws1", &[hostile]).await;
    assert_eq!(res.status(), 400);
    let error = error_body(res).await;
    assert!(
        error["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ingest.max_keys_per_event (64)"),
        "{error}"
    );
    assert_eq!(app.count("SELECT count(*) FROM agent_runs").await, 1);
    app.stop().await;
}

/// The body's events are charged to the workspace's budget before they are validated: a
/// tenant cannot spend the hub's CPU on invalid bodies for free.
#[actix_web::test]
async fn invalid_bodies_spend_the_senders_budget_and_only_its_own() {
    let app = spawn_app_with(&tight_ingest_budget()).await;
    let bad: Vec<Value> = (0..50)
        .map(|i| run_with(&format!("b{i}"), "status", json!("nope")))
        .collect();
    let res = app.post_events("ws-x", &bad).await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().contains_key("x-request-id"));
    // Positive control: the same valid batch passes for a workspace with a full budget.
    assert_eq!(app.post_events("ws-y", &runs("y", 40)).await.status(), 200);
    // ws-x spent its 50 on the invalid body; at 1 unit/s, 40 more cannot fit for a while.
    assert_eq!(app.post_events("ws-x", &runs("x", 40)).await.status(), 429);
    app.stop().await;
}

#[actix_web::test]
async fn large_bodies_are_parsed_off_the_worker_with_the_same_answers() {
    let app = spawn_app().await;
    let padding = "p".repeat(2_000);
    let events: Vec<Value> = (0..200)
        .map(|i| {
            let mut ev = run_event(&format!("l{i}"), "bot", "succeeded", 1.0, Utc::now());
            ev["note"] = json!(padding);
            ev
        })
        .collect();
    let res = app.post_events("ws1", &events).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"accepted": 200}));
    let mut bad = events.clone();
    bad[150]["runtime_ms"] = json!(-1);
    let res = app.post_events("ws1", &bad).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_body(res).await["details"][0]["index"], 150);
    assert_eq!(app.count("SELECT count(*) FROM agent_runs").await, 200);
    app.stop().await;
}

#[actix_web::test]
async fn every_response_names_its_request_and_keeps_a_sane_client_id() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/health/live", app.base))
        .header("x-request-id", "client-chosen.42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "client-chosen.42");
    let res = app
        .client
        .get(format!("{}/nope", app.base))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert_eq!(error_body(res).await["request_id"], id.as_str());
    app.stop().await;
}

/// A workspace whose actor is busy (here rebuilding a large history) holds no other
/// workspace's acknowledgement: the commit slot is free once the transaction is over, and
/// each request waits only for its own workspace's apply.
#[actix_web::test]
async fn a_rebuilding_workspace_does_not_delay_other_workspaces_acks() {
    let app = spawn_app_with(&[
        ("workspace.request_timeout", json!("120s")),
        // Shorter than the rebuild: the slow workspace's own answer does not wait for it.
        ("writer.apply_timeout", json!("100ms")),
        // Both workspaces on one arbiter thread: the slow one's rebuild must not hold it.
        ("workspace.arbiters", json!(1)),
    ])
    .await;
    // The hub's own partitions first: creating yesterday's meanwhile would wait on their
    // locks, and partition creation gives up after 1 s (migration 0004).
    let ahead = runs_partition((Utc::now() + chrono::Duration::days(2)).date_naive());
    eventually("the start's partitions", || async {
        app.count(&ahead).await == 1
    })
    .await;
    let db = app.db().await;
    let yesterday = (Utc::now() - chrono::Duration::days(1)).date_naive();
    db.execute("SELECT hub_ensure_day_partitions($1)", &[&yesterday])
        .await
        .unwrap();
    db.batch_execute(&format!(
        "INSERT INTO agent_runs (workspace_id, event_id, agent_id, status, completed_at, runtime_ms)
         SELECT 'ws-slow', 'h' || i, 'agent-' || (i % 100), 'succeeded',
                now() - (i % 3000) * interval '1 second', (i % 1000)::float8
         FROM generate_series(1, {SLOW_RUNS}) AS i"
    ))
    .await
    .unwrap();

    // The first read starts the actor, which rebuilds before it serves anything.
    let started = std::time::Instant::now();
    let owned = app;
    let app = &owned;
    let slow_read = async {
        let live = app.realtime("ws-slow", "&window=24h").await;
        (started.elapsed(), live)
    };
    let posts = async {
        // Let the read start the rebuild first.
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        // Hold the id table (which the rebuild does not read) so the slow workspace's post
        // and the others share one commit.
        let mut locker = app.db().await;
        let tx = locker.transaction().await.unwrap();
        tx.batch_execute("LOCK TABLE ingested_events IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let slow_run = [run_event("s1", "bot", "succeeded", 1.0, Utc::now())];
        let slow = app.post_events("ws-slow", &slow_run);
        let fast = futures_util::future::join_all((0..5).map(|i| async move {
            let res = app
                .post_events(
                    "ws-fast",
                    &[run_event(
                        &format!("f{i}"),
                        "bot",
                        "succeeded",
                        1.0,
                        Utc::now(),
                    )],
                )
                .await;
            (res.status().as_u16(), started.elapsed())
        }));
        let release = async {
            tokio::time::sleep(StdDuration::from_millis(300)).await;
            tx.rollback().await.unwrap();
        };
        let (slow, fast, ()) = tokio::join!(slow, fast, release);
        // Positive control of the mailbox gauge: while ws-slow rebuilds, its read (and its
        // late apply) wait in its mailbox.
        let queued = app.metric("hub_workspace_mailbox_messages").await;
        (slow.status().as_u16(), fast, queued, started.elapsed())
    };
    let ((read_done, live), (slow_status, fast, queued, sampled)) = tokio::join!(slow_read, posts);
    assert!(sampled < read_done, "the gauge was read after the rebuild");
    assert!(
        queued.is_some_and(|q| q >= 1.0),
        "messages wait while the actor rebuilds: {queued:?}"
    );
    assert_eq!(slow_status, 200);
    for (status, done) in &fast {
        assert_eq!(*status, 200);
        assert!(
            *done < read_done,
            "ws-fast was answered at {done:?}, after ws-slow's rebuild ended at {read_done:?}"
        );
    }
    assert_eq!(live["execution"]["runs"], SLOW_RUNS);
    // The slow workspace's own answer came before its apply, which stayed queued and
    // reached its windows behind the rebuild.
    let metrics = app.get_plain("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hub_writer_apply_late_total ")
                && l != "hub_writer_apply_late_total 0"),
        "the late path was not taken"
    );
    eventually("ws-slow's own run in its windows", || async {
        app.realtime("ws-slow", "&window=24h").await["execution"]["runs"] == SLOW_RUNS + 1
    })
    .await;
    eventually("every queued message handled", || async {
        app.metric("hub_workspace_mailbox_messages").await == Some(0.0)
    })
    .await;
    owned.stop().await;
}

/// Runs the slow workspace rebuilds: enough for a rebuild far longer than a commit.
const SLOW_RUNS: i64 = 300_000;

/// A body costs its events, or one unit per 512 bytes when that is more: a tenant's bytes, which
/// are what parsing costs, are limited as well as its events.
#[actix_web::test]
async fn a_large_body_costs_its_size_in_the_rate_limit() {
    let app = spawn_app_with(&tight_ingest_budget()).await;
    let mut padded = run_event("p", "bot", "succeeded", 1.0, Utc::now());
    // 20 KiB: 40 units at 512 bytes a unit (20 if a unit were a KiB).
    padded["note"] = json!("n".repeat(20 * 1024));
    let res = app.post_events("ws-x", &[padded]).await;
    assert_eq!(res.status(), 200);
    let remaining: u64 = res.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        remaining <= 10,
        "one event of 20 KiB cost {} units",
        50 - remaining
    );
    assert_eq!(app.post_events("ws-x", &runs("x", 20)).await.status(), 429);
    // Positive control: the same 20 small events fit a fresh budget.
    assert_eq!(app.post_events("ws-y", &runs("y", 20)).await.status(), 200);
    app.stop().await;
}

/// A declared body's size is paid for before the body is read: a tenant past its budget is
/// refused at once, without the hub reading (and framing) what it sends.
#[actix_web::test]
async fn a_tenant_past_its_budget_is_refused_before_its_body_is_read() {
    let app = spawn_app_with(&tight_ingest_budget()).await;
    let mut padded = run_event("p", "bot", "succeeded", 1.0, Utc::now());
    padded["note"] = json!("n".repeat(45 * 1024));
    assert_eq!(app.post_events("ws-x", &[padded]).await.status(), 200);
    // Announces 100 KiB, sends a few bytes, then waits: only an answer that did not wait
    // for the body can come back.
    let text = answer_to_stalled_upload(&app, "ws-x", 102_400, StdDuration::from_secs(10))
        .await
        .expect("the hub waited for the body");
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    app.stop().await;
}

/// Past `limits.max_agent_window_bytes`, new events of a workspace's agents count under
/// `_other`: the hub's memory stops growing with agents while the workspace's totals stay
/// exact and every event is stored.
#[actix_web::test]
async fn agents_past_the_memory_budget_count_under_other_and_totals_stay_exact() {
    const BUDGET: u64 = 100_000;
    let app = spawn_app_with(&[("limits.max_agent_window_bytes", json!(BUDGET))]).await;
    let mut sent = 0;
    for batch in 0..20 {
        // 25 new agents a batch, each with runs at several times of the day.
        let now = Utc::now();
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let at = now - chrono::Duration::minutes((i % 4) * 90 + i % 7);
                let mut ev = run_event(
                    &format!("b{batch}-{i}"),
                    &format!("agent-{batch}-{}", i % 25),
                    "succeeded",
                    1.0 + i as f64,
                    at,
                );
                ev["model"] = json!(format!("m{}", i % 9));
                ev
            })
            .collect();
        sent += events.len();
        assert_eq!(app.post_events("ws-big", &events).await.status(), 200);
    }
    let day = app.realtime("ws-big", "&window=24h").await;
    assert_eq!(
        day["execution"]["runs"], sent,
        "the workspace counts every run"
    );
    let other = app.realtime("ws-big", "&window=24h&agent_id=_other").await;
    let diverted = other["execution"]["runs"].as_u64().unwrap();
    assert!(
        diverted > 0,
        "positive control: 500 agents do not fit {BUDGET} bytes"
    );
    let overflow = app
        .metric("hub_live_overflow_total{kind=\"memory\"}")
        .await
        .expect("the memory overflow counter");
    assert_eq!(overflow as u64, diverted, "every diverted event is counted");
    let held = app
        .metric("hub_live_agent_window_bytes")
        .await
        .expect("the window bytes gauge");
    assert!(
        held > 0.0 && held < 2.0 * BUDGET as f64,
        "the agents' windows hold {held} bytes against a budget of {BUDGET}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs").await,
        sent as i64,
        "every run is stored"
    );
    // Another workspace has its own budget.
    let res = app.post_events("ws-small", &runs("s", 3)).await;
    assert_eq!(res.status(), 200);
    let bot = app.realtime("ws-small", "&window=1m&agent_id=bot").await;
    assert_eq!(bot["execution"]["runs"], 3);
}

/// Tenant X's two batches hold the writer's eager transactions (each waits on a row lock the
/// test holds); tenant Y's single event still commits and is answered while they wait, on
/// the next transaction slot, instead of waiting behind them.
#[actix_web::test]
async fn a_workspace_with_nothing_in_flight_does_not_wait_behind_anothers_transactions() {
    let app = spawn_app_with(&[
        ("writer.concurrency", json!(3)),
        ("writer.commit_timeout", json!("20s")),
        ("writer.statement_timeout", json!("15s")),
        ("server.request_timeout", json!("30s")),
    ])
    .await;
    // The ids X will send, claimed by an open transaction: X's inserts wait on them.
    let mut locker = app.db().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO ingested_events (workspace_id, event_id, kind, event_time) \
         VALUES ('ws-x', 'x1', 1, now()), ('ws-x', 'x2', 1, now())",
    )
    .await
    .unwrap();
    let x = |id: &'static str| {
        let app = &app;
        async move {
            app.post_events(
                "ws-x",
                &[run_event(id, "bot", "succeeded", 1.0, Utc::now())],
            )
            .await
            .status()
        }
    };
    let xs = futures_util::future::join(x("x1"), x("x2"));
    let y = async {
        eventually("X's two transactions wait on the test's lock", || async {
            app.count(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
                == 2
        })
        .await;
        let run = run_event("y1", "bot", "succeeded", 1.0, Utc::now());
        let answer =
            tokio::time::timeout(StdDuration::from_secs(10), app.post_events("ws-y", &[run]))
                .await
                .map(|res| res.status());
        let counted = app.realtime("ws-y", "&window=1m").await["execution"]["runs"].clone();
        tx.rollback().await.unwrap();
        (answer, counted)
    };
    let ((x1, x2), (answer, counted)) = futures_util::future::join(xs, y).await;
    assert_eq!(
        answer.ok(),
        Some(reqwest::StatusCode::OK),
        "Y was answered while X's transactions waited"
    );
    assert_eq!(counted, 1);
    // X's own requests go through once the lock is gone.
    assert_eq!((x1, x2), (reqwest::StatusCode::OK, reqwest::StatusCode::OK));
    app.stop().await;
}

/// A body the hub refuses without reading it (here its token is not valid) is not read
/// afterwards either: the hub ends the connection's reading side once its answer is out, so
/// the upload fails after what the two kernels had buffered, and the client still reads the
/// answer. Before, the hub read and discarded the whole upload for as long as its linger
/// (`server.client_disconnect_timeout`, 60 s here) allowed, at memory speed and for free.
#[actix_web::test]
async fn a_refused_upload_is_not_read_to_its_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DECLARED: usize = 64 << 20;
    let app = spawn_app_with(&[("server.client_disconnect_timeout", json!("60s"))]).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/workspaces/ws-x/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer not-a-token\r\ncontent-type: application/json\r\ncontent-length: {DECLARED}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    let upload = tokio::time::timeout(StdDuration::from_secs(30), async {
        while sent < DECLARED {
            match conn.write(&chunk).await {
                Ok(n) => sent += n,
                Err(_) => return,
            }
        }
    })
    .await;
    assert!(upload.is_ok(), "the upload neither ended nor failed");
    assert!(
        sent < DECLARED,
        "the hub took the whole refused upload ({sent} bytes)"
    );
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(StdDuration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // A body read to its end keeps its connection open for the next request.
    let res = app
        .post_events(
            "ws-x",
            &[run_event("k", "bot", "succeeded", 1.0, Utc::now())],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("connection"), None, "{:?}", res.headers());
    app.stop().await;
}
