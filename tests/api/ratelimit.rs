use serde_json::{json, Value};

use crate::helpers::*;

fn limits(ingest_burst: u64, read_burst: u64) -> Vec<(&'static str, Value)> {
    vec![
        ("ingest.max_events", json!(ingest_burst)),
        ("rate_limit.ingest_events_per_sec", json!(1)),
        ("rate_limit.ingest_burst", json!(ingest_burst)),
        ("rate_limit.read_requests_per_sec", json!(1)),
        ("rate_limit.read_burst", json!(read_burst)),
    ]
}

fn header(res: &reqwest::Response, name: &str) -> u64 {
    res.headers()[name].to_str().unwrap().parse().unwrap()
}

#[actix_web::test]
async fn ingest_and_reads_are_limited_per_workspace_with_headers() {
    let app = spawn_app_with(&limits(100, 3)).await;
    // Budgets refill at 1 unit/s: on a loaded machine a second can pass between requests, so
    // later checks allow one unit per whole second since the budget was first spent.
    let started = std::time::Instant::now();
    let res = app.post_events("ws1", &runs("a", 60)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-ratelimit-limit"), 100);
    assert_eq!(header(&res, "x-ratelimit-remaining"), 40);
    assert!(header(&res, "x-ratelimit-reset") >= 59);
    // A batch costs its events: 60 more do not fit in the 40 left.
    let res = app.post_events("ws1", &runs("b", 60)).await;
    assert_eq!(res.status(), 429);
    assert!(header(&res, "retry-after") >= 1);
    let remaining = header(&res, "x-ratelimit-remaining");
    assert!(
        (40..=40 + started.elapsed().as_secs()).contains(&remaining),
        "{remaining}"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM agent_runs WHERE event_id LIKE 'b%'")
            .await,
        0
    );
    // Another workspace has its own budget.
    assert_eq!(app.post_events("ws2", &runs("c", 100)).await.status(), 200);

    // Reads: a burst of 3, then refused (plus what refilled meanwhile).
    let reads_started = std::time::Instant::now();
    let mut admitted = 0;
    loop {
        let res = app
            .get("/api/v1/metrics/execution/realtime?workspace_id=ws1", "ws1")
            .await;
        if res.status() == 429 {
            break;
        }
        assert_eq!(res.status(), 200);
        admitted += 1;
        if admitted == 1 {
            assert_eq!(header(&res, "x-ratelimit-remaining"), 2);
        }
        assert!(
            admitted <= 3 + reads_started.elapsed().as_secs(),
            "{admitted} reads admitted"
        );
    }
    assert!(admitted >= 3, "{admitted} reads admitted");
    let metrics = app.get_plain("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hub_rate_limited_total{reason=\"ingest\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hub_rate_limited_total{reason=\"read\"} 1"));
    app.stop().await;
}

#[actix_web::test]
async fn two_nodes_share_one_budget_through_redis() {
    let a = spawn_app_with(&limits(100, 100)).await;
    // The second node: same database and Redis key prefix, its own process state.
    let b = spawn_on(a.db.clone(), &limits(100, 100)).await;
    assert_eq!(a.post_events("ws1", &runs("a", 70)).await.status(), 200);
    assert_eq!(b.post_events("ws1", &runs("b", 70)).await.status(), 429);
    assert_eq!(b.post_events("ws1", &runs("c", 30)).await.status(), 200);
    // Positive control: node b admits 70 where the budget is not spent (its refusal above
    // came from a's spending, not from b refusing anything that large).
    assert_eq!(b.post_events("ws2", &runs("d", 70)).await.status(), 200);
    b.stop().await;
    a.stop().await;
}

#[actix_web::test]
async fn without_redis_each_node_still_limits() {
    let mut overrides = limits(100, 100);
    overrides.push(("redis.url", json!("redis://127.0.0.1:1")));
    overrides.extend(redis_away());
    let app = spawn_app_with(&overrides).await;
    assert_eq!(app.post_events("ws1", &runs("a", 100)).await.status(), 200);
    let res = app.post_events("ws1", &runs("b", 10)).await;
    assert_eq!(res.status(), 429, "never unlimited");
    assert_eq!(
        app.post_events("ws2", &runs("c", 10)).await.status(),
        200,
        "never refusing everything"
    );
    let local = app.metric("hub_rate_limit_local_total").await.unwrap();
    assert!(local >= 3.0, "{local}");
    app.stop().await;
}

