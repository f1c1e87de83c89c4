//! `POST /api/v1/workspaces/{workspace_id}/events`: parse and validate the whole request,
//! hand it to the writer, answer `{"accepted": n}` only after the commit.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use shadower_actors::domain::ids::WorkspaceId;
use shadower_actors::domain::ingest::{parse_events, BodyFormat, IngestError};
use shadower_actors::messages::Submit;
use shadower_actors::metrics::ReasonLabel;
use tokio::sync::oneshot;

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::ratelimit::Budget;
use crate::AppState;

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
}

pub async fn post_events(
    req: HttpRequest,
    path: web::Path<String>,
    principal: Principal,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = ingest(&req, &path, &principal, payload, &state).await;
    if let Err(e) = &result {
        let reason = match e {
            ApiError::InvalidEvents { .. } | ApiError::BadRequest { .. } => "invalid",
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType(_) => "content_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::RateLimited(_) => "rate_limited",
            _ => "forbidden",
        };
        state
            .metrics
            .ingest_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
    result
}

async fn ingest(
    req: &HttpRequest,
    workspace: &str,
    principal: &Principal,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let ws = WorkspaceId::parse(workspace)
        .map_err(|e| ApiError::bad_request("invalid_workspace_id", format!("workspace_id {e}")))?;
    principal.require(&ws, Scope::Ingest)?;
    let format = body_format(req)?;
    let body = read_body_limited(
        req,
        payload,
        state.ingest.max_body_bytes,
        "ingest.max_body_bytes",
    )
    .await?;
    let events = parse_events(&body, format, &state.ingest.rules, chrono::Utc::now()).map_err(
        |e| match e {
            IngestError::TooManyEvents { .. } => ApiError::PayloadTooLarge(e.to_string()),
            IngestError::Malformed(m) => ApiError::bad_request("invalid_json", m),
            IngestError::Invalid(details) => ApiError::InvalidEvents {
                message: format!("{} invalid event(s); nothing was stored", details.len()),
                details,
            },
        },
    )?;
    drop(body);
    let accepted = events.len();
    let decision = state.limit(&ws, Budget::Ingest, accepted as u64).await?;
    let reservation = state.backlog.try_reserve(accepted).ok_or_else(|| {
        ApiError::Unavailable(
            "the writer backlog is full (writer.max_backlog_rows); retry shortly".into(),
        )
    })?;
    let (reply, answer) = oneshot::channel();
    state
        .writer
        .try_send(Submit {
            workspace: ws,
            events,
            reservation,
            reply,
        })
        .map_err(|_| {
            ApiError::Unavailable("the writer is not accepting work; retry shortly".into())
        })?;
    match answer.await {
        Ok(Ok(())) => {
            let mut res = HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(Accepted { accepted });
            decision.annotate(&mut res);
            Ok(res)
        }
        Ok(Err(e)) => Err(ApiError::Unavailable(e.to_string())),
        Err(_) => Err(ApiError::Unavailable("the writer restarted; retry".into())),
    }
}

fn body_format(req: &HttpRequest) -> Result<BodyFormat, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" => Ok(BodyFormat::Ndjson),
        _ => Err(ApiError::UnsupportedMediaType(
            "send application/json ({\"events\": [...]}) or application/x-ndjson".into(),
        )),
    }
}

/// Reads the body, refusing with 413 as soon as it passes `limit` bytes (the value of the
/// config key `key`, named in the error).
pub(crate) async fn read_body_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    key: &str,
) -> Result<web::BytesMut, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the body is larger than {key} ({limit} bytes)"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
