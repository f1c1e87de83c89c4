use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

fn heartbeat(id: &str, agent: &str, cpu: f64, at: chrono::DateTime<Utc>) -> Value {
    json!({"type": "heartbeat", "event_id": id, "agent_id": agent, "ts": ts(at), "cpu_pct": cpu,
           "mem_mb": 256.0, "mem_limit_mb": 1024.0, "cpu_limit_cores": 2.0, "concurrent_runs": 2, "queue_depth": 1})
}

#[actix_web::test]
async fn a_restart_keeps_the_windows() {
    let app = spawn_app().await;
    let now = Utc::now();
    let mut events: Vec<Value> = (0..200)
        .map(|i| {
            let status = if i % 10 == 0 { "failed" } else { "succeeded" };
            run_event(
                &format!("r{i}"),
                &format!("a{}", i % 4),
                status,
                10.0 + i as f64,
                now - Duration::seconds(i % 200),
            )
        })
        .collect();
    events.push(heartbeat("h1", "a1", 40.0, now));
    events.push(
        json!({"type": "feedback", "event_id": "f1", "agent_id": "a1", "ts": ts(now), "rating": 5}),
    );
    assert_eq!(app.post_events("ws1", &events).await.status(), 200);
    let before = app.realtime("ws1", "&window=1h").await["execution"].clone();
    let db = app.stop().await;

    let app = spawn_on(db, &[]).await;
    let after = app.realtime("ws1", "&window=1h").await["execution"].clone();
    for key in [
        "runs",
        "failed",
        "succeeded",
        "runtime_ms",
        "tokens_in",
        "credits",
        "active_agents",
        "models",
        "feedback",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }
    assert_eq!(after["runs"], 200);
    let res: Value = app
        .get("/api/v1/resources/agents/a1?workspace_id=ws1", "ws1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["latest"]["cpu_pct"], 40.0);
    // A resend after the restart adds nothing; new events count once on top of the rebuilt ones.
    assert_eq!(app.post_events("ws1", &events).await.status(), 200);
    assert_eq!(
        app.realtime("ws1", "&window=1h").await["execution"]["runs"],
        200
    );
    assert_eq!(app.count("SELECT count(*) FROM agent_runs").await, 200);
    assert_eq!(
        app.post_events(
            "ws1",
            &[run_event("new", "a1", "succeeded", 1.0, Utc::now())]
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        app.realtime("ws1", "&window=1h").await["execution"]["runs"],
        201
    );
    app.stop().await;
}

#[actix_web::test]
async fn resource_routes_report_heartbeats_and_liveness() {
    let app = spawn_app_with(&[("resources.stale_after", json!("30s"))]).await;
    let now = Utc::now();
    let events = vec![
        heartbeat("h1", "fresh", 50.0, now - Duration::seconds(20)),
        heartbeat("h2", "fresh", 150.0, now - Duration::seconds(5)),
        heartbeat("h3", "quiet", 10.0, now - Duration::seconds(45)),
    ];
    assert_eq!(app.post_events("ws1", &events).await.status(), 200);
    let res = app.get("/api/v1/resources/workspace/ws1", "ws1").await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let fresh = &body["agents"]["fresh"];
    assert_eq!(fresh["state"], "live");
    assert_eq!(fresh["heartbeats"], 2);
    assert_eq!(fresh["cpu_pct"]["avg"], 100.0);
    assert_eq!(fresh["cpu_pct"]["max"], 150.0);
    assert_eq!(fresh["latest"]["cpu_pct"], 150.0);
    assert_eq!(fresh["mem_efficiency"], 0.25);
    assert_eq!(body["agents"]["quiet"]["state"], "stale");

    let one: Value = app
        .get(
            "/api/v1/resources/agents/fresh?workspace_id=ws1&window=1m",
            "ws1",
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["agent_id"], "fresh");
    assert_eq!(one["window"], "1m");
    assert_eq!(one["cpu_efficiency"], 0.5); // (50 + 150) ÷ 2 ÷ (100 × 2 cores)
    let missing = app
        .get("/api/v1/resources/agents/ghost?workspace_id=ws1", "ws1")
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    app.stop().await;
}

#[actix_web::test]
async fn idle_workspaces_are_stopped_and_rebuilt_on_the_next_request() {
    let app = spawn_app_with(&[("workspace.idle_after", json!("1s"))]).await;
    let old = Utc::now() - Duration::minutes(30); // no live agent keeps it awake
    assert_eq!(
        app.post_events("ws1", &[run_event("r1", "a", "succeeded", 5.0, old)])
            .await
            .status(),
        200
    );
    let actors = || async { app.metric("hub_workspace_actors").await.unwrap() };
    assert_eq!(actors().await, 1.0);
    // The housekeeping tick (5 s) stops it once idle; poll rather than sleep a fixed time.
    let mut stopped = false;
    for _ in 0..100 {
        if actors().await == 0.0 {
            stopped = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stopped, "the idle actor was not stopped");
    assert_eq!(
        app.realtime("ws1", "&window=1h").await["execution"]["runs"],
        1
    );
    app.stop().await;
}
