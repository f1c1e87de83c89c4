use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn rows_are_committed_before_the_200() {
    let app = spawn_app().await;
    let now = Utc::now();
    let events = vec![
        run_event("r1", "bot", "succeeded", 120.0, now),
        json!({"type": "run", "event_id": "r2", "agent_id": "bot", "status": "failed",
               "completed_at": ts(now), "started_at": ts(now - Duration::milliseconds(1250)),
               "error": {"type": "Timeout", "category": "llm", "severity": "high", "message": "slow"}}),
        json!({"type": "heartbeat", "event_id": "h1", "agent_id": "bot", "ts": ts(now), "cpu_pct": 37.5,
               "mem_mb": 512.0, "mem_limit_mb": 2048.0, "cpu_limit_cores": 2.0, "concurrent_runs": 3, "queue_depth": 5}),
        json!({"type": "feedback", "event_id": "f1", "agent_id": "bot", "user_id": "u-9", "ts": ts(now), "rating": 4, "text": "fast"}),
    ];
    let res = app.post_events("ws1", &events).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"accepted": 4}));
    assert_eq!(app.count("SELECT count(*) FROM agent_runs").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM agent_errors WHERE severity = 'high'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM resource_samples").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM agent_user_feedback").await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs WHERE event_id = 'r2' AND runtime_ms = 1250")
            .await,
        1
    );
    app.stop().await;
}

#[actix_web::test]
async fn realtime_numbers_equal_an_exact_recomputation_from_the_rows() {
    let app = spawn_app().await;
    let now = Utc::now();
    let mut rng = Rng(7);
    let statuses = [
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
        "timeout",
        "cancelled",
    ];
    let events: Vec<Value> = (0..3_000)
        .map(|i| {
            let status = statuses[(rng.unit() * statuses.len() as f64) as usize];
            // Heavy-tailed runtimes, all inside the last 4 minutes (the 5m window's exact part).
            let runtime = (rng.unit() * 9.0).exp();
            let at = now - Duration::milliseconds((rng.unit() * 240_000.0) as i64);
            run_event(
                &format!("e{i}"),
                &format!("agent-{}", i % 7),
                status,
                runtime,
                at,
            )
        })
        .collect();
    for chunk in events.chunks(1_000) {
        assert_eq!(app.post_events("ws1", chunk).await.status(), 200);
    }
    let db = app.db().await;
    for agent in [None, Some("agent-3")] {
        let filter = agent
            .map(|a| format!("AND agent_id = '{a}'"))
            .unwrap_or_default();
        let row = db
            .query_one(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'timeout'),
                            percentile_disc(0.5) WITHIN GROUP (ORDER BY runtime_ms),
                            percentile_disc(0.95) WITHIN GROUP (ORDER BY runtime_ms),
                            percentile_disc(0.99) WITHIN GROUP (ORDER BY runtime_ms),
                            sum(tokens_in)::int8, count(DISTINCT agent_id)
                     FROM agent_runs WHERE workspace_id = 'ws1' {filter}"
                ),
                &[],
            )
            .await
            .unwrap();
        let query = agent.map(|a| format!("&agent_id={a}")).unwrap_or_default();
        let live = app.realtime("ws1", &format!("{query}&window=5m")).await;
        let ex = &live["execution"];
        assert_eq!(ex["runs"], row.get::<_, i64>(0), "{agent:?}");
        assert_eq!(ex["failed"], row.get::<_, i64>(1));
        assert_eq!(ex["timeout"], row.get::<_, i64>(2));
        assert_eq!(ex["tokens_in"], row.get::<_, i64>(6));
        assert_eq!(ex["active_agents"], row.get::<_, i64>(7));
        for (i, q) in [(3, "p50"), (4, "p95"), (5, "p99")] {
            let exact: f64 = row.get(i);
            let got = ex["runtime_ms"][q].as_f64().unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.01,
                "{agent:?} {q}: live {got} exact {exact}"
            );
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_resend_changes_nothing() {
    let app = spawn_app().await;
    let now = Utc::now();
    let events: Vec<Value> = (0..50)
        .map(|i| run_event(&format!("e{i}"), "bot", "succeeded", 100.0, now))
        .collect();
    assert_eq!(app.post_events("ws1", &events).await.status(), 200);
    let before = app.realtime("ws1", "&window=24h").await["execution"].clone();
    // The same ids with other values (another status, runtime, and time): first write wins.
    let changed: Vec<Value> = (0..50)
        .map(|i| {
            run_event(
                &format!("e{i}"),
                "bot",
                "failed",
                9_999.0,
                now - Duration::hours(2),
            )
        })
        .collect();
    for batch in [&events, &changed] {
        let res = app.post_events("ws1", batch).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"accepted": 50}));
    }
    // The same event twice in one request counts once.
    let twice = vec![
        run_event("dup", "bot", "succeeded", 1.0, now),
        run_event("dup", "bot", "failed", 2.0, now),
    ];
    assert_eq!(app.post_events("ws1", &twice).await.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM agent_runs").await, 51);
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs WHERE status = 'failed'")
            .await,
        0
    );
    let after = app.realtime("ws1", "&window=24h").await["execution"].clone();
    assert_eq!(after["runs"], 51);
    assert_eq!(after["failed"], before["failed"]);
    assert_eq!(after["runtime_ms"]["max"], before["runtime_ms"]["max"]);
    // Ids are per workspace: the same id in another workspace is another event.
    assert_eq!(app.post_events("ws2", &events[..1]).await.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM agent_runs").await, 52);
    app.stop().await;
}

