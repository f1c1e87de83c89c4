use chrono::{Duration, NaiveDate, Utc};
use shadower_actors::maintenance::{housekeeping, Retention};
use shadower_actors::store::{create_pool, Partitions};

use crate::helpers::*;

/// Makes the partitions of a day 40 days back, as if the hub had been running that long, and
/// records the ids of `events` (each `(id, event age, received age)` in days); returns the day.
async fn old_day(app: &TestApp, events: &[(&str, i32, i32)]) -> NaiveDate {
    let db = app.db().await;
    let day = (Utc::now() - Duration::days(40)).date_naive();
    db.execute("SELECT hub_ensure_day_partitions($1)", &[&day])
        .await
        .unwrap();
    for (id, event_age, received_age) in events {
        db.execute(
            "INSERT INTO ingested_events (workspace_id, event_id, kind, event_time, received_at)
             VALUES ('ws1', $1, 1, now() - make_interval(days => $2),
                     now() - make_interval(days => $3))",
            &[id, event_age, received_age],
        )
        .await
        .unwrap();
    }
    day
}

#[actix_web::test]
async fn partitions_are_made_ahead_and_retention_drops_old_days() {
    let app = spawn_app().await;
    let ahead = (Utc::now() + Duration::days(2)).date_naive();
    let exists = runs_partition(ahead);
    let mut made = false;
    for _ in 0..100 {
        if app.count(&exists).await == 1 {
            made = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(made, "the partition of {ahead} was not created at start");

    // 'edge' was received before the cutoff, but its event (sent early, with clock skew)
    // lies in a day that is kept: its id must stay known while the row may exist.
    let old =
        runs_partition(old_day(&app, &[("old", 40, 40), ("new", 0, 0), ("edge", 29, 31)]).await);
    assert_eq!(app.count(&old).await, 1);

    // A rollup month past retention.rollups (400 days), and this month's.
    app.db()
        .await
        .batch_execute("SELECT hub_ensure_day_partitions('2020-01-15')")
        .await
        .unwrap();
    let rollup_month =
        |m: &str| format!("SELECT count(*) FROM pg_class WHERE relname = 'rollup_runs_daily_m{m}'");
    let this_month = Utc::now().format("%Y%m").to_string();
    assert_eq!(app.count(&rollup_month("202001")).await, 1);
    assert_eq!(app.count(&rollup_month(&this_month)).await, 1);
    // Agents: one last heard from in that month (forgotten with it), one since (kept, its
    // first hour moved up to the oldest month kept).
    app.db()
        .await
        .batch_execute(
            "INSERT INTO rollup_agents VALUES
               ('ws1', 'gone', '2020-01-15 10:00Z', '2020-01-15 11:00Z'),
               ('ws1', 'kept', '2020-01-15 10:00Z', now())",
        )
        .await
        .unwrap();

    let settings = settings(&app.db.url(), &[]);
    let pool = create_pool(&settings.database, 1).unwrap();
    housekeeping(&pool, &Partitions::default(), retention_of(&settings))
        .await
        .unwrap();
    assert_eq!(app.count(&rollup_month("202001")).await, 0);
    assert_eq!(app.count(&rollup_month(&this_month)).await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM rollup_agents WHERE agent_id = 'gone'")
            .await,
        0
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM rollup_agents WHERE agent_id = 'kept'
               AND first_hour > now() - interval '430 days'"
        )
        .await,
        1
    );
    assert_eq!(app.count(&old).await, 0);
    assert_eq!(app.count(&exists).await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM ingested_events WHERE event_id IN ('new', 'edge')")
            .await,
        2
    );
    assert_eq!(app.count("SELECT count(*) FROM ingested_events").await, 2);
    app.stop().await;
}

/// A partition drop whose locks are busy gives up at once instead of queueing inserts
/// behind it; it and its events' ids wait for the next pass.
#[actix_web::test]
async fn a_busy_partition_is_dropped_later_and_never_stalls_ingest() {
    let app = spawn_app().await;
    let ahead = runs_partition((Utc::now() + Duration::days(2)).date_naive());
    eventually("the start's partitions", || async {
        app.count(&ahead).await == 1
    })
    .await;
    let old = runs_partition(old_day(&app, &[("old", 40, 40)]).await);
    // A long reader of the runs table holds a lock a drop must wait for.
    let mut reader = app.db().await;
    let tx = reader.transaction().await.unwrap();
    tx.batch_execute("SELECT count(*) FROM agent_runs")
        .await
        .unwrap();

    let settings = settings(&app.db.url(), &[]);
    let pool = create_pool(&settings.database, 1).unwrap();
    let retention = retention_of(&settings);
    let partitions = Partitions::default();
    let pass = housekeeping(&pool, &partitions, retention);
    tokio::time::timeout(std::time::Duration::from_secs(20), pass)
        .await
        .expect("housekeeping waited on a busy lock")
        .unwrap();
    assert_eq!(app.count(&old).await, 1, "the busy partition is kept");
    assert_eq!(
        app.count("SELECT count(*) FROM ingested_events WHERE event_id = 'old'")
            .await,
        1,
        "its ids stay known"
    );
    let run = run_event("r1", "bot", "succeeded", 1.0, Utc::now());
    assert_eq!(app.post_events("ws1", &[run]).await.status(), 200);

    tx.commit().await.unwrap();
    housekeeping(&pool, &Partitions::default(), retention)
        .await
        .unwrap();
    assert_eq!(app.count(&old).await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM ingested_events WHERE event_id = 'old'")
            .await,
        0
    );
    app.stop().await;
}

fn retention_of(settings: &shadower_hub::settings::Settings) -> Retention {
    Retention {
        raw: settings.retention.raw.to_chrono(),
        rollups: settings.retention.rollups.to_chrono(),
    }
}
