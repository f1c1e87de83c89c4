//! Rollups: after any mix of late, resent and out-of-order events, restarts and a SIGKILL in
//! the middle of a fold, every rollup row equals a recomputation from the raw rows.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use shadower_actors::domain::users::UserSet;

use crate::faults::{free_port, start_hub_with, wait_ready};
use crate::helpers::*;

/// `n` events of every kind over the last six days (late ones included: the hub accepts up to
/// `ingest.max_age`, 7 days), several agents, models, error types and users; agent `a0` has
/// more than 128 distinct users in its busy hours, so its user sets become sketches.
pub(crate) fn random_events(rng: &mut Rng, prefix: &str, n: usize) -> Vec<Value> {
    let now = Utc::now();
    let agents = ["a0", "a0", "a1", "a2", "a3"];
    let models = ["gpt-4o", "claude", "mini", ""];
    let statuses = [
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
        "timeout",
        "cancelled",
    ];
    let types = ["Timeout", "RateLimit", ""];
    let categories = ["network", "model", ""];
    // A dense hour: agent a0, 200 distinct users two hours ago, so its user sets (hourly and
    // daily, agent and workspace) pass the exact cap and become sketches.
    let dense = now - Duration::hours(2);
    let dense_runs = (0..200).map(|i| {
        json!({"type": "run", "event_id": format!("{prefix}dense{i}"), "agent_id": "a0",
               "status": "succeeded", "completed_at": ts(dense), "runtime_ms": 10.0 + i as f64,
               "user_id": format!("dense-{prefix}{i}")})
    });
    let dense_runs: Vec<Value> = dense_runs.collect();
    dense_runs.into_iter().chain((0..n).map(|i| {
        {
            let id = format!("{prefix}{i}");
            let agent = rng.pick(&agents);
            // Most events in a few busy hours, the rest spread over six days.
            let at = if rng.below(3) == 0 {
                now - Duration::seconds(rng.below(6 * 86_400) as i64)
            } else {
                now - Duration::hours(rng.below(3) as i64 * 20) - Duration::seconds(rng.below(3_000) as i64)
            };
            match rng.below(10) {
                0..=6 => {
                    let status = rng.pick(&statuses);
                    let mut run = json!({
                        "type": "run", "event_id": id, "agent_id": agent, "status": status,
                        "completed_at": ts(at),
                        "runtime_ms": (rng.below(1_000_000) as f64) / 7.0,
                        "credits": (rng.below(1_000) as f64) / 3.0,
                        "tokens_in": rng.below(5_000), "tokens_out": rng.below(2_000),
                    });
                    let model = rng.pick(&models);
                    if !model.is_empty() {
                        run["model"] = json!(model);
                    }
                    let users = if agent == "a0" { 1_000 } else { 20 };
                    if rng.below(5) != 0 {
                        run["user_id"] = json!(format!("u{}", rng.below(users)));
                    }
                    if status == "failed" && rng.below(4) != 0 {
                        let mut error = json!({"severity": "high", "message": "boom"});
                        let (t, c) = (rng.pick(&types), rng.pick(&categories));
                        if !t.is_empty() {
                            error["type"] = json!(t);
                        }
                        if !c.is_empty() {
                            error["category"] = json!(c);
                        }
                        run["error"] = error;
                    }
                    if rng.below(20) == 0 {
                        run["runtime_ms"] = json!(0.0);
                    }
                    run
                }
                7..=8 => {
                    let mut hb = json!({"type": "heartbeat", "event_id": id, "agent_id": agent, "ts": ts(at)});
                    if rng.below(4) != 0 {
                        hb["cpu_pct"] = json!((rng.below(4_000) as f64) / 10.0);
                    }
                    if rng.below(4) != 0 {
                        hb["mem_mb"] = json!((rng.below(80_000) as f64) / 10.0);
                    }
                    if rng.below(3) != 0 {
                        hb["cpu_limit_cores"] = json!([0.5, 1.0, 2.0, 4.0][rng.below(4) as usize]);
                    }
                    if rng.below(3) != 0 {
                        hb["mem_limit_mb"] = json!([1024.0, 4096.0][rng.below(2) as usize]);
                    }
                    if rng.below(2) == 0 {
                        hb["concurrent_runs"] = json!(rng.below(10));
                        hb["queue_depth"] = json!(rng.below(50));
                    }
                    hb
                }
                _ => json!({
                    "type": "feedback", "event_id": id, "agent_id": agent,
                    "user_id": format!("u{}", rng.below(30)), "ts": ts(at),
                    "rating": 1 + rng.below(5), "text": "ok",
                }),
            }
        }
    }))
    .collect()
}