#[actix_web::test]
async fn a_mixed_batch_is_rejected_whole_with_details() {
    let app = spawn_app().await;
    let now = Utc::now();
    let mut bad = run_event("b", "bot", "succeeded", 1.0, now);
    bad["runtime_ms"] = json!(-1);
    let too_old = run_event("old", "bot", "succeeded", 1.0, now - Duration::days(8));
    let res = app
        .post_events(
            "ws1",
            &[run_event("ok", "bot", "succeeded", 1.0, now), bad, too_old],
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_events");
    assert_eq!(
        body["error"]["details"],
        json!([{"index": 1, "field": "runtime_ms", "message": "must be a finite number ≥ 0"},
               {"index": 2, "field": "completed_at", "message": "is older than ingest.max_age"}])
    );
    assert_eq!(app.count("SELECT count(*) FROM ingested_events").await, 0);
    assert_eq!(app.realtime("ws1", "").await["execution"]["runs"], 0);
    app.stop().await;
}

#[actix_web::test]
async fn buffered_events_from_past_days_get_partitions_on_demand() {
    let app = spawn_app().await;
    let three_days_ago = Utc::now() - Duration::days(3);
    let res = app
        .post_events(
            "ws1",
            &[run_event("late", "bot", "succeeded", 5.0, three_days_ago)],
        )
        .await;
    assert_eq!(res.status(), 200);
    let partition = format!("agent_runs_p{}", three_days_ago.format("%Y%m%d"));
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM {partition}"))
            .await,
        1
    );
    // Older than every window: stored, but no burst in the live numbers.
    assert_eq!(
        app.realtime("ws1", "&window=24h").await["execution"]["runs"],
        0
    );
    app.stop().await;
}

#[actix_web::test]
async fn ndjson_content_types_and_size_limits() {
    let app = spawn_app_with(&[
        ("ingest.max_events", json!(3)),
        ("ingest.max_body_bytes", json!(4096)),
    ])
    .await;
    let now = Utc::now();
    let url = format!("{}/api/v1/workspaces/ws1/events", app.base);
    let post = |ct: &str, body: String| {
        app.client
            .post(&url)
            .bearer_auth(token(&["ws1"], "ingest"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let lines = format!(
        "{}\n{}\n",
        run_event("n1", "bot", "succeeded", 1.0, now),
        run_event("n2", "bot", "succeeded", 1.0, now)
    );
    let res = post("application/x-ndjson", lines.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"accepted": 2}));

    let bad_line = format!(
        "{}\n{{\"type\":\"run\"}}\n",
        run_event("n3", "bot", "succeeded", 1.0, now)
    );
    let res = post("application/x-ndjson", bad_line).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["index"] == 1),
        "{body}"
    );

    let res = post("text/plain", lines).await.unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_media_type"
    );

    let four: Vec<Value> = (0..4)
        .map(|i| run_event(&format!("m{i}"), "bot", "succeeded", 1.0, now))
        .collect();
    let res = post("application/json", json!({"events": four}).to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    let res = post(
        "application/json",
        format!("{{\"events\": [], \"pad\": \"{}\"}}", "x".repeat(5000)),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );

    for body in ["{", "[1,2]", "null"] {
        let res = post("application/json", body.into()).await.unwrap();
        assert_eq!(res.status(), 400, "{body}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_json"
        );
    }
    let res = post("application/json", "{\"events\": [5]}".into())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM agent_runs").await, 2);
    app.stop().await;
}

#[actix_web::test]
async fn bad_ids_in_paths_and_queries_are_400s() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/api/v1/workspaces/a%20b/events", app.base))
        .bearer_auth(token(&["a b"], "ingest"))
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .get(
            "/api/v1/metrics/execution/realtime?workspace_id=ws1&window=2m",
            "ws1",
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_window"
    );
    let res = app.get("/api/v1/metrics/execution/realtime", "ws1").await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_query"
    );
    app.stop().await;
}
