//! Forecasts over backfilled events, as a client asks for them.

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

/// Runs per hour of the day: busy from 08:00 to 19:59, quiet at night.
fn runs_in_hour(hour: u32) -> i64 {
    if (8..20).contains(&hour) {
        30
    } else {
        3
    }
}

fn check_bands(points: &[Value], lo: f64, hi: f64) {
    for p in points {
        let v = |k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{k} in {p}"));
        let (l95, l80, x, u80, u95) = (
            v("lower_95"),
            v("lower_80"),
            v("value"),
            v("upper_80"),
            v("upper_95"),
        );
        assert!(
            lo <= l95 && l95 <= l80 && l80 <= x && x <= u80 && u80 <= u95 && u95 <= hi,
            "{p}"
        );
    }
}

#[actix_web::test]
async fn a_daily_pattern_is_forecast_with_ordered_bands_and_cached() {
    let app = spawn_app().await;
    let ws = "fc1";
    // The test asks twice within one hour (first point, cache): not across an hour's end.
    let mut now = Utc::now();
    let to_next_hour = now.duration_trunc(TimeDelta::hours(1)).unwrap() + TimeDelta::hours(1) - now;
    if to_next_hour < TimeDelta::seconds(20) {
        actix_web::rt::time::sleep((to_next_hour + TimeDelta::seconds(1)).to_std().unwrap()).await;
        now = Utc::now();
    }
    let this_hour = now.duration_trunc(TimeDelta::hours(1)).unwrap();
    let mut events = Vec::new();
    for h in 1..=4 * 24 {
        let start = this_hour - TimeDelta::hours(h);
        let n = runs_in_hour(chrono::Timelike::hour(&start));
        for i in 0..n {
            let at = start + TimeDelta::seconds(i * 3600 / n);
            events.push(run_event(&format!("r{h}-{i}"), "a", "succeeded", 100.0, at));
        }
    }
    for chunk in events.chunks(1_000) {
        assert_eq!(app.post_events(ws, chunk).await.status(), 200);
    }
    let path =
        format!("/api/v1/predictions/forecasts?workspace_id={ws}&metric=runs&horizon=24h&step=1h");
    let res = app.get(&path, ws).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "MISS");
    assert!(res.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["metric"], "runs");
    assert_eq!(body["step"], "1h");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    assert_eq!(points[0]["ts"], ts(this_hour));
    assert_eq!(points[23]["ts"], ts(this_hour + TimeDelta::hours(23)));
    assert_eq!(
        body["history_points"],
        28 * 24,
        "empty hours of a count are zeros, not gaps"
    );
    assert!(
        ["holt_winters_additive", "seasonal_naive"].contains(&body["method"].as_str().unwrap()),
        "{body}"
    );
    check_bands(points, 0.0, f64::INFINITY);
    // The daily shape carries into the forecast: busy hours above quiet ones.
    let at = |hour: u32| {
        points
            .iter()
            .find(|p| p["ts"].as_str().unwrap()[11..13] == format!("{hour:02}"))
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    assert!(at(13) > 3.0 * at(2), "13:00 {} vs 02:00 {}", at(13), at(2));
    assert!((at(13) - 30.0).abs() < 8.0, "{}", at(13));

    // The same question within the hour is answered from the cache.
    let again = app.get(&path, ws).await;
    assert_eq!(again.headers()["x-cache"], "HIT");
    assert_eq!(again.json::<Value>().await.unwrap(), body);
}

#[actix_web::test]
async fn resource_forecasts_stay_in_bounds_and_name_their_fallback() {
    let app = spawn_app().await;
    let ws = "fc2";
    let now = Utc::now();
    let hb: Vec<Value> = (1..=30)
        .map(|i| {
            json!({"type": "heartbeat", "event_id": format!("h{i}"), "agent_id": "a",
                   "ts": ts(now - TimeDelta::minutes(5 * i)), "cpu_pct": 90.0 + (i % 3) as f64 * 4.0,
                   "mem_mb": 512.0})
        })
        .collect();
    assert_eq!(app.post_events(ws, &hb).await.status(), 200);
    let res = app
        .client
        .post(format!("{}/api/v1/resources/forecast", app.base))
        .bearer_auth(token(&[ws], "read"))
        .json(
            &json!({"workspace_id": ws, "metric": "cpu_pct", "agent_id": "a",
                      "horizon": "2h", "step": "5m"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    assert_eq!(body["step"], "5m");
    assert!(
        ["holt_linear", "naive"].contains(&body["method"].as_str().unwrap()),
        "2.5 h of history is too short for a daily season: {body}"
    );
    check_bands(points, 0.0, 100.0);
    // No history at all: said plainly.
    let res = app
        .get(
            &format!("/api/v1/predictions/forecasts?workspace_id={ws}&metric=error_rate"),
            ws,
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["method"], "none");
    assert_eq!(body["history_points"], 0);
    assert_eq!(body["points"], json!([]));
}

#[actix_web::test]
async fn bad_forecast_requests_get_clear_errors() {
    let app = spawn_app().await;
    let ws = "fc3";
    for (q, code) in [
        ("&metric=latency", "invalid_metric"),
        ("&metric=runs&step=7m", "invalid_step"),
        ("&metric=runs&step=1h&horizon=90m", "invalid_horizon"),
        ("&metric=runs&step=5m&horizon=30d", "invalid_horizon"),
        ("&metric=runs&horizon=soon", "invalid_duration"),
        ("&metric=runs&agent_id=bad%20id", "invalid_agent_id"),
    ] {
        let res = app
            .get(
                &format!("/api/v1/predictions/forecasts?workspace_id={ws}{q}"),
                ws,
            )
            .await;
        assert_eq!(res.status(), 400, "{q}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            code,
            "{q}"
        );
    }
    let post = |body: Value, t: Option<String>| {
        let mut r = app
            .client
            .post(format!("{}/api/v1/resources/forecast", app.base));
        if let Some(t) = t {
            r = r.bearer_auth(t);
        }
        r.json(&body).send()
    };
    let good = json!({"workspace_id": ws, "metric": "mem_mb"});
    let res = post(
        json!({"workspace_id": ws, "metric": "mem_mb", "extra": 1}),
        Some(token(&[ws], "read")),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(post(good.clone(), None).await.unwrap().status(), 401);
    assert_eq!(
        post(good, Some(token(&["other"], "read")))
            .await
            .unwrap()
            .status(),
        403
    );
}
