//! Anomaly detection end to end: history posted through the API, the hub restarted so its
//! detectors replay it, then live events that must come out as `anomaly` frames, stored
//! anomalies and `anomaly_score` alerts; and `/anomalies/detect` over backfilled events.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::ws::{connect, until};

/// Runs of agent `agent` every `every` from `from` to `to`, one failure in 50 (deterministic),
/// plus `failing` of the runs in `[burst_from, burst_to)` failed instead.
fn history(
    agent: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    every: Duration,
    burst: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let (mut t, mut n) = (from, 0u64);
    while t < to {
        n += 1;
        let in_burst = burst.is_some_and(|(a, b)| t >= a && t < b);
        let status = if (in_burst && !n.is_multiple_of(5)) || n.is_multiple_of(50) {
            "failed"
        } else {
            "succeeded"
        };
        out.push(run_event(&format!("{agent}-h{n}"), agent, status, 200.0, t));
        t += every;
    }
    out
}

async fn post_all(app: &TestApp, ws: &str, events: &[Value]) {
    for chunk in events.chunks(1_000) {
        let res = app.post_events(ws, chunk).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
}

async fn post_json(
    app: &TestApp,
    path: &str,
    ws: &str,
    scope: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.base))
        .bearer_auth(token(&[ws], scope))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_live_error_burst_is_pushed_stored_listed_and_alerted_on() {
    let overrides = [
        ("anomaly.bucket", json!("1s")),
        ("anomaly.grace", json!("3s")),
    ];
    let app = spawn_app_with(&overrides).await;
    let ws = "anom1";
    // Two hours of history: a run every 4 s, 2 % failures.
    let now = Utc::now();
    post_all(
        &app,
        ws,
        &history(
            "a",
            now - Duration::hours(2),
            now - Duration::seconds(30),
            Duration::seconds(4),
            None,
        ),
    )
    .await;
    // A restart: the detectors replay the stored history.
    let db = app.stop().await;
    let app = spawn_on(db, &overrides).await;

    let rule = post_json(
        &app,
        &format!("/api/v1/alerts?workspace_id={ws}"),
        ws,
        "admin",
        &json!({"name": "error anomaly", "metric": "anomaly_score", "anomaly_metric": "error_rate",
                "op": ">=", "threshold": 0.99, "agent_id": "a"}),
    )
    .await;
    assert_eq!(rule.status(), 201, "{}", rule.text().await.unwrap());

    let mut socket = connect(&app, ws, "").await;
    let burst: Vec<Value> = (0..40)
        .map(|i| run_event(&format!("burst{i}"), "a", "failed", 200.0, Utc::now()))
        .collect();
    post_all(&app, ws, &burst).await;

    let frame = until(&mut socket, "anomaly", |f| {
        f["anomaly"]["metric"] == "error_rate" && f["anomaly"]["agent_id"] == "a"
    })
    .await;
    let a = &frame["anomaly"];
    assert_eq!(a["workspace_id"], ws);
    assert_eq!(a["direction"], "up");
    assert!(a["score"].as_f64().unwrap() >= 0.99, "{a}");
    assert!(
        a["value"].as_f64().unwrap() > a["upper"].as_f64().unwrap(),
        "{a}"
    );
    assert!(a["expected"].as_f64().unwrap() < 0.1, "{a}");
    assert!(["low", "medium", "high"].contains(&a["severity"].as_str().unwrap()));
    assert!(frame["seq"].as_u64().is_some());

    // The anomaly_score rule on the same series fires.
    let alert = until(&mut socket, "alert", |f| f["alert"]["state"] == "firing").await;
    assert_eq!(alert["alert"]["metric"], "anomaly_score");
    assert_eq!(alert["alert"]["anomaly_metric"], "error_rate");
    assert_eq!(alert["alert"]["agent_id"], "a");

    // Stored and listed, newest first, filterable.
    let mut listed = Value::Null;
    for _ in 0..50 {
        let res = app
            .get(
                &format!("/api/v1/anomalies?workspace_id={ws}&metric=error_rate&agent_id=a"),
                ws,
            )
            .await;
        assert_eq!(res.status(), 200);
        listed = res.json().await.unwrap();
        if !listed["anomalies"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rows = listed["anomalies"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["id"] == a["id"]), "{listed}");
    assert!(rows
        .iter()
        .all(|r| r["metric"] == "error_rate" && r["agent_id"] == "a"));
    let other = app
        .get(
            &format!("/api/v1/anomalies?workspace_id={ws}&metric=cpu_pct_avg"),
            ws,
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(other["anomalies"], json!([]));
    let metrics = app.get_plain("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hub_anomalies_total{kind=\"error_rate\"}"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn detect_over_backfilled_events_finds_the_injected_burst_and_nothing_else() {
    let app = spawn_app().await;
    let ws = "anom2";
    let end = Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(1);
    let start = end - Duration::hours(40);
    let burst = (
        end - Duration::hours(3),
        end - Duration::hours(3) + Duration::minutes(15),
    );
    post_all(
        &app,
        ws,
        &history("a", start, end, Duration::seconds(30), Some(burst)),
    )
    .await;
    let res = post_json(
        &app,
        "/api/v1/anomalies/detect",
        ws,
        "read",
        &json!({"workspace_id": ws, "metric": "error_rate", "agent_id": "a",
                "from": ts(end - Duration::hours(12)), "to": ts(end), "bucket": "5m"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["bucket"], "5m");
    assert_eq!(body["method"], "beta_binomial_ewma");
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 12 * 12, "every bucket of the range");
    let flagged: Vec<&str> = buckets
        .iter()
        .filter(|b| b["is_anomaly"] == true)
        .map(|b| b["bucket_start"].as_str().unwrap())
        .collect();
    let burst_buckets = [
        ts(burst.0),
        ts(burst.0 + Duration::minutes(5)),
        ts(burst.0 + Duration::minutes(10)),
    ];
    assert!(!flagged.is_empty());
    assert!(
        flagged.iter().all(|f| burst_buckets.iter().any(|b| b == f)),
        "flags outside the burst: {flagged:?}"
    );
    assert_eq!(body["anomalies"], json!(flagged.len()));
    // Two days of lead warm the detector before the range starts (after the burst it may
    // re-learn the rate for a while, and says so with `warming_up`).
    for b in buckets
        .iter()
        .filter(|b| b["bucket_start"].as_str().unwrap() < ts(burst.0).as_str())
    {
        assert!(b.get("warming_up").is_none(), "{b}");
        let (lo, hi) = (b["lower"].as_f64().unwrap(), b["upper"].as_f64().unwrap());
        let expected = b["expected"].as_f64().unwrap();
        assert!(lo <= expected && expected <= hi, "{b}");
    }
    // Quiet on the same history without the burst, for the workspace series.
    let res = post_json(
        &app,
        "/api/v1/anomalies/detect",
        ws,
        "read",
        &json!({"workspace_id": ws, "metric": "error_rate",
                "from": ts(end - Duration::hours(30)), "to": ts(end - Duration::hours(4)), "bucket": "5m"}),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["anomalies"], 0, "{body}");
}

#[actix_web::test]
async fn bad_anomaly_requests_get_clear_errors() {
    let app = spawn_app().await;
    let ws = "anom3";
    let now = Utc::now();
    let detect = |body: Value| {
        let app = &app;
        async move { post_json(app, "/api/v1/anomalies/detect", ws, "read", &body).await }
    };
    let base = json!({"workspace_id": ws, "metric": "error_rate",
                      "from": ts(now - Duration::hours(1)), "to": ts(now)});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, code) in [
        (with("metric", json!("nope")), "invalid_metric"),
        (with("from", json!("yesterday")), "invalid_time"),
        (
            with("to", json!(ts(now - Duration::hours(2)))),
            "invalid_range",
        ),
        (with("bucket", json!("7m")), "invalid_bucket"),
        (with("sensitivity", json!(1.5)), "invalid_sensitivity"),
        (with("agent_id", json!("bad id!")), "invalid_agent_id"),
        (with("extra", json!(1)), "invalid_body"),
        (
            {
                let mut b = with("from", json!(ts(now - Duration::days(400))));
                b["bucket"] = json!("1m");
                b
            },
            "range_too_large",
        ),
    ] {
        let res = detect(body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
    }
    let res = app
        .client
        .post(format!("{}/api/v1/anomalies/detect", app.base))
        .json(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = post_json(&app, "/api/v1/anomalies/detect", "other", "read", &base).await;
    assert_eq!(res.status(), 403);
    for (q, code) in [
        ("&metric=nope", "invalid_metric"),
        ("&since=soon", "invalid_time"),
        ("&limit=0", "invalid_limit"),
    ] {
        let res = app
            .get(&format!("/api/v1/anomalies?workspace_id={ws}{q}"), ws)
            .await;
        assert_eq!(res.status(), 400, "{q}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], code);
    }
    // anomaly_score rules must name a detector series that exists.
    for (rule, field) in [
        (
            json!({"name": "x", "metric": "anomaly_score", "op": ">=", "threshold": 0.99}),
            "anomaly_metric",
        ),
        (
            json!({"name": "x", "metric": "anomaly_score", "anomaly_metric": "tokens", "op": ">=", "threshold": 0.99}),
            "anomaly_metric",
        ),
        (
            json!({"name": "x", "metric": "error_rate", "anomaly_metric": "error_rate", "op": ">=", "threshold": 0.5}),
            "anomaly_metric",
        ),
    ] {
        let res = post_json(
            &app,
            &format!("/api/v1/alerts?workspace_id={ws}"),
            ws,
            "admin",
            &rule,
        )
        .await;
        assert_eq!(res.status(), 400, "{rule}");
        let e: Value = res.json().await.unwrap();
        assert!(
            e["error"]["details"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["field"] == field),
            "{e}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM anomalies").await, 0);
}

#[actix_web::test]
async fn detect_finds_a_latency_slow_down_from_stored_runtimes() {
    let app = spawn_app().await;
    let ws = "anom4";
    let end = Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(1);
    let start = end - Duration::days(3);
    let slow = (
        end - Duration::hours(3),
        end - Duration::hours(3) + Duration::minutes(30),
    );
    // A run every 30 s; runtimes cycle through 150–450 ms (one in 50 is a 5× straggler),
    // four times slower during the slow-down.
    let mut events = Vec::new();
    let (mut t, mut n) = (start, 0u64);
    while t < end {
        n += 1;
        let mut runtime = 150.0 + (n % 7) as f64 * 50.0;
        if n.is_multiple_of(50) {
            runtime *= 5.0;
        }
        if t >= slow.0 && t < slow.1 {
            runtime *= 4.0;
        }
        events.push(run_event(&format!("l{n}"), "a", "succeeded", runtime, t));
        t += Duration::seconds(30);
    }
    post_all(&app, ws, &events).await;
    let res = post_json(
        &app,
        "/api/v1/anomalies/detect",
        ws,
        "read",
        &json!({"workspace_id": ws, "metric": "runtime_p95",
                "from": ts(end - Duration::hours(12)), "to": ts(end), "bucket": "5m"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["method"], "seasonal_robust_log_p95_p50");
    let buckets = body["buckets"].as_array().unwrap();
    let flagged: Vec<&str> = buckets
        .iter()
        .filter(|b| b["is_anomaly"] == true)
        .map(|b| b["bucket_start"].as_str().unwrap())
        .collect();
    let (from, to) = (ts(slow.0), ts(slow.1 + Duration::minutes(10)));
    assert!(
        flagged
            .iter()
            .any(|f| *f >= from.as_str() && *f < ts(slow.0 + Duration::minutes(15)).as_str()),
        "the slow-down is flagged near its onset: {flagged:?}"
    );
    assert!(
        flagged
            .iter()
            .all(|f| *f >= from.as_str() && *f < to.as_str()),
        "flags outside the slow-down: {flagged:?}"
    );
    let first = buckets.iter().find(|b| b["bucket_start"] == from).unwrap();
    assert_eq!(first["direction"], "up", "{first}");
}
