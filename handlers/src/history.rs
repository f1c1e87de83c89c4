//! History routes (SPEC §8) read from the rollups, exact up to now
//! (`shadower_actors::store::history`). So far: `GET /api/v1/agents/{agent_id}/stats` (404
//! for an agent the workspace has no record of within retention).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;
use shadower_actors::domain::ingest::FieldError;
use shadower_actors::domain::live::ts_json;
use shadower_actors::store::history::{agent_known, run_totals, RunTotals};

use crate::alerts::{authorize, store_error};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::AppState;

/// A range: `timeframe` (ending now) or `from`/`to` (RFC 3339); 24 hours when neither.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    workspace_id: String,
    #[serde(default)]
    timeframe: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

const TIMEFRAMES: [(&str, i64); 6] = [
    ("1h", 1),
    ("24h", 24),
    ("7d", 7 * 24),
    ("30d", 30 * 24),
    ("90d", 90 * 24),
    ("1y", 365 * 24),
];

/// The range asked for, checked: every bad field is listed.
fn range(
    p: &RangeParams,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let mut bad = Vec::new();
    let mut fail = |field: &str, message: String| {
        bad.push(FieldError {
            index: 0,
            field: field.into(),
            message,
        })
    };
    let time = |field: &str, text: &Option<String>, fail: &mut dyn FnMut(&str, String)| {
        text.as_deref()
            .and_then(|t| match DateTime::parse_from_rfc3339(t) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    fail(
                        field,
                        format!("must be an RFC 3339 time with an offset ({e})"),
                    );
                    None
                }
            })
    };
    let (from, to) = (
        time("from", &p.from, &mut fail),
        time("to", &p.to, &mut fail),
    );
    let range = match (&p.timeframe, &p.from, &p.to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            fail(
                "timeframe",
                "give either timeframe or from/to, not both".into(),
            );
            None
        }
        (Some(tf), None, None) => match TIMEFRAMES.iter().find(|(name, _)| name == tf) {
            Some((_, hours)) => Some((now - Duration::hours(*hours), now)),
            None => {
                fail(
                    "timeframe",
                    "must be one of 1h, 24h, 7d, 30d, 90d, 1y".into(),
                );
                None
            }
        },
        (None, Some(_), None) | (None, None, Some(_)) => {
            fail(
                if p.from.is_none() { "from" } else { "to" },
                "from and to go together".into(),
            );
            None
        }
        (None, Some(_), Some(_)) => from.zip(to),
        (None, None, None) => Some((now - Duration::hours(24), now)),
    };
    if let Some((from, to)) = range {
        if from >= to {
            fail("from", "must be before to".into());
        }
        if from < now - retention {
            fail(
                "from",
                format!(
                    "is past retention.rollups ({} days): nothing that old is kept",
                    retention.num_days()
                ),
            );
        }
    }
    match range {
        Some(r) if bad.is_empty() => Ok(r),
        _ => Err(ApiError::InvalidParams {
            message: format!("{} invalid parameter(s)", bad.len().max(1)),
            details: bad,
        }),
    }
}

/// `GET /api/v1/agents/{agent_id}/stats`: an agent's runs over a range.
pub async fn agent_stats(
    path: web::Path<String>,
    q: web::Query<RangeParams>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, decision) = authorize(&principal, &state, &q.workspace_id, Scope::Read).await?;
    let agent = crate::live::agent(&path)?;
    let (from, to) = range(&q, Utc::now(), state.retention_rollups)?;
    let mut client = state
        .query_pool
        .get()
        .await
        .map_err(|e| store_error(e.into()))?;
    let t = run_totals(&mut client, ws.as_str(), agent.as_str(), from, to)
        .await
        .map_err(store_error)?;
    if t.runs == 0
        && !agent_known(&client, ws.as_str(), agent.as_str())
            .await
            .map_err(store_error)?
    {
        return Err(ApiError::NotFound(format!(
            "agent {agent} has sent nothing to workspace {ws} within retention"
        )));
    }
    let mut res = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .json(stats_json(ws.as_str(), agent.as_str(), from, to, &t));
    decision.annotate(&mut res);
    Ok(res)
}

fn stats_json(
    ws: &str,
    agent: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    t: &RunTotals,
) -> serde_json::Value {
    let runs = t.runs as f64;
    // As the live windows: rates over the runs that ended (cancelled ones left out).
    let decided = t.succeeded + t.failed + t.timeout;
    let rate = |n: i64| (decided > 0).then(|| n as f64 / decided as f64);
    let credits = t.credits_micro as f64 / 1e6;
    // A sum past an i64 (never seen, but possible over a year) is given as a float.
    let big = |n: i128| i64::try_from(n).map_or_else(|_| json!(n as f64), |n| json!(n));
    json!({
        "workspace_id": ws,
        "agent_id": agent,
        "from": ts_json(from),
        "to": ts_json(to),
        "runs": t.runs,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "timeout": t.timeout,
        "cancelled": t.cancelled,
        "success_rate": rate(t.succeeded),
        "error_rate": rate(t.failed + t.timeout),
        "runtime_ms": {
            "avg": (t.runs > 0).then(|| t.runtime_us as f64 / 1000.0 / runs),
            "p50": t.runtime.quantile(0.5),
            "p95": t.runtime.quantile(0.95),
            "p99": t.runtime.quantile(0.99),
            "max": t.runtime.max(),
        },
        "credits": credits,
        "cost_per_success": (t.succeeded > 0).then(|| credits / t.succeeded as f64),
        "tokens_in": big(t.tokens_in),
        "tokens_out": big(t.tokens_out),
        "users": {"distinct": t.users.count(), "exact": t.users.is_exact()},
    })
}