/// Posts `events` in shuffled batches of random sizes; some events are sent twice, once with
/// other field values (first write wins, whichever comes first). Every post must be
/// acknowledged.
pub(crate) async fn post_shuffled(app: &TestApp, ws: &str, rng: &mut Rng, mut events: Vec<Value>) {
    let mut resent: Vec<Value> = events
        .iter()
        .filter(|_| rng.below(10) == 0)
        .cloned()
        .collect();
    for e in resent.iter_mut().step_by(2) {
        if e["type"] == "run" {
            e["runtime_ms"] = json!(123_456.0);
            e["credits"] = json!(99.0);
        }
    }
    events.extend(resent);
    // Shuffled with the resends among them: most batches mix new events with stored ones, so
    // both ways the writer makes deltas are taken (its own when all are new, SQL's else).
    for i in (1..events.len()).rev() {
        events.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut rest = &events[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(300) as usize).min(rest.len());
        let (batch, tail) = rest.split_at(n);
        let res = app.post_events(ws, batch).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        rest = tail;
    }
}

async fn pending_deltas(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT (SELECT count(*) FROM rollup_delta_runs) + (SELECT count(*) FROM rollup_delta_models)
                  + (SELECT count(*) FROM rollup_delta_errors) + (SELECT count(*) FROM rollup_delta_resources)
                  + (SELECT count(*) FROM rollup_delta_feedback)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_folded(db_url: &str) {
    let client = pg(db_url).await;
    let client = &client;
    eventually("every rollup delta folded", || async move {
        pending_deltas(client).await == 0
    })
    .await;
}

/// For each rollup table, its rows as a recomputation from the raw rows gives them: each raw
/// row counts for its agent and (as agent '') for its workspace, in its UTC hour or day.
/// Columns in the table's order, `users` left out (checked on its own).
fn recomputations(grain: &str) -> Vec<(String, String, String)> {
    let both = |source: &str, time: &str| {
        format!(
            "(SELECT *, workspace_id AS w, agent_id AS a, date_trunc('{grain}', {time}, 'UTC') AS b FROM {source}
              UNION ALL
              SELECT *, workspace_id AS w, '' AS a, date_trunc('{grain}', {time}, 'UTC') AS b FROM {source})"
        )
    };
    let runs = both("agent_runs", "completed_at");
    let sketch = |keys: &str| {
        format!(
            "(SELECT jsonb_object_agg(coalesce(k::text, 'z'), n) FROM (SELECT hub_sketch_key(x.runtime_ms) AS k, count(*) AS n
               FROM {runs} AS x WHERE {keys} GROUP BY 1) AS bins)"
        )
    };
    let table = |kind: &str| {
        format!(
            "rollup_{kind}_{}",
            if grain == "hour" { "hourly" } else { "daily" }
        )
    };
    vec![
        (
            table("runs"),
            "workspace_id, agent_id, bucket, runs, succeeded, failed, timeout, cancelled, runtime_us,
             runtime_min, runtime_max, runtime_sketch, credits_micro, tokens_in, tokens_out"
                .into(),
            format!(
                "SELECT w, a, b, count(*), count(*) FILTER (WHERE status = 'succeeded'),
                        count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'timeout'),
                        count(*) FILTER (WHERE status = 'cancelled'), sum(round(runtime_ms * 1000)::int8),
                        min(runtime_ms), max(runtime_ms), {}, sum(round(credits * 1000000)::int8),
                        sum(tokens_in::numeric), sum(tokens_out::numeric)
                 FROM {runs} AS r GROUP BY w, a, b",
                sketch("x.w = r.w AND x.a = r.a AND x.b = r.b")
            ),
        ),
        (
            table("models"),
            "workspace_id, agent_id, model, bucket, runs, succeeded, runtime_us, credits_micro,
             tokens_in, tokens_out"
                .into(),
            format!(
                "SELECT w, a, m, b, count(*),
                        count(*) FILTER (WHERE status = 'succeeded'), sum(round(runtime_ms * 1000)::int8),
                        sum(round(credits * 1000000)::int8), sum(tokens_in::numeric), sum(tokens_out::numeric)
                 FROM (SELECT *, coalesce(model, '') AS m FROM {runs} AS q) AS r GROUP BY w, a, m, b"
            ),
        ),
        (
            table("errors"),
            "workspace_id, agent_id, error_type, category, bucket, errors".into(),
            format!(
                "SELECT w, a, coalesce(error_type, '') AS t, coalesce(category, '') AS c, b, count(*)
                 FROM {} AS e GROUP BY w, a, t, c, b",
                both("agent_errors", "occurred_at")
            ),
        ),
        (
            table("resources"),
            "workspace_id, agent_id, bucket, samples, cpu_n, cpu_milli, cpu_max, mem_n, mem_milli, mem_max,
             cpu_limit_n, cpu_limit_milli, mem_limit_n, mem_limit_milli, cpu_use_n, cpu_use_micro,
             mem_use_n, mem_use_micro, concurrent_max, queue_max"
                .into(),
            format!(
                "SELECT w, a, b, count(*), count(cpu_pct), coalesce(sum(round(cpu_pct * 1000)::int8), 0), max(cpu_pct),
                        count(mem_mb), coalesce(sum(round(mem_mb * 1000)::int8), 0), max(mem_mb),
                        count(cpu_limit_cores), coalesce(sum(round(cpu_limit_cores * 1000)::int8), 0),
                        count(mem_limit_mb), coalesce(sum(round(mem_limit_mb * 1000)::int8), 0),
                        count(*) FILTER (WHERE cpu_pct IS NOT NULL AND cpu_limit_cores > 0),
                        coalesce(sum(round(cpu_pct / (100 * cpu_limit_cores) * 1000000)::int8) FILTER (WHERE cpu_limit_cores > 0), 0),
                        count(*) FILTER (WHERE mem_mb IS NOT NULL AND mem_limit_mb > 0),
                        coalesce(sum(round(mem_mb / mem_limit_mb * 1000000)::int8) FILTER (WHERE mem_limit_mb > 0), 0),
                        max(concurrent_runs), max(queue_depth)
                 FROM {} AS s GROUP BY w, a, b",
                both("resource_samples", "ts")
            ),
        ),
        (
            table("feedback"),
            "workspace_id, agent_id, bucket, feedback, rating_sum, r1, r2, r3, r4, r5".into(),
            format!(
                "SELECT w, a, b, count(*), sum(rating), count(*) FILTER (WHERE rating = 1),
                        count(*) FILTER (WHERE rating = 2), count(*) FILTER (WHERE rating = 3),
                        count(*) FILTER (WHERE rating = 4), count(*) FILTER (WHERE rating = 5)
                 FROM {} AS f GROUP BY w, a, b",
                both("agent_user_feedback", "ts")
            ),
        ),
    ]
}

