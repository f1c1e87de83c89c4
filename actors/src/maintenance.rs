//! Storage housekeeping on a timer: day partitions (and the rollups' month partitions)
//! created ahead, raw data past `retention.raw` dropped a whole partition at a time, event ids
//! past it forgotten, and rollup months past `retention.rollups` dropped.

use std::time::Duration;

use actix::prelude::*;
use chrono::{NaiveDate, NaiveTime, Utc};
use deadpool_postgres::Pool;

use crate::store::{self, Partitions, StoreError};

/// How often housekeeping runs (and once at start).
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);
/// Days of partitions kept ready ahead of today.
pub const DAYS_AHEAD: u64 = 2;

pub struct Maintenance {
    pool: Pool,
    partitions: Partitions,
    retention: Retention,
}

/// How long raw rows and rollups are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub raw: chrono::Duration,
    pub rollups: chrono::Duration,
}

impl Maintenance {
    pub fn new(
        pool: Pool,
        partitions: Partitions,
        retention_raw: chrono::Duration,
        retention_rollups: chrono::Duration,
    ) -> Self {
        Self {
            pool,
            partitions,
            retention: Retention {
                raw: retention_raw,
                rollups: retention_rollups,
            },
        }
    }

    fn run(&self, ctx: &mut Context<Self>) {
        let (pool, partitions, retention) =
            (self.pool.clone(), self.partitions.clone(), self.retention);
        ctx.spawn(
            async move {
                if let Err(e) = housekeeping(&pool, &partitions, retention).await {
                    tracing::warn!(error = %e, "Storage housekeeping failed; will retry.");
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Maintenance {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.run(ctx);
        ctx.run_interval(MAINTENANCE_EVERY, |act, ctx| act.run(ctx));
    }
}

/// One pass: create, drop, forget. Safe to run on several nodes at once. Every statement
/// waits at most [`store::MAINTENANCE_LOCK_TIMEOUT`] for a lock, so no DDL of this pass
/// queues inserts behind it; what found its locks busy is done on a later pass.
pub async fn housekeeping(
    pool: &Pool,
    partitions: &Partitions,
    retention: Retention,
) -> Result<(), StoreError> {
    // Taken out of the pool for good: its lock_timeout must never reach another user, even
    // when this pass is cancelled half-way (a new connection an hour is nothing).
    let client = deadpool_postgres::Object::take(pool.get().await?);
    client
        .batch_execute(&format!(
            "SET lock_timeout = '{}'",
            store::MAINTENANCE_LOCK_TIMEOUT
        ))
        .await?;
    pass(&*client, partitions, retention).await
}

async fn pass(
    client: &impl tokio_postgres::GenericClient,
    partitions: &Partitions,
    retention: Retention,
) -> Result<(), StoreError> {
    let today = Utc::now().date_naive();
    // Days are made DAYS_AHEAD ahead, so a busy lock only delays this by an hour.
    match partitions
        .ensure(client, today.iter_days().take(DAYS_AHEAD as usize + 1))
        .await
    {
        Err(e) if e.is_lock_timeout() => {
            tracing::info!("Tables were busy; new day partitions wait for the next pass.");
        }
        other => other?,
    }
    let months =
        store::drop_rollup_months_before(client, (Utc::now() - retention.rollups).date_naive())
            .await?;
    if months > 0 {
        tracing::info!(partitions = months, "Rollup retention applied.");
    }
    let cutoff = Utc::now() - retention.raw;
    let dropped = store::drop_partitions_before(client, cutoff.date_naive()).await?;
    for day in &dropped.days {
        partitions.forget(*day);
    }
    // Ids are forgotten only for events whose day partition is gone: while a partition
    // waits for its locks, its events' ids stay known.
    let forgotten = if dropped.deferred == 0 {
        let first_kept_day = cutoff.date_naive().and_time(NaiveTime::MIN).and_utc();
        store::forget_event_ids_before(client, cutoff, first_kept_day).await?
    } else {
        tracing::info!(
            partitions = dropped.deferred,
            "Old partitions were busy; they and their event ids wait for the next pass."
        );
        0
    };
    if !dropped.days.is_empty() || forgotten > 0 {
        tracing::info!(
            partitions = dropped.days.len(),
            event_ids = forgotten,
            "Retention applied."
        );
    }
    Ok(())
}

/// The month a partition named `<table>_mYYYYMM` holds (its first day).
pub fn partition_month(name: &str) -> Option<NaiveDate> {
    let (_, suffix) = name.rsplit_once("_m")?;
    if suffix.len() != 6 {
        return None;
    }
    NaiveDate::parse_from_str(&format!("{suffix}01"), "%Y%m%d").ok()
}

/// The day a partition named `<table>_pYYYYMMDD` holds.
pub fn partition_day(name: &str) -> Option<NaiveDate> {
    let (_, suffix) = name.rsplit_once("_p")?;
    NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_parse_to_days() {
        assert_eq!(
            partition_day("agent_runs_p20261124"),
            NaiveDate::from_ymd_opt(2026, 11, 24)
        );
        assert_eq!(
            partition_day("agent_user_feedback_p20260101"),
            NaiveDate::from_ymd_opt(2026, 1, 1)
        );
        assert_eq!(partition_day("agent_runs"), None);
        assert_eq!(partition_day("agent_runs_p2026"), None);
        assert_eq!(
            partition_month("rollup_runs_hourly_m202612"),
            NaiveDate::from_ymd_opt(2026, 12, 1)
        );
        assert_eq!(partition_month("rollup_runs_hourly"), None);
        assert_eq!(partition_month("rollup_runs_hourly_m2026123"), None);
    }
}
