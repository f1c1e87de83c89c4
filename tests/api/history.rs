//! History routes (SPEC §8): each answer equals an independent recomputation over the raw
//! rows for the same range and buckets, the open hour included; bad parameters are listed.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use shadower_actors::domain::users::UserSet;

use crate::helpers::*;
use crate::rollups::{post_shuffled, random_events, raw_totals, urlencode};

/// The raw rows' figures per bucket (`date_trunc(unit, completed_at, tz)`, the hub's hours
/// being UTC hours) over `[from, to)` for `agent` (`""`: all).
#[derive(Debug)]
struct RawBucket {
    counts: [i64; 5],
    credits_micro: i64,
    tokens_in: i64,
    p95: f64,
    users: Vec<i64>,
}

async fn raw_buckets(
    client: &tokio_postgres::Client,
    agent: &str,
    unit: &str,
    tz: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> HashMap<DateTime<Utc>, RawBucket> {
    let tz = if unit == "hour" { "UTC" } else { tz };
    let rows = client
        .query(
            "SELECT date_trunc($4, completed_at, $5), count(*),
                    count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'timeout'),
                    count(*) FILTER (WHERE status = 'cancelled'),
                    sum(round(credits * float8 '1e6')::int8)::int8, sum(tokens_in)::int8,
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY runtime_ms),
                    coalesce(array_agg(DISTINCT hub_user_hash(user_id)) FILTER (WHERE user_id IS NOT NULL), '{}')
             FROM agent_runs WHERE workspace_id = 'w1' AND ($1 = '' OR agent_id = $1)
               AND completed_at >= $2 AND completed_at < $3
             GROUP BY 1",
            &[&agent, &from, &to, &unit, &tz],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.get(0),
                RawBucket {
                    counts: [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)],
                    credits_micro: r.get(6),
                    tokens_in: r.get(7),
                    p95: r.get(8),
                    users: r.get(9),
                },
            )
        })
        .collect()
}

