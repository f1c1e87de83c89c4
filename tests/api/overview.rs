//! Workspace-level history routes (SPEC §8): executive, dashboard, overview, compare, trends
//! and leaderboards, each against SQL over the raw rows for the same range.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::rollups::{post_shuffled, random_events, urlencode};

fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!("from={}&to={}", urlencode(&ts(from)), urlencode(&ts(to)))
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let res = app.get(path, "w1").await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn count(
    client: &tokio_postgres::Client,
    sql: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> i64 {
    client
        .query_one(sql, &[&from, &to])
        .await
        .unwrap()
        .get::<_, Option<i64>>(0)
        .unwrap_or(0)
}

const RUNS_IN: &str = "SELECT count(*) FROM agent_runs WHERE workspace_id = 'w1' AND completed_at >= $1 AND completed_at < $2";

/// Executive summary and trends, dashboard summary, metrics and details, and the overview.
#[actix_web::test]
async fn workspace_summaries_equal_the_raw_rows() {
    let app = spawn_app().await;
    let mut rng = Rng(0x5EED_1234_ABCD_0044);
    let events = random_events(&mut rng, "o-", 1_200);
    post_shuffled(&app, "w1", &mut rng, events).await;
    let client = app.db().await;
    let now = Utc::now();
    let (from, to) = (now - Duration::hours(30), now + Duration::minutes(5));
    let (pfrom, pto) = (from - (to - from), from);

    let body = get_ok(
        &app,
        &format!(
            "/api/v1/executive/summary?workspace_id=w1&{}",
            range(from, to)
        ),
    )
    .await;
    let kpis = &body["kpis"];
    assert_eq!(
        kpis["runs"]["current"],
        count(&client, RUNS_IN, from, to).await as f64
    );
    assert_eq!(
        kpis["runs"]["previous"],
        count(&client, RUNS_IN, pfrom, pto).await as f64
    );
    let (c, p) = (
        kpis["runs"]["current"].as_f64().unwrap(),
        kpis["runs"]["previous"].as_f64().unwrap(),
    );
    assert!((kpis["runs"]["change_pct"].as_f64().unwrap() - (c - p) / p * 100.0).abs() < 1e-9);
    let active = count(
        &client,
        "SELECT count(DISTINCT agent_id) FROM agent_runs WHERE workspace_id = 'w1' AND completed_at >= $1 AND completed_at < $2",
        from,
        to,
    )
    .await;
    assert_eq!(kpis["active_agents"]["current"], active as f64);
    let ok = count(
        &client,
        &format!("{RUNS_IN} AND status = 'succeeded'"),
        from,
        to,
    )
    .await;
    let decided = count(
        &client,
        &format!("{RUNS_IN} AND status <> 'cancelled'"),
        from,
        to,
    )
    .await;
    let rate = kpis["success_rate"]["current"].as_f64().unwrap();
    assert!((rate - ok as f64 / decided as f64).abs() < 1e-12);
    let rating: f64 = client
        .query_one(
            "SELECT avg(rating)::float8 FROM agent_user_feedback WHERE workspace_id = 'w1' AND ts >= $1 AND ts < $2",
            &[&from, &to],
        )
        .await
        .unwrap()
        .get(0);
    assert!((kpis["average_rating"]["current"].as_f64().unwrap() - rating).abs() < 1e-9);
    let top: Vec<(String, i64)> = client
        .query(
            "SELECT agent_id, count(*) FROM agent_runs WHERE workspace_id = 'w1' AND completed_at >= $1 AND completed_at < $2
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
            &[&from, &to],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let got: Vec<(String, i64)> = body["top_agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_str().unwrap().to_owned(),
                a["runs"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, top);

    // Trends by UTC day: this period's buckets and the same buckets of the period before.
    let midnight = now.duration_trunc(Duration::days(1)).unwrap();
    let (tfrom, tto) = (midnight - Duration::days(5), midnight + Duration::days(1));
    let body = get_ok(
        &app,
        &format!("/api/v1/executive/trends?workspace_id=w1&{}&granularity=day&metrics=runs,active_agents", range(tfrom, tto)),
    )
    .await;
    assert!(
        body["metrics"]["credits"].is_null(),
        "only the metrics asked for"
    );
    let runs = body["metrics"]["runs"]["series"].as_array().unwrap();
    assert_eq!(runs.len(), 6);
    for (i, point) in runs.iter().enumerate() {
        let day = tfrom + Duration::days(i as i64);
        let want = count(&client, RUNS_IN, day, day + Duration::days(1)).await;
        assert_eq!(point["value"], want as f64, "runs on {day}");
        let before = day - Duration::days(6);
        let want = count(&client, RUNS_IN, before, before + Duration::days(1)).await;
        assert_eq!(point["previous_value"], want as f64, "runs on {before}");
    }
    let agents = body["metrics"]["active_agents"]["series"]
        .as_array()
        .unwrap();
    for (i, point) in agents.iter().enumerate() {
        let day = tfrom + Duration::days(i as i64);
        let want = count(
            &client,
            "SELECT count(DISTINCT agent_id) FROM agent_runs WHERE workspace_id = 'w1' AND completed_at >= $1 AND completed_at < $2",
            day,
            day + Duration::days(1),
        )
        .await;
        assert_eq!(point["value"], want as f64);
    }

    // Dashboard: summary (with the live state), hourly series, the breakdown.
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/dashboard/summary?workspace_id=w1&{}",
            range(from, to)
        ),
    )
    .await;
    assert_eq!(
        body["kpis"]["runs"],
        count(&client, RUNS_IN, from, to).await as f64
    );
    assert!(body["live"]["runs"].is_u64());
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/dashboard/metrics?workspace_id=w1&{}",
            range(from, to)
        ),
    )
    .await;
    let series = body["series"].as_array().unwrap();
    let total: i64 = series.iter().map(|p| p["runs"].as_i64().unwrap()).sum();
    assert_eq!(total, count(&client, RUNS_IN, from, to).await);
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/dashboard/detailed?workspace_id=w1&{}",
            range(from, to)
        ),
    )
    .await;
    for agent in body["agents"].as_array().unwrap() {
        let id = agent["agent_id"].as_str().unwrap();
        let want = count(
            &client,
            &format!("{RUNS_IN} AND agent_id = '{id}'"),
            from,
            to,
        )
        .await;
        assert_eq!(agent["runs"], want, "{id}");
    }
    let errors: Vec<(Option<String>, Option<String>, i64)> = client
        .query(
            "SELECT error_type, category, count(*) FROM agent_errors WHERE workspace_id = 'w1'
               AND occurred_at >= $1 AND occurred_at < $2 GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            &[&from, &to],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut got: Vec<(Option<String>, Option<String>, i64)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["error_type"].as_str().map(str::to_owned),
                e["category"].as_str().map(str::to_owned),
                e["count"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut want = errors.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let models: i64 = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["runs"].as_i64().unwrap())
        .sum();
    assert_eq!(models, count(&client, RUNS_IN, from, to).await);
    let fours = count(
        &client,
        "SELECT count(*) FROM agent_user_feedback WHERE workspace_id = 'w1' AND rating = 4 AND ts >= $1 AND ts < $2",
        from,
        to,
    )
    .await;
    assert_eq!(body["ratings"]["4"], fours);

    // The overview: the agent sections for the workspace, and its leading agents.
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/analytics/overview?workspace_id=w1&{}",
            range(from, to)
        ),
    )
    .await;
    assert_eq!(
        body["performance"]["runs"],
        count(&client, RUNS_IN, from, to).await
    );
    assert!(body["agent_id"].is_null());
    assert!(body["comparisons"]["workspace"].is_null());
    assert_eq!(body["top_agents"][0]["agent_id"], top[0].0.as_str());
    assert!(body["suggestions"].is_array());
    app.stop().await;
}

