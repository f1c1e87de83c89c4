use chrono::{Duration, Utc};
use shadower_actors::maintenance::housekeeping;
use shadower_actors::store::{create_pool, Partitions};

use crate::helpers::*;

#[actix_web::test]
async fn partitions_are_made_ahead_and_retention_drops_old_days() {
    let app = spawn_app().await;
    let ahead = format!(
        "agent_runs_p{}",
        (Utc::now() + Duration::days(2)).format("%Y%m%d")
    );
    let exists = format!("SELECT count(*) FROM pg_class WHERE relname = '{ahead}'");
    let mut made = false;
    for _ in 0..100 {
        if app.count(&exists).await == 1 {
            made = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(made, "{ahead} was not created at start");

    // An old day, as if the hub had been running for 40 days.
    let db = app.db().await;
    let old_day = (Utc::now() - Duration::days(40)).date_naive();
    db.execute("SELECT hub_ensure_day_partitions($1)", &[&old_day])
        .await
        .unwrap();
    db.batch_execute(
        "INSERT INTO ingested_events (workspace_id, event_id, kind, event_time, received_at)
         VALUES ('ws1', 'old', 1, now() - interval '40 days', now() - interval '40 days'),
                ('ws1', 'new', 1, now(), now())",
    )
    .await
    .unwrap();
    let old = format!("agent_runs_p{}", old_day.format("%Y%m%d"));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = '{old}'"
        ))
        .await,
        1
    );

    let settings = settings(&app.db.url(), &[]);
    let pool = create_pool(&settings.database, 1).unwrap();
    housekeeping(
        &pool,
        &Partitions::default(),
        settings.retention.raw.to_chrono(),
    )
    .await
    .unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = '{old}'"
        ))
        .await,
        0
    );
    assert_eq!(app.count(&exists).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM ingested_events").await, 1);
    app.stop().await;
}