#[actix_web::test]
async fn leases_claimed_ahead_never_admit_more_than_the_shared_budget() {
    // 40 reads/s with a burst of 100: each node claims 2 reads ahead (5 % of a second).
    let overrides = [
        ("rate_limit.read_requests_per_sec", json!(40)),
        ("rate_limit.read_burst", json!(100)),
    ];
    let a = spawn_app_with(&overrides).await;
    let b = spawn_on(a.db.clone(), &overrides).await;
    let started = std::time::Instant::now();
    let (mut admitted, mut refused) = (0u64, 0u64);
    for i in 0..200 {
        let node = if i % 2 == 0 { &a } else { &b };
        let res = node
            .get("/api/v1/metrics/execution/realtime?workspace_id=wsl", "wsl")
            .await;
        match res.status().as_u16() {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("{other}"),
        }
    }
    let refill = (40.0 * started.elapsed().as_secs_f64()).ceil() as u64;
    assert!(
        admitted <= 100 + refill,
        "admitted {admitted}, refill {refill}"
    );
    // At most one unused lease of 2 per node is lost.
    assert!(admitted >= 96, "admitted {admitted}");
    if refill < 100 {
        assert!(refused > 0);
    }
    b.stop().await;
    a.stop().await;
}

/// A tenant past its budget that keeps sending is refused from Redis's last answer, without a
/// round trip per request; and it refuses only what Redis would: the unit that refills a
/// second later admits a one-event post at once.
#[actix_web::test]
async fn refusals_past_the_budget_make_no_redis_call() {
    let app = spawn_app_with(&limits(50, 50)).await;
    assert_eq!(app.post_events("ws1", &runs("a", 50)).await.status(), 200);
    let calls = app.metric("hub_rate_limit_redis_calls_total").await;
    let calls = calls.expect("the Redis call counter");
    assert!(
        calls >= 1.0,
        "positive control: the admitted batch asked Redis"
    );
    // Ten events need ten seconds of refill: far more than these posts take on any machine.
    for i in 0..10 {
        let res = app.post_events("ws1", &runs(&format!("b{i}-"), 10)).await;
        assert_eq!(res.status(), 429);
        let retry = header(&res, "retry-after");
        assert!((1..=10).contains(&retry), "retry-after {retry}");
    }
    let after = app.metric("hub_rate_limit_redis_calls_total").await;
    assert_eq!(after, Some(calls), "refusals asked Redis");
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(app.post_events("ws1", &runs("c", 1)).await.status(), 200);
    let last = app.metric("hub_rate_limit_redis_calls_total").await;
    assert!(last > Some(calls), "the admitted event asked Redis");
    app.stop().await;
}

/// A refusal is held for `rate_limit.refusal_delay` before its answer, so a client that
/// ignores `Retry-After` is slowed to that pace; but at most `rate_limit.max_held_refusals`
/// of a workspace are held at once, and past them refusals are answered at once.
#[actix_web::test]
async fn refusals_are_held_but_only_so_many_at_once() {
    let mut settings = limits(50, 50);
    settings.push(("rate_limit.refusal_delay", json!("2s")));
    settings.push(("rate_limit.max_held_refusals", json!(2)));
    let app = spawn_app_with(&settings).await;
    assert_eq!(app.post_events("ws1", &runs("a", 50)).await.status(), 200);
    let started = std::time::Instant::now();
    let batches: Vec<Vec<Value>> = (0..6).map(|i| runs(&format!("b{i}-"), 10)).collect();
    let answers =
        futures_util::future::join_all(batches.iter().map(|b| app.post_events("ws1", b))).await;
    let took = started.elapsed();
    assert!(answers.iter().all(|r| r.status() == 429));
    assert_eq!(
        app.metric("hub_rate_limit_held_total").await,
        Some(2.0),
        "held refusals beyond the cap"
    );
    assert!(took >= std::time::Duration::from_secs(2), "{took:?}");
    app.stop().await;
}
