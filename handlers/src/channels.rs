//! Notification channels (`/api/v1/notifications/channels`) and the delivery log
//! (`/api/v1/notifications/deliveries`), scope `admin`. A channel's secret is shown in full
//! only when the hub generates it (creation without one, rotation); otherwise as a hint.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use shadower_actors::domain::alert::rule::is_uuid;
use shadower_actors::notifier::format::Format;
use shadower_actors::notifier::sign::WebhookSecret;
use shadower_actors::notifier::{target, Wake};
use shadower_actors::store::channels::{self as store, NewChannel};

use crate::alerts::{
    api_body, authorize, json_response, no_content, parse_body, store_error, WorkspaceQuery,
};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::AppState;

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    workspace_id: String,
    status: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewChannelBody {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

/// How long the previous secret keeps signing after a rotation.
const ROTATION_OVERLAP_HOURS: i64 = 24;

fn channel_id(id: &str) -> Result<&str, ApiError> {
    if is_uuid(id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound("no such channel".into()))
    }
}

fn seal(state: &AppState, secret: &WebhookSecret, id: &str) -> Result<Vec<u8>, ApiError> {
    state.seal.seal(secret.bytes(), id).map_err(|e| {
        tracing::error!(error = %e, "Sealing a webhook secret failed.");
        ApiError::Unavailable("could not store the secret; retry shortly".into())
    })
}

fn generate() -> Result<WebhookSecret, ApiError> {
    WebhookSecret::generate().map_err(|e| {
        tracing::error!(error = %e, "The OS random source failed.");
        ApiError::Unavailable("could not generate a secret; retry shortly".into())
    })
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
    let body: NewChannelBody = parse_body(&body, "invalid_channel")?;
    if body.kind != "webhook" {
        return Err(ApiError::bad_request(
            "invalid_channel",
            "type: only `webhook` channels exist",
        ));
    }
    let format = Format::parse(body.format.as_deref().unwrap_or("shadower")).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_channel",
            "format: must be shadower, alertmanager or slack",
        )
    })?;
    target::check(&body.url, state.notifications.allow_private_targets)
        .await
        .map_err(|e| ApiError::bad_request("invalid_target", e.to_string()))?;
    let (secret, generated) = match body.secret.as_deref() {
        Some(text) => (
            WebhookSecret::parse(text)
                .map_err(|e| ApiError::bad_request("invalid_secret", format!("secret: {e}")))?,
            false,
        ),
        None => (generate()?, true),
    };
    let id = store::new_id(&state.query_pool)
        .await
        .map_err(store_error)?;
    let sealed = seal(&state, &secret, &id)?;
    let row = store::insert_channel(
        &state.query_pool,
        &ws,
        NewChannel {
            id: &id,
            url: &body.url,
            format: format.as_str(),
            sealed: &sealed,
            hint: &secret.hint(),
        },
        state.alerts.max_channels_per_workspace,
    )
    .await
    .map_err(store_error)?
    .ok_or_else(|| {
        ApiError::Conflict(format!(
            "the workspace already has {} channels (alerts.max_channels_per_workspace)",
            state.alerts.max_channels_per_workspace
        ))
    })?;
    let mut v = json!(row);
    if generated {
        v["secret"] = json!(secret.to_text());
    }
    Ok(json_response(StatusCode::CREATED, &v, d))
}

pub async fn list(
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    let rows = store::list_channels(&state.query_pool, &ws)
        .await
        .map_err(store_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"workspace_id": ws.as_str(), "channels": rows}),
        d,
    ))
}

pub async fn get(
    path: web::Path<String>,
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    let row = store::get_channel(&state.query_pool, &ws, channel_id(&path)?)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such channel".into()))?;
    Ok(json_response(StatusCode::OK, &json!(row), d))
}

pub async fn delete(
    path: web::Path<String>,
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    if !store::delete_channel(&state.query_pool, &ws, channel_id(&path)?)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::NotFound("no such channel".into()));
    }
    Ok(no_content(d))
}

pub async fn rotate_secret(
    path: web::Path<String>,
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    let id = channel_id(&path)?;
    let secret = generate()?;
    let sealed = seal(&state, &secret, id)?;
    let until = chrono::Utc::now() + chrono::Duration::hours(ROTATION_OVERLAP_HOURS);
    let row = store::rotate_secret(&state.query_pool, &ws, id, &sealed, &secret.hint(), until)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such channel".into()))?;
    let mut v = json!(row);
    v["secret"] = json!(secret.to_text());
    Ok(json_response(StatusCode::OK, &v, d))
}

pub async fn test(
    path: web::Path<String>,
    q: web::Query<WorkspaceQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    let id = channel_id(&path)?;
    store::get_channel(&state.query_pool, &ws, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such channel".into()))?;
    let delivery = store::enqueue_test(&state.query_pool, &ws, id)
        .await
        .map_err(store_error)?;
    let _ = state.notifier.try_send(Wake);
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"delivery_id": delivery, "channel_id": id, "status": "pending"}),
        d,
    ))
}

pub async fn deliveries(
    q: web::Query<DeliveriesQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Admin).await?;
    let status = q.status.as_deref();
    if status.is_some_and(|s| !matches!(s, "pending" | "delivered" | "failed")) {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status must be pending, delivered or failed",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 500",
        ));
    }
    let rows = store::list_deliveries(&state.query_pool, &ws, status, limit)
        .await
        .map_err(store_error)?;
    let v: Value = json!({"workspace_id": ws.as_str(), "deliveries": rows});
    Ok(json_response(StatusCode::OK, &v, d))
}