/// Asserts every rollup row (hourly and daily, every kind, users included) equals its
/// recomputation from the raw rows, and returns how many rows were compared.
async fn assert_rollups_exact(db_url: &str) -> i64 {
    let client = pg(db_url).await;
    let mut compared = 0;
    for grain in ["hour", "day"] {
        for (table, columns, expected) in recomputations(grain) {
            let diff = format!(
                "WITH expected AS ({expected}), actual AS (SELECT {columns} FROM {table})
                 (SELECT 'missing or wrong: ' || row_to_json(x)::text FROM (SELECT * FROM expected EXCEPT ALL SELECT * FROM actual) AS x LIMIT 5)
                 UNION ALL
                 (SELECT 'not in the raw rows: ' || row_to_json(y)::text FROM (SELECT * FROM actual EXCEPT ALL SELECT * FROM expected) AS y LIMIT 5)"
            );
            let rows = client.query(&diff, &[]).await.unwrap();
            let diffs: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert!(diffs.is_empty(), "{table}:\n{}", diffs.join("\n"));
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get(0);
            compared += n;
        }
        // Distinct users: the set's form is a function of the users alone.
        let table = if grain == "hour" {
            "rollup_runs_hourly"
        } else {
            "rollup_runs_daily"
        };
        let expected: HashMap<(String, String, DateTime<Utc>), Vec<u8>> = client
            .query(
                &format!(
                    "SELECT w, a, b, array_agg(DISTINCT hub_user_hash(user_id)) FROM
                       (SELECT workspace_id AS w, agent_id AS a, date_trunc('{grain}', completed_at, 'UTC') AS b, user_id FROM agent_runs
                        UNION ALL
                        SELECT workspace_id, '', date_trunc('{grain}', completed_at, 'UTC'), user_id FROM agent_runs) AS r
                     WHERE user_id IS NOT NULL GROUP BY w, a, b"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let hashes: Vec<i64> = r.get(3);
                (
                    (r.get(0), r.get(1), r.get(2)),
                    UserSet::from_hashes(hashes.into_iter().map(|h| h as u64)).encode(),
                )
            })
            .collect();
        let stored = client
            .query(
                &format!("SELECT workspace_id, agent_id, bucket, users FROM {table}"),
                &[],
            )
            .await
            .unwrap();
        let mut sketches = 0;
        for r in &stored {
            let key: (String, String, DateTime<Utc>) = (r.get(0), r.get(1), r.get(2));
            let users: Option<Vec<u8>> = r.get(3);
            assert_eq!(
                users.as_ref(),
                expected.get(&key),
                "{table} users of {key:?}"
            );
            if users.is_some_and(|u| !UserSet::decode(&u).unwrap().is_exact()) {
                sketches += 1;
            }
        }
        assert!(
            sketches > 0,
            "{table}: no user set passed the exact cap; the test misses HLL"
        );
    }
    // The agents heard from, with their first and last hour.
    let diff = "WITH expected AS (
          SELECT workspace_id, agent_id, min(h) AS first_hour, max(h) AS last_hour FROM (
            SELECT workspace_id, agent_id, date_trunc('hour', completed_at, 'UTC') AS h FROM agent_runs
            UNION ALL SELECT workspace_id, agent_id, date_trunc('hour', ts, 'UTC') FROM resource_samples
            UNION ALL SELECT workspace_id, agent_id, date_trunc('hour', ts, 'UTC') FROM agent_user_feedback
          ) AS seen GROUP BY 1, 2)
        SELECT count(*) FROM ((SELECT * FROM expected EXCEPT ALL SELECT * FROM rollup_agents)
                              UNION ALL (SELECT * FROM rollup_agents EXCEPT ALL SELECT * FROM expected)) AS d";
    let wrong: i64 = client.query_one(diff, &[]).await.unwrap().get(0);
    assert_eq!(wrong, 0, "rollup_agents differs from the raw rows");
    compared
}