fn at(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// A series point (or the totals) against the raw rows' figures.
fn assert_point(label: &str, got: &Value, want: &RawBucket) {
    for (i, field) in ["runs", "succeeded", "failed", "timeout", "cancelled"]
        .iter()
        .enumerate()
    {
        assert_eq!(got[field], want.counts[i], "{label}: {field}");
    }
    assert_eq!(got["tokens_in"], want.tokens_in, "{label}: tokens_in");
    let credits = want.credits_micro as f64 / 1e6;
    assert!(
        (got["credits"].as_f64().unwrap() - credits).abs() < 1e-6,
        "{label}: credits {} against {credits}",
        got["credits"]
    );
    let p95 = got["runtime_ms"]["p95"].as_f64().unwrap();
    assert!(
        (p95 - want.p95).abs() <= 0.01 * want.p95,
        "{label}: p95 {p95} against {}",
        want.p95
    );
    let users = UserSet::from_hashes(want.users.iter().map(|&h| h as u64));
    assert_eq!(got["users"]["distinct"], users.count(), "{label}: users");
}

/// `GET /metrics/execution`: totals and every bucket, for hours, days in a half-hour zone,
/// weeks across a daylight-saving zone and months, for the workspace and one agent, equal
/// the raw rows; the buckets are the zone's calendar and the open hour is in them.
#[actix_web::test]
async fn execution_series_equal_the_raw_rows_in_every_bucket() {
    let app = spawn_app().await;
    let mut rng = Rng(0x5EED_1234_ABCD_0014);
    let events = random_events(&mut rng, "h-", 1_500);
    post_shuffled(&app, "w1", &mut rng, events).await;
    // Posted a second ago: the open hour must count it.
    let now = Utc::now();
    let fresh = run_event("fresh", "a0", "failed", 7.0, now - Duration::seconds(1));
    assert_eq!(app.post_events("w1", &[fresh]).await.status(), 200);
    let client = app.db().await;
    let to = Utc::now() + Duration::minutes(6);
    // Once with deltas pending (the fold runs each second), once with all of them folded.
    assert_series_exact(&app, &client, to).await;
    let mut pending = i64::MAX;
    for _ in 0..200 {
        pending = client
            .query_one("SELECT count(*) FROM rollup_delta_runs", &[])
            .await
            .unwrap()
            .get(0);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "the folds took every delta");
    assert_series_exact(&app, &client, to).await;

    // Throughput: the same runs per bucket, per-minute rates over the part in range, the peak.
    let from = to - Duration::hours(30);
    let path = format!(
        "/api/v1/metrics/execution/throughput?workspace_id=w1&from={}&to={}",
        urlencode(&ts(from)),
        urlencode(&ts(to))
    );
    let body: Value = app.get(&path, "w1").await.json().await.unwrap();
    assert_eq!(body["granularity"], "hour");
    let want = raw_buckets(&client, "", "hour", "UTC", from, to).await;
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 31);
    let mut total = 0;
    for (i, point) in series.iter().enumerate() {
        let start = at(&point["ts"]);
        let runs = want.get(&start).map_or(0, |b| b.counts[0]);
        assert_eq!(point["runs"], runs, "throughput at {start}");
        let begin = if i == 0 { from } else { start };
        let end = (start + Duration::hours(1)).min(to);
        let minutes = (end - begin).num_milliseconds() as f64 / 60_000.0;
        let rate = point["per_minute"].as_f64().unwrap();
        // The hub reads `from` to the millisecond it was sent with.
        let want_rate = runs as f64 / minutes;
        assert!(
            (rate - want_rate).abs() <= 1e-6 * want_rate,
            "rate at {start}: {rate} against {want_rate}"
        );
        total += runs;
    }
    assert_eq!(body["runs"], total);
    let peak = series
        .iter()
        .map(|p| p["per_minute"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(body["peak"]["per_minute"].as_f64(), Some(peak));
    app.stop().await;
}

/// Every bad parameter of a series route is listed at once; an unknown agent is a 404 and
/// another workspace a 403.
#[actix_web::test]
async fn series_parameters_are_checked_together() {
    let app = spawn_app_with(&[("analytics.max_points", json!(100))]).await;
    let run = run_event("r1", "a0", "succeeded", 12.0, Utc::now());
    assert_eq!(app.post_events("w1", &[run]).await.status(), 200);
    let fields = |body: &Value| -> Vec<String> {
        body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |q: &str| {
        let path = format!("/api/v1/metrics/execution?workspace_id=w1&{q}");
        let app = &app;
        async move {
            let res = app.get(&path, "w1").await;
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get("tz=Mars%2FOlympus&granularity=fortnight&bogus=1&limit=3").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_parameters");
    assert_eq!(fields(&body), ["bogus", "limit", "tz", "granularity"]);
    // Past analytics.max_points (100 here): a week of hours is refused, of days answered.
    let (status, body) = get("timeframe=7d&granularity=hour").await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["granularity".to_owned()])
    );
    assert!(body["error"]["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("analytics.max_points"));
    assert_eq!(get("timeframe=7d&granularity=day").await.0, 200);
    // A range may not end more than a day ahead (its reads would walk every hour to it).
    let far = format!(
        "from={}&to=9999-12-31T00:00:00Z",
        urlencode(&ts(Utc::now() - Duration::hours(1)))
    );
    let (status, body) = get(&far).await;
    assert_eq!((status, fields(&body)), (400, vec!["to".to_owned()]));
    let res = app
        .get(
            &format!("/api/v1/agents/a0/stats?workspace_id=w1&{far}"),
            "w1",
        )
        .await;
    assert_eq!(res.status(), 400, "a route without buckets too");
    // Past retention.raw (30 days) the raw rows of partial hours are gone: a given range must
    // start and end on whole hours there, a timeframe starts on the hour, and a zone whose
    // days start off the hour cannot cut them.
    let hour =
        |t: DateTime<Utc>| chrono::DurationRound::duration_trunc(t, Duration::hours(1)).unwrap();
    let old_from = hour(Utc::now() - Duration::days(40));
    let old_to = hour(Utc::now() - Duration::days(39));
    let off = format!(
        "from={}&to={}",
        urlencode(&ts(old_from + Duration::minutes(30))),
        urlencode(&ts(old_to))
    );
    let (status, body) = get(&off).await;
    assert_eq!((status, fields(&body)), (400, vec!["from".to_owned()]));
    let whole = format!(
        "from={}&to={}",
        urlencode(&ts(old_from)),
        urlencode(&ts(old_to))
    );
    assert_eq!(get(&whole).await.0, 200);
    let (status, body) = get("timeframe=90d").await;
    assert_eq!(status, 200);
    let from = at(&body["from"]);
    assert_eq!(
        hour(from),
        from,
        "a timeframe past retention.raw starts on the hour"
    );
    let (status, body) = get("timeframe=90d&granularity=day&tz=Asia%2FKolkata").await;
    assert_eq!((status, fields(&body)), (400, vec!["tz".to_owned()]));
    assert_eq!(
        get("timeframe=90d&granularity=day&tz=Europe%2FParis")
            .await
            .0,
        200
    );
    let (status, body) = get("timeframe=24h&timeframe=7d").await;
    assert_eq!((status, fields(&body)), (400, vec!["timeframe".to_owned()]));
    let (status, body) = get("agent_id=bad%20id").await;
    assert_eq!((status, fields(&body)), (400, vec!["agent_id".to_owned()]));
    let (status, body) = get("agent_id=nobody").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get("timeframe=1h&granularity=day&tz=Asia%2FKolkata").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["runs"], 1);
    let series = body["series"].as_array().unwrap();
    // One bucket, or two when the last hour crossed midnight in Kolkata.
    assert!((1..=2).contains(&series.len()), "{body}");
    let runs: i64 = series.iter().map(|p| p["runs"].as_i64().unwrap()).sum();
    assert_eq!(runs, 1);
    let res = app
        .get("/api/v1/metrics/execution/throughput?workspace_id=w1", "w2")
        .await;
    assert_eq!(res.status(), 403);
    app.stop().await;
}

/// Every case of bucket size and zone, for the workspace and one agent, against the raw rows.
async fn assert_series_exact(app: &TestApp, client: &tokio_postgres::Client, to: DateTime<Utc>) {
    let cases = [
        ("hour", "UTC", Duration::hours(30)),
        (
            "day",
            "Asia/Kolkata",
            Duration::days(6) + Duration::minutes(17),
        ),
        (
            "week",
            "America/New_York",
            Duration::days(6) + Duration::hours(5),
        ),
        (
            "month",
            "Europe/Paris",
            Duration::days(6) + Duration::hours(23),
        ),
    ];
    for (granularity, tz, span) in cases {
        let from = to - span;
        for agent in ["", "a0"] {
            let label = format!("{granularity} {tz} agent {agent:?}");
            let mut path = format!(
                "/api/v1/metrics/execution?workspace_id=w1&from={}&to={}&granularity={granularity}&tz={}",
                urlencode(&ts(from)),
                urlencode(&ts(to)),
                tz.replace('/', "%2F"),
            );
            if !agent.is_empty() {
                path.push_str(&format!("&agent_id={agent}"));
            }
            let res = app.get(&path, "w1").await;
            assert_eq!(res.status(), 200, "{label}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["granularity"], granularity);
            assert_eq!(body["tz"], tz);
            let mut want = raw_buckets(client, agent, granularity, tz, from, to).await;
            let series = body["series"].as_array().unwrap();
            let mut previous = None;
            for point in series {
                let start = at(&point["ts"]);
                assert!(previous.is_none_or(|p| p < start), "{label}: out of order");
                previous = Some(start);
                match want.remove(&start) {
                    Some(raw) => assert_point(&format!("{label} at {start}"), point, &raw),
                    None => assert_eq!(point["runs"], 0, "{label} at {start}"),
                }
            }
            assert!(want.is_empty(), "{label}: buckets missing {want:?}");
            // The totals, against the raw rows of the whole range.
            let (counts, sums, percentiles, hashes) = raw_totals(client, agent, from, to).await;
            let total = RawBucket {
                counts: counts.try_into().unwrap(),
                credits_micro: sums[1].parse().unwrap(),
                tokens_in: sums[2].parse().unwrap(),
                p95: percentiles.unwrap()[1],
                users: hashes,
            };
            assert_point(&format!("{label} totals"), &body["totals"], &total);
        }
    }
}

/// `GET /agents/{id}/executions`: paging through with a cursor gives every run of the agent in
/// the range once, newest first (ties by event id), whatever is posted meanwhile; filters
/// match SQL over the raw rows; failed runs carry their error object.
#[actix_web::test]
async fn executions_page_through_every_run_once() {
    let app = spawn_app().await;
    let mut rng = Rng(0x5EED_1234_ABCD_0024);
    let now = Utc::now();
    let statuses = ["succeeded", "failed", "timeout", "cancelled"];
    let models = ["gpt-4o", "claude"];
    let events: Vec<Value> = (0..260)
        .map(|i| {
            let agent = if i % 5 == 0 { "a1" } else { "a0" };
            // Groups of runs that completed at the same instant: ties need the event id.
            let at = now - Duration::seconds(((i / 3) * 97 % 20_000) as i64);
            let mut run = run_event(&format!("e{i:03}"), agent, rng.pick(&statuses), 5.0, at);
            run["model"] = json!(rng.pick(&models));
            run["user_id"] = json!(format!("u{}", rng.below(4)));
            if run["status"] == "failed" && i % 2 == 0 {
                run["error"] = json!({"type": "RateLimit", "category": "model",
                                      "severity": "high", "message": format!("boom {i}")});
            }
            run
        })
        .collect();
    for chunk in events.chunks(50) {
        assert_eq!(app.post_events("w1", chunk).await.status(), 200);
    }
    let client = app.db().await;
    let (from, to) = (now - Duration::hours(7), now + Duration::minutes(1));
    let range = format!("from={}&to={}", urlencode(&ts(from)), urlencode(&ts(to)));
    let want = |filter: &'static str| {
        let client = &client;
        async move {
            let sql = format!(
                "SELECT event_id FROM agent_runs WHERE workspace_id = 'w1' AND agent_id = 'a0'
                   AND completed_at >= $1 AND completed_at < $2 {filter}
                 ORDER BY completed_at DESC, event_id DESC"
            );
            let rows = client.query(&sql, &[&from, &to]).await.unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let page_through = |query: String| {
        let app = &app;
        async move {
            let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
            loop {
                let mut path = format!("/api/v1/agents/a0/executions?workspace_id=w1&{query}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let res = app.get(&path, "w1").await;
                assert_eq!(res.status(), 200, "{path}");
                let body: Value = res.json().await.unwrap();
                let page = body["executions"].as_array().unwrap().clone();
                assert!(page.len() <= 37);
                seen.extend(page);
                pages += 1;
                if pages == 1 {
                    // Posted after the first page: newer than the cursor, so not in the pages
                    // that follow, and nothing shifts.
                    let late = run_event("zz-late", "a0", "succeeded", 1.0, Utc::now());
                    assert_eq!(app.post_events("w1", &[late]).await.status(), 200);
                }
                match body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            seen
        }
    };
    let all = page_through(format!("{range}&limit=37")).await;
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let expected = want("AND event_id <> 'zz-late'").await;
    assert_eq!(ids, expected);
    assert!(ids.len() > 37 * 4, "{} runs: several pages", ids.len());
    // Failed runs with an error object carry it, as stored.
    let failed = all
        .iter()
        .find(|e| e["error"].is_object())
        .expect("a run with its error");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["type"], "RateLimit");
    assert!(failed["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("boom "));
    assert!(all
        .iter()
        .filter(|e| e["status"] != "failed")
        .all(|e| e["error"].is_null()));

    let filtered = page_through(format!(
        "{range}&limit=37&status=failed,timeout&model=gpt-4o&user_id=u1"
    ))
    .await;
    let ids: Vec<&str> = filtered
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let expected = want(
        "AND status IN ('failed', 'timeout') AND model = 'gpt-4o' AND user_id = 'u1'
         AND event_id <> 'zz-late'",
    )
    .await;
    assert!(!expected.is_empty());
    assert_eq!(ids, expected);

    // Bad parameters, all listed; an unknown agent.
    let res = app
        .get(
            "/api/v1/agents/a0/executions?workspace_id=w1&limit=0&cursor=nonsense&status=done",
            "w1",
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["status", "limit", "cursor"]);
    let res = app
        .get(
            "/api/v1/agents/a0/executions?workspace_id=w1&limit=501",
            "w1",
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .get("/api/v1/agents/nobody/executions?workspace_id=w1", "w1")
        .await;
    assert_eq!(res.status(), 404);
    app.stop().await;
}

/// `GET /agents`: every agent heard from (runs, heartbeats or feedback), with its figures
/// over the range equal to the raw rows, zeros for one quiet in the range; sorted with stable
/// ties, filtered, and paged without loss. `GET /agents/{id}`: first and last seen to the
/// event, its models as SQL groups them, and its live state.
#[actix_web::test]
async fn agents_list_every_agent_with_exact_figures() {
    let app = spawn_app().await;
    let mut rng = Rng(0x5EED_1234_ABCD_0034);
    let events = random_events(&mut rng, "g-", 800);
    post_shuffled(&app, "w1", &mut rng, events).await;
    let now = Utc::now();
    let extra = vec![
        serde_json::json!({"type": "heartbeat", "event_id": "hb1", "agent_id": "Heartbeat-Only",
                           "ts": ts(now), "cpu_pct": 12.0, "mem_mb": 100.0}),
        run_event("old1", "quiet", "succeeded", 3.0, now - Duration::days(3)),
        run_event("new1", "brand-new", "failed", 4.0, now),
    ];
    assert_eq!(app.post_events("w1", &extra).await.status(), 200);
    let client = app.db().await;
    let (from, to) = (now - Duration::hours(24), now + Duration::minutes(5));
    let range = format!("from={}&to={}", urlencode(&ts(from)), urlencode(&ts(to)));
    let list = |q: String| {
        let app = &app;
        async move {
            let res = app
                .get(&format!("/api/v1/agents?workspace_id=w1&{q}"), "w1")
                .await;
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = list(format!("{range}&limit=1000")).await;
    assert_eq!(status, 200, "{body}");
    let agents = body["agents"].as_array().unwrap();
    let known: Vec<String> = client
        .query(
            "SELECT agent_id FROM (SELECT agent_id FROM agent_runs WHERE workspace_id = 'w1'
               UNION SELECT agent_id FROM resource_samples WHERE workspace_id = 'w1'
               UNION SELECT agent_id FROM agent_user_feedback WHERE workspace_id = 'w1') AS a",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(body["total"], known.len());
    assert_eq!(agents.len(), known.len());
    for agent in agents {
        let id = agent["agent_id"].as_str().unwrap();
        assert!(known.iter().any(|k| k == id), "{id}");
        let (counts, sums, _, _) = raw_totals(&client, id, from, to).await;
        assert_eq!(agent["runs"], counts[0], "{id} runs");
        assert_eq!(agent["failed"], counts[2], "{id} failed");
        assert_eq!(agent["tokens_in"].to_string(), sums[2], "{id} tokens");
    }
    let by_id = |id: &str| agents.iter().find(|a| a["agent_id"] == id).unwrap().clone();
    assert_eq!(by_id("quiet")["runs"], 0);
    assert_eq!(by_id("brand-new")["runs"], 1);
    assert_eq!(by_id("Heartbeat-Only")["liveness"]["state"], "live");
    // Sorted by runs, descending, ties by id.
    for w in agents.windows(2) {
        let (a, b) = (w[0]["runs"].as_i64(), w[1]["runs"].as_i64());
        assert!(a > b || (a == b && w[0]["agent_id"].as_str() < w[1]["agent_id"].as_str()));
    }
    // Pages of two give the same list.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = list(format!("{range}&limit=2{cursor}")).await;
        assert_eq!(status, 200);
        paged.extend(
            page["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["agent_id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let ids: Vec<Value> = agents.iter().map(|a| a["agent_id"].clone()).collect();
    assert_eq!(paged, ids);
    // Success rate ascending: agents with no decided run last.
    let (_, body) = list(format!("{range}&sort=success_rate&order=asc")).await;
    let rates: Vec<Option<f64>> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["success_rate"].as_f64())
        .collect();
    let defined = rates.iter().take_while(|r| r.is_some()).count();
    assert!(rates[defined..].iter().all(Option::is_none));
    assert!(rates[..defined].windows(2).all(|w| w[0] <= w[1]));
    // By id, descending.
    let (_, body) = list(format!("{range}&sort=agent_id&order=desc")).await;
    let ids: Vec<&str> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    // The text filter ignores case.
    let (_, body) = list("q=heartbeat".into()).await;
    let only: Vec<&str> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(only, ["Heartbeat-Only"]);
    // Bad parameters, all listed.
    let (_, page) = list(format!("{range}&limit=2")).await;
    let other_sort = page["next_cursor"].as_str().unwrap().to_owned();
    let (status, body) = list(format!(
        "sort=fame&order=up&limit=0&cursor={other_sort}&sort2=1"
    ))
    .await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["sort2", "sort", "order", "limit", "cursor"]);

    // One agent: first and last seen to the event, models as SQL groups them, live state.
    let res = app.get("/api/v1/agents/a0?workspace_id=w1", "w1").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let row = client
        .query_one(
            "SELECT min(t), max(t) FROM (
               SELECT completed_at FROM agent_runs WHERE workspace_id = 'w1' AND agent_id = 'a0'
               UNION ALL SELECT ts FROM resource_samples WHERE workspace_id = 'w1' AND agent_id = 'a0'
               UNION ALL SELECT ts FROM agent_user_feedback WHERE workspace_id = 'w1' AND agent_id = 'a0'
             ) AS e(t)",
            &[],
        )
        .await
        .unwrap();
    let (first, last): (DateTime<Utc>, DateTime<Utc>) = (row.get(0), row.get(1));
    assert_eq!(at(&body["first_seen"]), first);
    assert_eq!(at(&body["last_seen"]), last);
    let models = client
        .query(
            "SELECT model, count(*), sum(tokens_in)::int8 FROM agent_runs
             WHERE workspace_id = 'w1' AND agent_id = 'a0' AND completed_at >= $1
             GROUP BY 1 ORDER BY 2 DESC, 1",
            &[&(Utc::now() - Duration::days(30))],
        )
        .await
        .unwrap();
    let got = body["models"].as_array().unwrap();
    assert_eq!(got.len(), models.len());
    for (g, m) in got.iter().zip(&models) {
        assert_eq!(g["model"].as_str(), m.get::<_, Option<&str>>(0));
        assert_eq!(g["runs"], m.get::<_, i64>(1));
        assert_eq!(g["tokens_in"], m.get::<_, i64>(2));
    }
    assert!(body["live"]["execution"]["runs"].is_u64());
    let res = app.get("/api/v1/agents/nobody?workspace_id=w1", "w1").await;
    assert_eq!(res.status(), 404);
    let res = app.get("/api/v1/agents?workspace_id=w1", "w2").await;
    assert_eq!(res.status(), 403);
    app.stop().await;
}

/// `GET /agents/{id}/analytics`: every section's figures equal SQL over the raw rows for the
/// range and the period before it, and each suggestion rule fires on data made to trip it
/// (with its evidence) and none on a calm agent.
#[actix_web::test]
async fn agent_analytics_sections_and_suggestions_follow_the_data() {
    let app = spawn_app().await;
    let now = Utc::now();
    let mut events = Vec::new();
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("x{n}")
    };
    // The period before: 60 runs on "old" at ~100 ms.
    for i in 0..60 {
        let at = now - Duration::hours(3) - Duration::seconds(i);
        let mut run = run_event(&id(), "opt", "succeeded", 90.0 + i as f64 / 6.0, at);
        run["model"] = json!("old");
        events.push(run);
    }
    // The range: 40 successes each on "big" (2 credits) and "small" (0.5), ~500 ms, and 20
    // failures, 15 of them RateLimit.
    for i in 0..80 {
        let at = now - Duration::minutes(30) - Duration::seconds(i);
        let mut run = run_event(&id(), "opt", "succeeded", 480.0 + i as f64, at);
        let big = i % 2 == 0;
        run["model"] = json!(if big { "big" } else { "small" });
        run["credits"] = json!(if big { 2.0 } else { 0.5 });
        run["user_id"] = json!(format!("u{}", i % 7));
        events.push(run);
    }
    for i in 0..20 {
        let at = now - Duration::minutes(20) - Duration::seconds(i);
        let mut run = run_event(&id(), "opt", "failed", 50.0, at);
        run["model"] = json!("big");
        let kind = if i < 15 { "RateLimit" } else { "Timeout" };
        run["error"] =
            json!({"type": kind, "category": "model", "severity": "high", "message": "x"});
        events.push(run);
    }
    for i in 0..40 {
        events.push(
            json!({"type": "heartbeat", "event_id": id(), "agent_id": "opt",
            "ts": ts(now - Duration::minutes(40) + Duration::seconds(i * 30)),
            "cpu_pct": 10.0 + (i % 3) as f64, "cpu_limit_cores": 1.0,
            "mem_mb": 100.0, "mem_limit_mb": 4096.0}),
        );
    }
    for rating in [5, 4, 2] {
        events.push(
            json!({"type": "feedback", "event_id": id(), "agent_id": "opt",
            "user_id": "u1", "ts": ts(now - Duration::minutes(10)), "rating": rating}),
        );
    }
    // A calm agent: 400 successes, so the workspace's error rate is low.
    for i in 0..400 {
        let at = now - Duration::minutes(50) - Duration::seconds(i);
        let mut run = run_event(&id(), "calm", "succeeded", 100.0, at);
        run["model"] = json!("small");
        run["credits"] = json!(0.5);
        events.push(run);
    }
    for chunk in events.chunks(200) {
        assert_eq!(app.post_events("w1", chunk).await.status(), 200);
    }
    let client = app.db().await;
    let (from, to) = (now - Duration::hours(2), now + Duration::minutes(5));
    let path = |agent: &str| {
        format!(
            "/api/v1/agents/{agent}/analytics?workspace_id=w1&from={}&to={}",
            urlencode(&ts(from)),
            urlencode(&ts(to))
        )
    };
    let res = app.get(&path("opt"), "w1").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();

    // Performance against the raw rows.
    let (counts, _, percentiles, _) = raw_totals(&client, "opt", from, to).await;
    let perf = &body["performance"];
    assert_eq!(perf["runs"], counts[0]);
    assert_eq!(perf["failed"], counts[2]);
    let p95 = percentiles.unwrap()[1];
    let got = perf["runtime_ms"]["p95"].as_f64().unwrap();
    assert!((got - p95).abs() <= 0.01 * p95, "p95 {got} against {p95}");
    let series_runs: i64 = perf["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["runs"].as_i64().unwrap())
        .sum();
    assert_eq!(series_runs, counts[0]);
    // Errors by type, as SQL groups them.
    let by_type = client
        .query(
            "SELECT error_type, count(*) FROM agent_errors WHERE workspace_id = 'w1' AND agent_id = 'opt'
               AND occurred_at >= $1 AND occurred_at < $2 GROUP BY 1 ORDER BY 2 DESC, 1",
            &[&from, &to],
        )
        .await
        .unwrap();
    let got = body["errors"]["by_type"].as_array().unwrap();
    assert_eq!(got.len(), by_type.len());
    for (g, w) in got.iter().zip(&by_type) {
        assert_eq!(g["error_type"].as_str(), w.get::<_, Option<&str>>(0));
        assert_eq!(g["count"], w.get::<_, i64>(1));
    }
    assert_eq!(body["errors"]["failures"], 20);
    // Feedback, resources, models.
    let fb = &body["user_satisfaction"];
    assert_eq!(fb["feedback"], 3);
    assert!((fb["average_rating"].as_f64().unwrap() - 11.0 / 3.0).abs() < 1e-9);
    assert_eq!(fb["distribution"]["2"], 1);
    let cpu: f64 = client
        .query_one(
            "SELECT avg(cpu_pct) FROM resource_samples WHERE workspace_id = 'w1' AND agent_id = 'opt'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let usage = &body["resource_usage"];
    assert!((usage["cpu"]["avg_pct"].as_f64().unwrap() - cpu).abs() < 1e-3);
    assert_eq!(usage["cpu"]["samples"], 40);
    let models = usage["by_model"].as_array().unwrap();
    assert_eq!(models[0]["model"], "big");
    assert_eq!(models[0]["runs"], 60);
    // Credits of every run on the model (its 20 failures at 0.25 too) per success.
    assert!((models[0]["cost_per_success"].as_f64().unwrap() - 85.0 / 40.0).abs() < 1e-9);
    assert!(
        (usage["credits"].as_f64().unwrap() - (40.0 * 2.0 + 40.0 * 0.5 + 20.0 * 0.25)).abs() < 1e-6
    );
    // Comparisons: the period before (60 runs) and the workspace.
    let cmp = &body["comparisons"];
    assert_eq!(cmp["previous_period"]["runs"]["previous"], 60.0);
    assert_eq!(cmp["previous_period"]["runs"]["current"], 100.0);
    let ws_rate = cmp["workspace"]["success_rate"]["workspace"]
        .as_f64()
        .unwrap();
    assert!((ws_rate - 480.0 / 500.0).abs() < 1e-9);

    // Each rule fires, with its figures.
    let suggestions = body["suggestions"].as_array().unwrap();
    let mut rules: Vec<&str> = suggestions
        .iter()
        .map(|s| s["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules[0], "dominant_error", "the critical one first");
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            "cpu_allocation_unused",
            "dominant_error",
            "error_rate_above_workspace",
            "memory_allocation_unused",
            "model_cost",
            "p95_after_model_change",
        ]
    );
    let rule = |name: &str| suggestions.iter().find(|s| s["rule"] == name).unwrap();
    assert_eq!(rule("model_cost")["evidence"]["expensive_model"], "big");
    assert_eq!(rule("model_cost")["evidence"]["cheap_model"], "small");
    let ratio = rule("model_cost")["evidence"]["ratio"].as_f64().unwrap();
    assert!((ratio - (85.0 / 40.0) / 0.5).abs() < 1e-9, "{ratio}");
    assert_eq!(rule("dominant_error")["evidence"]["count"], 15);
    assert_eq!(
        rule("p95_after_model_change")["evidence"]["previous_model"],
        "old"
    );

    // A calm agent: figures, no suggestion.
    let body: Value = app.get(&path("calm"), "w1").await.json().await.unwrap();
    assert_eq!(body["performance"]["runs"], 400);
    assert_eq!(body["suggestions"], json!([]));
    assert_eq!(app.get(&path("nobody"), "w1").await.status(), 404);
    app.stop().await;
}

/// History answers are cached after auth for ranges that ended: HIT on repeat, MISS after a
/// late event lands in the range's days (then the new figure), still HIT for events on other
/// days, never for a range that ends now, and Redis away is a MISS, never an error.
#[actix_web::test]
async fn history_cache_hits_and_late_events_invalidate() {
    let app = spawn_app().await;
    let now = Utc::now();
    let old =
        |id: &str, hours: i64| run_event(id, "a0", "succeeded", 5.0, now - Duration::hours(hours));
    assert_eq!(
        app.post_events("w1", &[old("o1", 60), old("o2", 50)])
            .await
            .status(),
        200
    );
    assert_eq!(app.post_events("w2", &[old("p1", 60)]).await.status(), 200);
    let path = |ws: &str| {
        format!(
            "/api/v1/metrics/execution?workspace_id={ws}&from={}&to={}",
            urlencode(&ts(now - Duration::hours(72))),
            urlencode(&ts(now - Duration::hours(30)))
        )
    };
    let get = |ws: &'static str| {
        let (app, path) = (&app, path(ws));
        async move {
            let res = app.get(&path, ws).await;
            assert_eq!(res.status(), 200);
            let cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
            let control = res.headers()["cache-control"].to_str().unwrap().to_owned();
            let body: Value = res.json().await.unwrap();
            (cache, control, body["totals"]["runs"].as_i64().unwrap())
        }
    };
    let (cache, control, runs) = get("w1").await;
    assert_eq!((cache.as_str(), runs), ("MISS", 2));
    assert!(control.contains("max-age"), "{control}");
    assert_eq!(get("w1").await, ("HIT".into(), control.clone(), 2));
    // Another workspace with the same parameters has its own answer; its token cannot read
    // this one's.
    assert_eq!(get("w2").await.2, 1);
    assert_eq!(app.get(&path("w1"), "w2").await.status(), 403);
    // An event on another day leaves it cached; a late one inside the range does not.
    let today = run_event("t1", "a0", "succeeded", 5.0, now);
    assert_eq!(app.post_events("w1", &[today]).await.status(), 200);
    assert_eq!(get("w1").await.0, "HIT");
    assert_eq!(app.post_events("w1", &[old("o3", 40)]).await.status(), 200);
    assert_eq!(get("w1").await, ("MISS".into(), control.clone(), 3));
    assert_eq!(get("w1").await, ("HIT".into(), control, 3));
    // An answer that compares with the period before is invalidated by a late event there.
    let summary = format!(
        "/api/v1/executive/summary?workspace_id=w1&from={}&to={}",
        urlencode(&ts(now - Duration::hours(36))),
        urlencode(&ts(now - Duration::hours(30)))
    );
    let previous_runs = |body: Value| body["kpis"]["runs"]["previous"].as_f64().unwrap();
    let res = app.get(&summary, "w1").await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    let before = previous_runs(res.json().await.unwrap());
    assert_eq!(app.get(&summary, "w1").await.headers()["x-cache"], "HIT");
    assert_eq!(app.post_events("w1", &[old("o4", 40)]).await.status(), 200);
    let res = app.get(&summary, "w1").await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    assert_eq!(previous_runs(res.json().await.unwrap()), before + 1.0);
    // A range that ends now is computed each time.
    for _ in 0..2 {
        let res = app
            .get(
                "/api/v1/metrics/execution?workspace_id=w1&timeframe=24h",
                "w1",
            )
            .await;
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert_eq!(res.headers()["cache-control"], "private, no-cache");
    }
    app.stop().await;

    // Redis away: every read a MISS, answered; ingest goes on.
    let app = spawn_app_with(&[("redis.url", json!("redis://127.0.0.1:1"))]).await;
    assert_eq!(app.post_events("w1", &[old("o1", 60)]).await.status(), 200);
    for _ in 0..2 {
        let res = app.get(&path("w1"), "w1").await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "MISS");
    }
    app.stop().await;
}