/// Compare agents and periods; trends find a step; leaderboards rank with their guard and
/// ties; users from the raw rows.
#[actix_web::test]
async fn compare_trends_and_leaderboards_follow_the_data() {
    let app = spawn_app().await;
    let now = Utc::now();
    let hour = now.duration_trunc(Duration::hours(1)).unwrap();
    let mut events = Vec::new();
    // Twelve hours: 3 runs an hour, then 30 an hour for the last six (a step up).
    for h in 0..12i64 {
        let per_hour = if h < 6 { 3 } else { 30 };
        for i in 0..per_hour {
            let at = hour - Duration::hours(11 - h) + Duration::seconds(i * 60);
            let agent = ["a", "b", "c"][(i % 3) as usize];
            let status = if agent == "c" && i % 2 == 0 {
                "failed"
            } else {
                "succeeded"
            };
            let mut run = run_event(
                &format!("s{h}-{i}"),
                agent,
                status,
                10.0 + agent.len() as f64 * i as f64,
                at.min(now),
            );
            run["credits"] = json!(match agent {
                "a" => 1.0,
                "b" => 0.5,
                _ => 2.0,
            });
            run["user_id"] = json!(format!("user{}", i % 4));
            events.push(run);
        }
    }
    // Two agents tied on runs, and a lucky one with a single success.
    for i in 0..12 {
        for agent in ["tie-a", "tie-b"] {
            events.push(run_event(
                &format!("{agent}-{i}"),
                agent,
                "succeeded",
                5.0,
                now - Duration::minutes(30),
            ));
        }
    }
    events.push(run_event(
        "lucky",
        "lucky",
        "succeeded",
        1.0,
        now - Duration::minutes(3),
    ));
    // Equal costs per success whose floats differ in the last bit (0.3 / 3 and 0.1 / 1).
    for (agent, n) in [("cps-3", 3), ("cps-1", 1)] {
        for i in 0..n {
            let at = now - Duration::minutes(20);
            let mut run = run_event(&format!("{agent}-{i}"), agent, "succeeded", 5.0, at);
            run["credits"] = json!(0.1);
            events.push(run);
        }
    }
    for chunk in events.chunks(100) {
        assert_eq!(app.post_events("w1", chunk).await.status(), 200);
    }
    let client = app.db().await;
    let (from, to) = (hour - Duration::hours(11), hour + Duration::hours(1));

    // Agents side by side, and each one's change against the first.
    let res = app
        .post_json(
            "/api/v1/analytics/compare?workspace_id=w1",
            "w1",
            &json!({"agents": ["a", "c"], "from": ts(from), "to": ts(to)}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let runs = |id: &str| {
        let sql = format!("{RUNS_IN} AND agent_id = '{id}'");
        let client = &client;
        async move { count(client, &sql, from, to).await }
    };
    let (ra, rc) = (runs("a").await, runs("c").await);
    assert_eq!(body["items"][0]["runs"], ra);
    assert_eq!(body["items"][1]["runs"], rc);
    let change = body["items"][1]["change_pct_vs_first"]["runs"]
        .as_f64()
        .unwrap();
    assert!((change - (rc - ra) as f64 / ra as f64 * 100.0).abs() < 1e-9);
    // Periods side by side: the quiet six hours against the busy six.
    let mid = from + Duration::hours(6);
    let res = app
        .post_json(
            "/api/v1/analytics/compare?workspace_id=w1",
            "w1",
            &json!({"periods": [{"from": ts(from), "to": ts(mid)}, {"from": ts(mid), "to": ts(to)}]}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["items"][0]["runs"],
        count(&client, RUNS_IN, from, mid).await
    );
    assert_eq!(
        body["items"][1]["runs"],
        count(&client, RUNS_IN, mid, to).await
    );
    for bad in [
        json!({"agents": ["a"]}),
        json!({"agents": ["a", "b"], "periods": []}),
        json!({"periods": [{"from": ts(mid), "to": ts(from)}, {"from": ts(from), "to": ts(mid)}]}),
    ] {
        let res = app
            .post_json("/api/v1/analytics/compare?workspace_id=w1", "w1", &bad)
            .await;
        assert_eq!(res.status(), 400, "{bad}");
    }

    // Trends: hourly runs of agent a step up where the traffic did.
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/trends?workspace_id=w1&metric=runs&agent_id=a&{}",
            range(from, to)
        ),
    )
    .await;
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 12);
    for (i, p) in series.iter().enumerate() {
        let h = from + Duration::hours(i as i64);
        let sql = format!("{RUNS_IN} AND agent_id = 'a'");
        assert_eq!(
            p["value"],
            count(&client, &sql, h, h + Duration::hours(1)).await as f64
        );
    }
    assert_eq!(body["direction"], "up");
    assert_eq!(
        body["change_points"],
        json!([ts_json_like(from + Duration::hours(6))])
    );
    let res = app
        .get("/api/v1/trends?workspace_id=w1&metric=fame", "w1")
        .await;
    assert_eq!(res.status(), 400);

    // Leaderboards: runs with ties sharing a rank and listed by id; the min-runs guard.
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/leaderboards/agents?workspace_id=w1&{}&min_runs=12",
            range(from, to)
        ),
    )
    .await;
    let ranks: Vec<(String, i64, i64)> = body["rankings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["rank"].as_i64().unwrap(),
                r["runs"].as_i64().unwrap(),
            )
        })
        .collect();
    let tie_a = ranks.iter().find(|r| r.0 == "tie-a").unwrap();
    let tie_b = ranks.iter().find(|r| r.0 == "tie-b").unwrap();
    assert_eq!(tie_a.1, tie_b.1, "equal runs share a rank");
    let pos = |id: &str| ranks.iter().position(|r| r.0 == id).unwrap();
    assert!(pos("tie-a") < pos("tie-b"));
    assert!(ranks.windows(2).all(|w| w[0].2 >= w[1].2));
    assert!(
        !ranks.iter().any(|r| r.0 == "lucky"),
        "one run is under the guard"
    );
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/leaderboards/agents?workspace_id=w1&{}&criterion=success_rate&min_runs=1",
            range(from, to)
        ),
    )
    .await;
    assert_eq!(body["rankings"][0]["value"], 1.0);
    assert!(body["rankings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "lucky"));
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/leaderboards/agents?workspace_id=w1&{}&criterion=cost_per_success",
            range(from, to)
        ),
    )
    .await;
    let costs: Vec<f64> = body["rankings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{costs:?}");
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/leaderboards/agents?workspace_id=w1&{}&criterion=cost_per_success&min_runs=1&limit=100",
            range(from, to)
        ),
    )
    .await;
    let rank_of = |id: &str| {
        body["rankings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["rank"]
            .as_i64()
    };
    assert_eq!(
        rank_of("cps-1"),
        rank_of("cps-3"),
        "equal costs per success share a rank"
    );
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/leaderboards/agents?workspace_id=w1&{}&criterion=p95_ms",
            range(from, to)
        ),
    )
    .await;
    for r in body["rankings"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let p95: f64 = client
            .query_one(
                "SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY runtime_ms) FROM agent_runs
                 WHERE workspace_id = 'w1' AND agent_id = $1 AND completed_at >= $2 AND completed_at < $3",
                &[&id, &from, &to],
            )
            .await
            .unwrap()
            .get(0);
        let got = r["value"].as_f64().unwrap();
        assert!(
            (got - p95).abs() <= 0.01 * p95,
            "{id}: p95 {got} against {p95}"
        );
    }
    // Users, from the raw rows.
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/leaderboards/users?workspace_id=w1&{}&min_runs=1",
            range(from, to)
        ),
    )
    .await;
    let want: Vec<(String, i64)> = client
        .query(
            "SELECT user_id, count(*) FROM agent_runs WHERE workspace_id = 'w1' AND user_id IS NOT NULL
               AND completed_at >= $1 AND completed_at < $2 GROUP BY 1 ORDER BY 2 DESC, 1",
            &[&from, &to],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let got: Vec<(String, i64)> = body["rankings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["runs"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let res = app
        .get(
            "/api/v1/leaderboards/users?workspace_id=w1&timeframe=90d",
            "w1",
        )
        .await;
    assert_eq!(res.status(), 400, "past retention.raw");
    let res = app
        .get(
            "/api/v1/leaderboards/agents?workspace_id=w1&criterion=fame&limit=0",
            "w1",
        )
        .await;
    assert_eq!(res.status(), 400);
    app.stop().await;
}

/// How the hub writes a time (RFC 3339, milliseconds, `Z`).
fn ts_json_like(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Resource history, allocation efficiency and agent comparison against the raw heartbeats.
#[actix_web::test]
async fn resource_history_and_efficiency_equal_the_raw_heartbeats() {
    let app = spawn_app().await;
    let now = Utc::now();
    let hour = now.duration_trunc(Duration::hours(1)).unwrap();
    let mut events = Vec::new();
    for i in 0..90i64 {
        let at = (hour - Duration::hours(2) + Duration::minutes(i * 2)).min(now);
        events.push(json!({"type": "heartbeat", "event_id": format!("h1-{i}"), "agent_id": "r1", "ts": ts(at),
            "cpu_pct": 8.0 + (i % 5) as f64, "cpu_limit_cores": 1.0, "mem_mb": 500.0 + i as f64, "mem_limit_mb": 1024.0}));
        events.push(json!({"type": "heartbeat", "event_id": format!("h2-{i}"), "agent_id": "r2", "ts": ts(at),
            "cpu_pct": 150.0 + (i % 7) as f64, "cpu_limit_cores": 2.0, "mem_mb": 3000.0, "mem_limit_mb": 4096.0,
            "concurrent_runs": i % 9, "queue_depth": i % 4}));
        events.push(json!({"type": "heartbeat", "event_id": format!("h3-{i}"), "agent_id": "r3", "ts": ts(at), "cpu_pct": 50.0}));
    }
    for i in 0..30 {
        let mut run = run_event(
            &format!("rr{i}"),
            if i % 3 == 0 { "r2" } else { "r1" },
            "succeeded",
            20.0,
            now - Duration::minutes(i),
        );
        run["credits"] = json!(0.5);
        events.push(run);
    }
    for chunk in events.chunks(100) {
        assert_eq!(app.post_events("w1", chunk).await.status(), 200);
    }
    let client = app.db().await;
    let (from, to) = (hour - Duration::hours(2), hour + Duration::hours(1));
    let body = get_ok(
        &app,
        &format!(
            "/api/v1/resources/agents/r1/history?workspace_id=w1&{}",
            range(from, to)
        ),
    )
    .await;
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 3);
    for (i, p) in series.iter().enumerate() {
        let h = from + Duration::hours(i as i64);
        let row = client
            .query_one(
                "SELECT count(*), avg(cpu_pct), max(mem_mb), avg(cpu_pct / (100 * cpu_limit_cores)) FROM resource_samples
                 WHERE workspace_id = 'w1' AND agent_id = 'r1' AND ts >= $1 AND ts < $2",
                &[&h, &(h + Duration::hours(1))],
            )
            .await
            .unwrap();
        assert_eq!(p["samples"], row.get::<_, i64>(0), "samples at {h}");
        if row.get::<_, i64>(0) > 0 {
            let close = |got: &Value, want: f64| (got.as_f64().unwrap() - want).abs() < 1e-3;
            assert!(close(&p["cpu_pct"]["avg"], row.get(1)), "{p}");
            assert!(close(&p["mem_mb"]["max"], row.get(2)), "{p}");
            assert!(close(&p["efficiency"]["cpu"], row.get(3)), "{p}");
        }
    }
    assert_eq!(body["totals"]["samples"], 90);

    let body = get_ok(
        &app,
        &format!(
            "/api/v1/resources/efficiency?workspace_id=w1&{}",
            range(from, to)
        ),
    )
    .await;
    let agents: Vec<&str> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        agents,
        ["r1", "r2"],
        "least used first; r3 sent no allocation"
    );
    let mean: f64 = client
        .query_one(
            "SELECT avg(cpu_pct / (100 * cpu_limit_cores)) FROM resource_samples WHERE workspace_id = 'w1' AND cpu_limit_cores > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((body["workspace"]["cpu"].as_f64().unwrap() - mean).abs() < 1e-6);

    let body = get_ok(
        &app,
        &format!(
            "/api/v1/resources/compare?workspace_id=w1&agents=r1,r2&{}",
            range(from, to)
        ),
    )
    .await;
    assert_eq!(body["agents"][0]["runs"], 20);
    assert_eq!(body["agents"][1]["runs"], 10);
    assert_eq!(body["agents"][1]["concurrent_runs_max"], 8.0);
    assert!((body["agents"][0]["credits_per_run"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    let res = app
        .get("/api/v1/resources/compare?workspace_id=w1&agents=r1", "w1")
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .get(
            "/api/v1/resources/agents/nobody/history?workspace_id=w1",
            "w1",
        )
        .await;
    assert_eq!(res.status(), 404);
    app.stop().await;
}