#[actix_web::test]
async fn rollups_equal_the_raw_rows_after_late_resent_and_shuffled_events() {
    let app = spawn_app().await;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for ws in ["w1", "w2"] {
        let events = random_events(&mut rng, &format!("{ws}-"), 4_000);
        post_shuffled(&app, ws, &mut rng, events).await;
    }
    wait_folded(&app.db.url()).await;
    let compared = assert_rollups_exact(&app.db.url()).await;
    assert!(compared > 1_000, "only {compared} rollup rows");
    // A positive control: one changed raw row and the comparison fails.
    let db = app.db().await;
    db.batch_execute(
        "UPDATE agent_runs SET credits = credits + 1
         WHERE event_id = (SELECT min(event_id) FROM agent_runs WHERE workspace_id = 'w1')",
    )
    .await
    .unwrap();
    let changed = actix_web::rt::spawn({
        let url = app.db.url();
        async move { assert_rollups_exact(&url).await }
    })
    .await;
    assert!(changed.is_err(), "the comparison missed a changed raw row");
    db.batch_execute(
        "UPDATE agent_runs SET credits = credits - 1
         WHERE event_id = (SELECT min(event_id) FROM agent_runs WHERE workspace_id = 'w1')",
    )
    .await
    .unwrap();
    assert_rollups_exact(&app.db.url()).await;

    // An upgrade: a database whose raw rows predate the rollups gets them from its migration.
    let db_handle = app.stop().await;
    pg(&db_handle.url())
        .await
        .batch_execute(
            "DROP TABLE rollup_runs_hourly, rollup_runs_daily, rollup_models_hourly, rollup_models_daily,
                        rollup_errors_hourly, rollup_errors_daily, rollup_resources_hourly,
                        rollup_resources_daily, rollup_feedback_hourly, rollup_feedback_daily,
                        rollup_delta_runs, rollup_delta_models, rollup_delta_errors,
                        rollup_delta_resources, rollup_delta_feedback;
             DROP FUNCTION hub_sketch_key, hub_sketch_add, hub_user_hash;
             DELETE FROM hub_schema_migrations WHERE version = 5;",
        )
        .await
        .unwrap();
    let app = spawn_on(db_handle, &[]).await;
    wait_folded(&app.db.url()).await;
    assert_eq!(assert_rollups_exact(&app.db.url()).await, compared);
    app.stop().await;
}

