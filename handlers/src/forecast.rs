//! Forecasts (SPEC §8): `GET /api/v1/predictions/forecasts` and `POST
//! /api/v1/resources/forecast` (the same fields in a JSON body). History comes from
//! PostgreSQL, aggregated per step; answers are cached in Redis until the step ends.

use std::time::Duration as StdDuration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shadower_actors::domain::duration::HubDuration;
use shadower_actors::domain::forecast::{forecast, season_for_step, SeriesKind};
use shadower_actors::domain::ids::AgentId;
use shadower_actors::domain::live::ts_json;
use shadower_actors::store::forecast::{self as store, METRICS};

use crate::alerts::{api_body, authorize, parse_body, store_error};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::ratelimit::Decision;
use crate::{cache, AppState};

/// Most steps forecast in one answer.
const MAX_STEPS: i64 = 1_000;
/// History read per step size: four weeks of hours and days, one week of shorter steps.
fn history_len(step_ms: i64) -> Duration {
    if step_ms >= 3_600_000 {
        Duration::days(28)
    } else {
        Duration::days(7)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastParams {
    workspace_id: String,
    metric: String,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    horizon: Option<String>,
    #[serde(default)]
    step: Option<String>,
}

fn duration(field: &str, text: Option<&str>, default: &str) -> Result<i64, ApiError> {
    let d: HubDuration = text
        .unwrap_or(default)
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_duration", format!("{field}: {e}")))?;
    Ok(d.to_chrono().num_milliseconds())
}

pub async fn get(
    q: web::Query<ForecastParams>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    answer(q.into_inner(), &principal, &state).await
}

pub async fn post(
    principal: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = api_body(&req, payload, &state).await?;
    let params: ForecastParams = parse_body(&body, "invalid_body")?;
    answer(params, &principal, &state).await
}

async fn answer(
    p: ForecastParams,
    principal: &Principal,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(principal, state, &p.workspace_id, Scope::Read).await?;
    let Some(kind) = SeriesKind::for_metric(&p.metric) else {
        return Err(ApiError::bad_request(
            "invalid_metric",
            format!("metric must be one of {}", METRICS.join(", ")),
        ));
    };
    let agent = p.agent_id.as_deref().map(crate::live::agent).transpose()?;
    let step_ms = duration("step", p.step.as_deref(), "1h")?;
    let horizon_ms = duration("horizon", p.horizon.as_deref(), "24h")?;
    if !(300_000..=86_400_000).contains(&step_ms) || 86_400_000 % step_ms != 0 {
        return Err(ApiError::bad_request(
            "invalid_step",
            "step must divide a day and be between 5m and 1d (5m, 10m, 15m, 30m, 1h, 2h, … 1d)",
        ));
    }
    let steps = horizon_ms / step_ms;
    if horizon_ms % step_ms != 0 || !(1..=MAX_STEPS).contains(&steps) {
        return Err(ApiError::bad_request(
            "invalid_horizon",
            format!("horizon must be a whole number of steps, 1 to {MAX_STEPS}"),
        ));
    }
    // History ends with the last complete step; the forecast starts with the current one.
    let now_ms = Utc::now().timestamp_millis();
    let current = now_ms.div_euclid(step_ms) * step_ms;
    let key = format!(
        "forecast:{}:{}:{}:{}:{}:{}",
        ws,
        agent.as_ref().map_or("", AgentId::as_str),
        p.metric,
        step_ms,
        steps,
        current
    );
    let max_age = ((current + step_ms - now_ms) / 1000).max(1);
    if let Some(body) = cache::get(state, &key).await {
        return Ok(respond(body, "HIT", max_age, d));
    }
    let to = store::step_time(current, step_ms, 0);
    let from = to - history_len(step_ms);
    let history = store::history(
        &state.query_pool,
        &ws,
        agent.as_ref(),
        &p.metric,
        from,
        to,
        step_ms,
    )
    .await
    .map_err(store_error)?;
    let f = forecast(&history, season_for_step(step_ms), steps as usize, kind);
    let points: Vec<Value> = f
        .points
        .iter()
        .enumerate()
        .map(|(i, pt)| {
            json!({
                "ts": ts_json(store::step_time(current, step_ms, i)),
                "value": pt.value,
                "lower_80": pt.lower_80,
                "upper_80": pt.upper_80,
                "lower_95": pt.lower_95,
                "upper_95": pt.upper_95,
            })
        })
        .collect();
    let body = json!({
        "workspace_id": ws.as_str(),
        "agent_id": agent.as_ref().map(AgentId::as_str),
        "metric": p.metric,
        "step": HubDuration::from_secs(step_ms as u64 / 1000).to_string(),
        "horizon": HubDuration::from_secs(horizon_ms as u64 / 1000).to_string(),
        "method": f.method,
        "history_points": f.history_points,
        "points": points,
    })
    .to_string();
    cache::put(state, &key, &body, StdDuration::from_secs(max_age as u64)).await;
    Ok(respond(body, "MISS", max_age, d))
}

fn respond(body: String, cache: &'static str, max_age: i64, d: Decision) -> HttpResponse {
    let mut res = HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("X-Cache", cache))
        .insert_header((header::CACHE_CONTROL, format!("private, max-age={max_age}")))
        .body(body);
    d.annotate(&mut res);
    res
}
