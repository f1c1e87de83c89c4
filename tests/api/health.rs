use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn health_and_metrics() {
    let app = spawn_app().await;
    let live = app.get_plain("/health/live").await;
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["x-content-type-options"], "nosniff");
    assert_eq!(live.headers()["x-frame-options"], "DENY");
    let ready = app.get_plain("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");
    assert_eq!(body["status"], "ready");
    assert_eq!(
        app.post_events(
            "ws1",
            &[run_event("e", "a", "succeeded", 1.0, chrono::Utc::now())]
        )
        .await
        .status(),
        200
    );
    let text = app.get_plain("/metrics").await.text().await.unwrap();
    for name in [
        "hub_ingest_events_total{outcome=\"new\"} 1",
        "hub_writer_batches_total 1",
        "hub_writer_flush_seconds_count 1",
        "hub_writer_backlog_rows 0",
        "hub_workspace_actors 1",
        "hub_workspace_mailbox_messages",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let res = app.get_plain("/nope").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let res = app
        .client
        .delete(format!("{}/health/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );
    let res = app.get_plain("/api/v1/workspaces/ws1/events").await;
    assert_eq!(res.status(), 405);
    app.stop().await;
}

#[actix_web::test]
async fn redis_down_is_degraded_but_ready() {
    // Nothing listens on port 1.
    let mut overrides = vec![("redis.url", serde_json::json!("redis://127.0.0.1:1"))];
    overrides.extend(redis_away());
    let app = spawn_app_with(&overrides).await;
    let ready = app.get_plain("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["redis"]["status"], "degraded");
    assert_eq!(
        app.post_events(
            "ws1",
            &[run_event("e", "a", "succeeded", 1.0, chrono::Utc::now())]
        )
        .await
        .status(),
        200
    );
    app.stop().await;
}

/// Anonymous readiness probes, however many, cost PostgreSQL and Redis at most one check a
/// second, and the answer carries no raw error text.
#[actix_web::test]
async fn readiness_is_checked_at_most_once_a_second_whatever_the_probes() {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    let answers =
        futures_util::future::join_all((0..200).map(|_| app.get_plain("/health/ready"))).await;
    let elapsed = started.elapsed();
    for res in answers {
        assert_eq!(res.status(), 200);
    }
    let probes = app
        .metric("hub_ready_probes_total")
        .await
        .expect("the probe counter");
    assert!(probes >= 1.0);
    assert!(
        probes <= elapsed.as_secs_f64().ceil() + 1.0,
        "{probes} checks for 200 probes in {elapsed:?}"
    );
    app.stop().await;
}
