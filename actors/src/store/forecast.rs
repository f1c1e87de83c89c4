//! Per-step history of the forecastable metrics (SPEC §8), aggregated in SQL from the raw
//! tables.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::StoreError;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::live::ms_to_time;

/// The metrics `/predictions/forecasts` knows.
pub const METRICS: [&str; 6] = [
    "runs",
    "credits",
    "tokens",
    "cpu_pct",
    "mem_mb",
    "error_rate",
];

/// One value per step of `[from, to)` (steps of `step_ms`, `from` aligned), oldest first:
/// `0` for an empty step of a count or sum, `NaN` (missing) for an empty step of a rate or
/// a gauge. `metric` must be one of [`METRICS`].
pub async fn history(
    pool: &Pool,
    ws: &WorkspaceId,
    agent: Option<&AgentId>,
    metric: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_ms: i64,
) -> Result<Vec<f64>, StoreError> {
    let client = pool.get().await?;
    let agent = agent.map(AgentId::as_str);
    let from_ms = from.timestamp_millis();
    let steps = ((to.timestamp_millis() - from_ms) / step_ms).max(0) as usize;
    let empty = match metric {
        "runs" | "credits" | "tokens" => 0.0,
        _ => f64::NAN,
    };
    let mut out = vec![empty; steps];
    let (sql, resources) = match metric {
        "cpu_pct" | "mem_mb" => (include_str!("sql/forecast_resources.sql"), true),
        _ => (include_str!("sql/forecast_runs.sql"), false),
    };
    let rows = client
        .query(sql, &[&ws.as_str(), &from, &to, &step_ms, &agent])
        .await?;
    for r in rows {
        let step: i64 = r.get(0);
        let Some(slot) = usize::try_from((step - from_ms) / step_ms)
            .ok()
            .and_then(|i| out.get_mut(i))
        else {
            continue;
        };
        *slot = if resources {
            let v: Option<f64> = r.get(if metric == "cpu_pct" { 1 } else { 2 });
            v.unwrap_or(f64::NAN)
        } else {
            match metric {
                "runs" => r.get::<_, i64>(1) as f64,
                "credits" => r.get::<_, f64>(2),
                "tokens" => r.get::<_, f64>(3),
                _ => {
                    let (failed, decided): (i64, i64) = (r.get(4), r.get(5));
                    if decided > 0 {
                        failed as f64 / decided as f64
                    } else {
                        f64::NAN
                    }
                }
            }
        };
    }
    Ok(out)
}

/// The time of step `i` after `from_ms`.
pub fn step_time(from_ms: i64, step_ms: i64, i: usize) -> DateTime<Utc> {
    ms_to_time(from_ms + step_ms * i as i64)
}
