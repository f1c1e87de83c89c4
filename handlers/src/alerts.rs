//! Alert rules (`/api/v1/alerts`) and their transitions (`/api/v1/alerts/events`).
//! Writes need `admin`, reads `read`. A write is answered once the workspace actor evaluates
//! with the new rules.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use shadower_actors::domain::alert::rule::is_uuid;
use shadower_actors::domain::alert::RuleSpec;
use shadower_actors::domain::ids::WorkspaceId;
use shadower_actors::domain::ingest::FieldError;
use shadower_actors::domain::live::ts_json;
use shadower_actors::domain::text;
use shadower_actors::messages::ReloadRules;
use shadower_actors::store::alerts::{self as store, RuleRow};
use shadower_actors::store::StoreError;

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::ratelimit::{Budget, Decision};
use crate::AppState;

#[derive(Deserialize)]
pub struct WorkspaceQuery {
    pub(crate) workspace_id: String,
}

#[derive(Deserialize)]
pub struct EventsQuery {
    workspace_id: String,
    limit: Option<i64>,
    /// The `next_before` of the previous page.
    before: Option<i64>,
}

/// Most transitions per page.
const MAX_PAGE: i64 = 500;

/// The workspace named in the query, once the token grants it with `scope` and its rate
/// limit allows one more request.
pub(crate) async fn authorize(
    principal: &Principal,
    state: &AppState,
    ws: &str,
    scope: Scope,
) -> Result<(WorkspaceId, Decision), ApiError> {
    let ws = WorkspaceId::parse(ws)
        .map_err(|e| ApiError::bad_request("invalid_workspace_id", format!("workspace_id {e}")))?;
    principal.require(&ws, scope)?;
    let decision = state.limit(&ws, Budget::Read, 1).await?;
    Ok((ws, decision))
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    tracing::warn!(error = %e, "Storage request failed.");
    ApiError::Unavailable("storage is not available right now; retry shortly".into())
}

pub(crate) fn json_response(
    status: actix_web::http::StatusCode,
    body: &Value,
    d: Decision,
) -> HttpResponse {
    let mut res = HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body);
    d.annotate(&mut res);
    res
}

/// The JSON body, or a 400 saying what is wrong with it.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    code: &'static str,
) -> Result<T, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::bad_request(code, format!("invalid body: {e}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
    // Every string is checked before any field is read: what PostgreSQL cannot store is
    // the sender's 400, never a failed write.
    text::storable_json(&value).map_err(|(field, e)| ApiError::InvalidText {
        code,
        details: vec![FieldError {
            index: 0,
            field,
            message: e.to_string(),
        }],
    })?;
    serde_json::from_value(value).map_err(invalid)
}

/// The JSON body of a request to the API beside ingest (rules, channels, detection,
/// forecasts), at most `alerts.max_body_bytes`.
pub(crate) async fn api_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<web::BytesMut, ApiError> {
    crate::ingest::read_body_limited(
        req,
        payload,
        state.alerts.max_body_bytes,
        "alerts.max_body_bytes",
    )
    .await
}

/// A page size: `limit` (default 100) within 1 ..= `max`, or a 400 saying so.
pub(crate) fn page_limit(limit: Option<i64>, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {max}"),
        ))
    }
}

/// 204, with the rate-limit headers.
pub(crate) fn no_content(d: Decision) -> HttpResponse {
    let mut res = HttpResponse::NoContent().finish();
    d.annotate(&mut res);
    res
}

fn rule_json(row: &RuleRow, ws: &WorkspaceId) -> Value {
    let mut v = json!({"id": row.id, "workspace_id": ws.as_str()});
    if let (Some(obj), Some(spec)) = (v.as_object_mut(), row.spec.as_object()) {
        obj.extend(spec.clone());
        obj.insert("created_at".into(), json!(ts_json(row.created_at)));
        obj.insert("updated_at".into(), json!(ts_json(row.updated_at)));
    }
    v
}

fn rule_id(id: &str) -> Result<&str, ApiError> {
    if is_uuid(id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound("no such alert rule".into()))
    }
}

