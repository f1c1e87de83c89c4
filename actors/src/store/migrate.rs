//! Forward-only migrations from `migrations/`, applied in order, each in its own transaction,
//! recorded in `hub_schema_migrations`, under an advisory lock so nodes starting together
//! do not race.

use deadpool_postgres::Pool;

use super::StoreError;

/// `(version, name, sql)`, in order. Add new files at the end; never edit an applied one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_raw_events",
        include_str!("../../../migrations/0001_raw_events.sql"),
    ),
    (
        2,
        "0002_alerts",
        include_str!("../../../migrations/0002_alerts.sql"),
    ),
    (
        3,
        "0003_anomalies",
        include_str!("../../../migrations/0003_anomalies.sql"),
    ),
    (
        4,
        "0004_partition_lock_timeout",
        include_str!("../../../migrations/0004_partition_lock_timeout.sql"),
    ),
    (
        5,
        "0005_rollups",
        // The tables, then the deltas of the rows stored before them, computed by the same
        // fragments as the writer's (the rollup actor folds them like any others).
        concat!(
            include_str!("../../../migrations/0005_rollups.sql"),
            "WITH fresh AS (SELECT false AS all_new),\n",
            "runs AS (SELECT workspace_id, agent_id, user_id, status, completed_at, runtime_ms,\n",
            "                     credits, tokens_in, tokens_out, model FROM agent_runs)\n",
            include_str!("sql/delta_runs.sql"),
            "SELECT 1;\n",
            "WITH fresh AS (SELECT false AS all_new),\n",
            "errors AS (SELECT workspace_id, agent_id, occurred_at, error_type, category\n",
            "                FROM agent_errors)\n",
            include_str!("sql/delta_errors.sql"),
            "SELECT 1;\n",
            "WITH fresh AS (SELECT false AS all_new),\n",
            "heartbeats AS (SELECT workspace_id, agent_id, ts, cpu_pct, mem_mb, mem_limit_mb,\n",
            "                           cpu_limit_cores, concurrent_runs, queue_depth\n",
            "                    FROM resource_samples)\n",
            include_str!("sql/delta_heartbeats.sql"),
            "SELECT 1;\n",
            "WITH fresh AS (SELECT false AS all_new),\n",
            "feedback AS (SELECT workspace_id, agent_id, ts, rating FROM agent_user_feedback)\n",
            include_str!("sql/delta_feedback.sql"),
            "SELECT 1;\n",
        ),
    ),
    (
        6,
        "0006_executions",
        include_str!("../../../migrations/0006_executions.sql"),
    ),
    (
        7,
        "0007_agents",
        include_str!("../../../migrations/0007_agents.sql"),
    ),
    (
        8,
        "0008_rollup_time_index",
        include_str!("../../../migrations/0008_rollup_time_index.sql"),
    ),
];

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x5348_4144_4f57; // "SHADOW"

/// Applies pending migrations; returns how many were applied.
pub async fn migrate(pool: &Pool) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_pending(&mut client).await;
    // Unlock even when a migration failed; a dropped connection releases it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply_pending(client: &mut deadpool_postgres::Object) -> Result<usize, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS hub_schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM hub_schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| !applied.contains(v)) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO hub_schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "Applied migration.");
        count += 1;
    }
    Ok(count)
}