/// A fold is caught mid-transaction (its upsert waits on a row lock the test holds) and the
/// hub is killed with SIGKILL: the fold's deltas are still there after it, and the hub started
/// again folds them exactly once.
#[actix_web::test]
async fn a_fold_killed_halfway_is_redone_exactly_once() {
    let db = TestDb::create().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    let env = [("SHADOWER__ROLLUPS__FOLD_EVERY", "200ms")];
    let mut hub = start_hub_with(&db.url(), port, &env);
    wait_ready(&client, &base).await;
    let app = TestApp::external(&base, db);
    let mut rng = Rng(0x5EED_1234_ABCD_0002);
    let first = random_events(&mut rng, "a-", 1_500);
    post_shuffled(&app, "w1", &mut rng, first).await;
    wait_folded(&app.db.url()).await;

    // Hold the workspace rows of the runs rollups, which every fold of runs updates.
    let mut holder = app.db().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("SELECT 1 FROM rollup_runs_hourly WHERE agent_id = '' FOR UPDATE")
        .await
        .unwrap();
    let second = random_events(&mut rng, "b-", 1_500);
    post_shuffled(&app, "w1", &mut rng, second).await;
    let observer = app.db().await;
    let observer = &observer;
    eventually("a fold waiting on the held rows", || async move {
        observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%rollup_delta_runs%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    hub.kill().unwrap();
    hub.wait().unwrap();
    let pending_before = pending_deltas(observer).await;
    tx.rollback().await.unwrap();
    // The killed fold's backend finds its client gone and rolls back.
    eventually("the killed fold's backend gone", || async move {
        observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%rollup_delta_runs%'
                 AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    let pending_after = pending_deltas(observer).await;
    assert!(pending_before > 0, "the second batch left no delta to fold");
    assert_eq!(
        pending_after, pending_before,
        "the killed fold was not rolled back"
    );

    let mut hub = start_hub_with(&app.db.url(), port, &env);
    wait_ready(&client, &base).await;
    wait_folded(&app.db.url()).await;
    assert_rollups_exact(&app.db.url()).await;
    hub.kill().unwrap();
    hub.wait().unwrap();
}

/// The exact answer for a range, from the raw rows: counts, quantized sums, percentiles and
/// the users' hashes.
pub(crate) async fn raw_totals(
    client: &tokio_postgres::Client,
    agent: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (Vec<i64>, Vec<String>, Option<Vec<f64>>, Vec<i64>) {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'timeout'),
                    count(*) FILTER (WHERE status = 'cancelled'),
                    coalesce(sum(round(runtime_ms * float8 '1000')::int8), 0)::text,
                    coalesce(sum(round(credits * float8 '1e6')::int8), 0)::text,
                    coalesce(sum(tokens_in), 0)::text, coalesce(sum(tokens_out), 0)::text,
                    percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY runtime_ms),
                    coalesce(array_agg(DISTINCT hub_user_hash(user_id)) FILTER (WHERE user_id IS NOT NULL), '{}')
             FROM agent_runs WHERE workspace_id = 'w1' AND ($1 = '' OR agent_id = $1)
               AND completed_at >= $2 AND completed_at < $3",
            &[&agent, &from, &to],
        )
        .await
        .unwrap();
    (
        (0..5).map(|i| row.get(i)).collect(),
        (5..9).map(|i| row.get(i)).collect(),
        row.get(9),
        row.get(10),
    )
}

async fn assert_history_exact(app: &TestApp, pool: &deadpool_postgres::Pool, label: &str) {
    let client = app.db().await;
    let now = Utc::now();
    let ranges = [
        (now - Duration::hours(24), now + Duration::minutes(6)),
        (
            now - Duration::days(6) - Duration::minutes(17),
            now + Duration::minutes(6),
        ),
        (
            now - Duration::hours(30) + Duration::minutes(7),
            now - Duration::hours(2) - Duration::minutes(13),
        ),
        (
            now - Duration::hours(2) - Duration::minutes(40),
            now - Duration::hours(2) + Duration::minutes(5),
        ),
        (now - Duration::hours(20), now - Duration::hours(20)),
    ];
    for agent in ["a0", "a1", ""] {
        for (from, to) in ranges {
            let got = shadower_actors::store::history::run_totals(
                &mut pool.get().await.unwrap(),
                "w1",
                agent,
                from,
                to,
            )
            .await
            .unwrap();
            let (counts, sums, percentiles, hashes) = raw_totals(&client, agent, from, to).await;
            let what = format!("{label}: agent {agent:?} {from}..{to}");
            assert_eq!(
                vec![
                    got.runs,
                    got.succeeded,
                    got.failed,
                    got.timeout,
                    got.cancelled
                ],
                counts,
                "{what}"
            );
            assert_eq!(
                vec![
                    got.runtime_us.to_string(),
                    got.credits_micro.to_string(),
                    got.tokens_in.to_string(),
                    got.tokens_out.to_string()
                ],
                sums,
                "{what}"
            );
            assert_eq!(got.runtime.count() as i64, counts[0], "{what}");
            let expected_users = UserSet::from_hashes(hashes.iter().map(|&h| h as u64));
            assert_eq!(got.users, expected_users, "{what}: users");
            if let Some(p) = percentiles {
                for (q, exact) in [0.5, 0.95, 0.99].into_iter().zip(p) {
                    let est = got.runtime.quantile(q).unwrap();
                    assert!(
                        (est - exact).abs() <= 0.01 * exact.abs() + 1e-9,
                        "{what}: p{q} {est} against percentile_disc {exact}"
                    );
                }
            }
        }
    }
}

/// Reads over a range count every committed run once, whether its delta is still pending or
/// folded, with the partial hours at the range's edges from the raw rows.
#[actix_web::test]
async fn history_reads_are_exact_up_to_now_with_deltas_pending_or_folded() {
    let app = spawn_app_with(&[("rollups.fold_every", json!("1h"))]).await;
    let mut rng = Rng(0x5EED_1234_ABCD_0003);
    let events = random_events(&mut rng, "h-", 3_000);
    post_shuffled(&app, "w1", &mut rng, events).await;
    let settings = settings(&app.db.url(), &[]);
    let pool = shadower_actors::store::create_pool(&settings.database, 2).unwrap();
    assert!(
        pending_deltas(&app.db().await).await > 0,
        "the deltas were folded already"
    );
    assert_history_exact(&app, &pool, "pending").await;
    // Fold half, then all.
    shadower_actors::rollup::fold_pending(&pool, 100, 3)
        .await
        .unwrap();
    assert!(pending_deltas(&app.db().await).await > 0);
    assert_history_exact(&app, &pool, "partly folded").await;
    shadower_actors::rollup::fold_pending(&pool, 20_000, 100)
        .await
        .unwrap();
    assert_eq!(pending_deltas(&app.db().await).await, 0);
    assert_history_exact(&app, &pool, "folded").await;
    // The run posted a second ago counts at once.
    let last_day = || async {
        shadower_actors::store::history::run_totals(
            &mut pool.get().await.unwrap(),
            "w1",
            "",
            Utc::now() - Duration::days(1),
            Utc::now() + Duration::minutes(6),
        )
        .await
        .unwrap()
    };
    let before = last_day().await;
    let run = run_event("just-now", "a1", "succeeded", 12.0, Utc::now());
    assert_eq!(app.post_events("w1", &[run]).await.status(), 200);
    let after = last_day().await;
    assert_eq!(after.runs, before.runs + 1);
    app.stop().await;
}

/// `GET /agents/{id}/stats` answers the figures of the raw rows for its range, and lists
/// every bad parameter.
#[actix_web::test]
async fn agent_stats_are_exact_and_bad_parameters_are_listed() {
    let app = spawn_app().await;
    let mut rng = Rng(0x5EED_1234_ABCD_0004);
    let events = random_events(&mut rng, "s-", 1_500);
    post_shuffled(&app, "w1", &mut rng, events).await;
    let (from, to) = (
        Utc::now() - Duration::days(3) - Duration::minutes(11),
        Utc::now() + Duration::minutes(6),
    );
    let query = |agent: &str, q: &str| format!("/api/v1/agents/{agent}/stats?workspace_id=w1&{q}");
    let range = format!("from={}&to={}", urlencode(&ts(from)), urlencode(&ts(to)));
    let res = app.get(&query("a0", &range), "w1").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let (counts, sums, percentiles, hashes) = raw_totals(&app.db().await, "a0", from, to).await;
    assert_eq!(body["runs"], json!(counts[0]));
    assert_eq!(body["succeeded"], json!(counts[1]));
    assert_eq!(body["failed"], json!(counts[2]));
    assert_eq!(body["timeout"], json!(counts[3]));
    assert_eq!(body["cancelled"], json!(counts[4]));
    assert_eq!(body["tokens_in"].to_string(), sums[2]);
    let credits: f64 = sums[1].parse::<f64>().unwrap() / 1e6;
    assert!((body["credits"].as_f64().unwrap() - credits).abs() < 1e-6);
    let p95 = percentiles.unwrap()[1];
    let got = body["runtime_ms"]["p95"].as_f64().unwrap();
    assert!((got - p95).abs() <= 0.01 * p95, "p95 {got} against {p95}");
    let users = UserSet::from_hashes(hashes.iter().map(|&h| h as u64));
    assert_eq!(body["users"]["distinct"], json!(users.count()));
    assert_eq!(body["users"]["exact"], json!(users.is_exact()));

    // Every bad parameter is named.
    let res = app
        .get(&query("a0", "from=yesterday&to=2026-13-01T00:00:00Z"), "w1")
        .await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_parameters");
    let fields: Vec<&str> = err["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["from", "to"]);
    for q in [
        "timeframe=2w",
        "timeframe=24h&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
        "from=2026-01-02T00:00:00Z",
        &format!("from={}&to={}", urlencode(&ts(to)), urlencode(&ts(from))),
        &format!(
            "from={}&to={}",
            urlencode(&ts(Utc::now() - Duration::days(500))),
            urlencode(&ts(Utc::now()))
        ),
        "timeframe=1h&bogus=1",
    ] {
        let res = app.get(&query("a0", q), "w1").await;
        assert_eq!(res.status(), 400, "{q}");
        let err: Value = res.json().await.unwrap();
        assert!(err["error"]["message"].is_string(), "{q}: {err}");
    }
    assert_eq!(
        app.get(&query("a0", "timeframe=7d"), "w1").await.status(),
        200
    );
    // An agent never heard of is a 404; a known one with nothing in the range, zeros.
    let res = app.get(&query("nobody", "timeframe=7d"), "w1").await;
    assert_eq!(res.status(), 404);
    // Past retention.raw a range must start and end on whole hours.
    let hour =
        |t: DateTime<Utc>| chrono::DurationRound::duration_trunc(t, Duration::hours(1)).unwrap();
    let quiet = format!(
        "from={}&to={}",
        urlencode(&ts(hour(Utc::now() - Duration::days(300)))),
        urlencode(&ts(hour(Utc::now() - Duration::days(299))))
    );
    let res = app.get(&query("a1", &quiet), "w1").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["runs"], 0);
    assert_eq!(
        app.get(&query("a0", "timeframe=7d"), "w2").await.status(),
        403
    );
    app.stop().await;
}

pub(crate) fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