/// Validates the body and that its channels exist in the workspace.
async fn validated(state: &AppState, ws: &WorkspaceId, body: &[u8]) -> Result<RuleSpec, ApiError> {
    let spec: RuleSpec = parse_body(body, "invalid_rule")?;
    spec.validate("00000000-0000-0000-0000-000000000000")
        .map_err(|details| ApiError::InvalidRule {
            message: format!("{} invalid field(s); nothing was stored", details.len()),
            details,
        })?;
    if !spec.channel_ids.is_empty() {
        let found = store::existing_channels(&state.query_pool, ws, &spec.channel_ids)
            .await
            .map_err(store_error)?;
        if let Some(missing) = spec
            .channel_ids
            .iter()
            .find(|c| !found.iter().any(|f| f.eq_ignore_ascii_case(c)))
        {
            return Err(ApiError::bad_request(
                "unknown_channel",
                format!("channel_ids: no channel {missing} in this workspace"),
            ));
        }
    }
    Ok(spec)
}

/// Tells the workspace actor to load its rules again and waits until it has.
async fn reload(state: &AppState, ws: &WorkspaceId) -> Result<(), ApiError> {
    let timeout = state.registry.deps().request_timeout;
    match state.registry.ask(ws, ReloadRules, timeout).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(workspace = %ws, error = %e, "Reloading alert rules failed.");
            Err(ApiError::Unavailable(
                "the rule is stored but not yet in force; it applies when the workspace reloads"
                    .into(),
            ))
        }
        Err(e) => Err(ApiError::Unavailable(format!(
            "the rule is stored but not yet in force ({e})"
        ))),
    }
}

pub async fn list(
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Read).await?;
    let rows = store::list_rules(&state.query_pool, &ws)
        .await
        .map_err(store_error)?;
    let rules: Vec<Value> = rows.iter().map(|r| rule_json(r, &ws)).collect();
    Ok(json_response(
        actix_web::http::StatusCode::OK,
        &json!({"workspace_id": ws.as_str(), "rules": rules}),
        d,
    ))
}

pub async fn create(
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    let body = api_body(&req, payload, &state).await?;
    let spec = validated(&state, &ws, &body).await?;
    let row = store::insert_rule(
        &state.query_pool,
        &ws,
        &spec,
        state.alerts.max_rules_per_workspace,
    )
    .await
    .map_err(store_error)?
    .ok_or_else(|| {
        ApiError::Conflict(format!(
            "the workspace already has {} alert rules (alerts.max_rules_per_workspace)",
            state.alerts.max_rules_per_workspace
        ))
    })?;
    reload(&state, &ws).await?;
    Ok(json_response(
        actix_web::http::StatusCode::CREATED,
        &rule_json(&row, &ws),
        d,
    ))
}

pub async fn get(
    path: web::Path<String>,
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Read).await?;
    let row = store::get_rule(&state.query_pool, &ws, rule_id(&path)?)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such alert rule".into()))?;
    Ok(json_response(
        actix_web::http::StatusCode::OK,
        &rule_json(&row, &ws),
        d,
    ))
}

pub async fn update(
    path: web::Path<String>,
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    let id = rule_id(&path)?;
    let body = api_body(&req, payload, &state).await?;
    let spec = validated(&state, &ws, &body).await?;
    let row = store::update_rule(&state.query_pool, &ws, id, &spec)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such alert rule".into()))?;
    reload(&state, &ws).await?;
    Ok(json_response(
        actix_web::http::StatusCode::OK,
        &rule_json(&row, &ws),
        d,
    ))
}

pub async fn delete(
    path: web::Path<String>,
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    if !store::delete_rule(&state.query_pool, &ws, rule_id(&path)?)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::NotFound("no such alert rule".into()));
    }
    reload(&state, &ws).await?;
    Ok(no_content(d))
}

pub async fn events(
    q: web::Query<EventsQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Read).await?;
    let limit = page_limit(q.limit, MAX_PAGE)?;
    let rows = store::list_events(&state.query_pool, &ws, q.before, limit)
        .await
        .map_err(store_error)?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(json_response(
        actix_web::http::StatusCode::OK,
        &json!({"workspace_id": ws.as_str(), "events": rows, "next_before": next}),
        d,
    ))
}
