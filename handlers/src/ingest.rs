//! `POST /api/v1/workspaces/{workspace_id}/events`: parse and validate the whole request,
//! hand it to the writer, answer `{"accepted": n}` only after the commit.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use shadower_actors::domain::ids::WorkspaceId;
use shadower_actors::domain::ingest::{frame, BodyFormat, IngestError};
use shadower_actors::messages::Submit;
use shadower_actors::metrics::ReasonLabel;
use shadower_actors::writer::WriteError;
use tokio::sync::oneshot;

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::ratelimit::Budget;
use crate::AppState;

/// Bodies up to this size are parsed on the HTTP worker; larger ones on the bulk pool
/// ([`crate::bulk`]: a full 10 MiB body takes tens of milliseconds of CPU).
const INLINE_PARSE_BYTES: usize = 64 * 1024;

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
    let ws = &WorkspaceId::parse(workspace)
        .map_err(|e| ApiError::bad_request("invalid_workspace_id", format!("workspace_id {e}")))?;
    principal.require(ws, Scope::Ingest)?;
    let format = body_format(req)?;
    // A large declared body's size is paid for before it is read: a tenant past its budget
    // does not make the hub read (and frame) megabytes only to refuse them. (What was paid
    // stays spent if the events then do not fit; small bodies pay once, after framing.)
    let prepaid = declared_length(req)
        .filter(|n| (INLINE_PARSE_BYTES + 1..=state.ingest.max_body_bytes).contains(n))
        .map(|n| state.limiter.ingest_cost(0, n));
    let paid = match prepaid {
        Some(units) => Some(state.limit(ws, Budget::Ingest, units).await?),
        None => None,
    };
    let body = read_body_limited(
        req,
        payload,
        state.ingest.max_body_bytes,
        "ingest.max_body_bytes",
    )
    .await?;
    let rules = state.ingest.rules;
    let body = body.freeze();
    let bytes = body.len();
    // The rest of the request's cost (its events, or its size when that is more) is charged
    // after the cheap framing pass and before any per-event work.
    let settle = |events: usize| {
        let rest = state
            .limiter
            .ingest_cost(events, bytes)
            .saturating_sub(prepaid.unwrap_or(0));
        async move {
            match paid {
                Some(decision) if rest == 0 => Ok(decision),
                _ => state.limit(ws, Budget::Ingest, rest.max(1)).await,
            }
        }
    };
    let (decision, events) = if body.len() <= INLINE_PARSE_BYTES {
        let framed = frame(body, format, &rules).map_err(ingest_error)?;
        let decision = settle(framed.len()).await?;
        (decision, framed.check(&rules, chrono::Utc::now()))
    } else {
        // A large body is read on the bulk pool, so this worker keeps serving others and the
        // work takes only CPU that no one else wants.
        let shutting_down = |_| ApiError::Unavailable("the hub is shutting down; retry".into());
        let framed = state
            .bulk
            .run(body, move |body| frame(body, format, &rules))
            .await
            .map_err(shutting_down)?
            .map_err(ingest_error)?;
        let decision = settle(framed.len()).await?;
        let events = state
            .bulk
            .run(framed, move |framed| {
                framed.check(&rules, chrono::Utc::now())
            })
            .await
            .map_err(shutting_down)?;
        (decision, events)
    };
    let events = events.map_err(ingest_error)?;
    let accepted = events.len();
    let reservation = state.backlog.try_reserve(accepted).ok_or_else(|| {
        ApiError::Unavailable(
            "the writer backlog is full (writer.max_backlog_rows); retry shortly".into(),
        )
    })?;
    // The UTC days these events fall in: cached history answers over them go stale.
    let days: std::collections::BTreeSet<chrono::NaiveDate> =
        events.iter().map(|e| e.time().date_naive()).collect();
    let (reply, answer) = oneshot::channel();
    state
        .writer
        .try_send(Submit {
            workspace: ws.clone(),
            events,
            reservation,
            reply,
        })
        .map_err(|_| {
            ApiError::Unavailable("the writer is not accepting work; retry shortly".into())
        })?;
    // The writer's answer is awaited, and the cache versions of the events' days bumped, in a
    // task of its own: a client that hangs up mid-commit cannot leave a cached answer stale.
    // Any outcome but a refusal may have committed, so it bumps too (a bump only invalidates).
    let bumper = crate::cache::history::Bumper::of(state);
    let ws_name = ws.as_str().to_owned();
    let settled = actix_web::rt::spawn(async move {
        let outcome = answer.await;
        if !matches!(outcome, Ok(Err(WriteError::Rejected))) {
            bumper.bump(&ws_name, &days).await;
        }
        outcome
    });
    let outcome = settled
        .await
        .map_err(|_| ApiError::Unavailable("the writer restarted; retry".into()))?;
    match outcome {
        Ok(Ok(())) => {
            let mut res = HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(Accepted { accepted });
            decision.annotate(&mut res);
            Ok(res)
        }
        Ok(Err(e)) => {
            tracing::warn!(
                request_id = crate::request_id::current().as_deref(),
                workspace = %ws,
                error = %e,
                "Ingest request not stored."
            );
            Err(match e {
                WriteError::Rejected => ApiError::bad_request("invalid_events", e.to_string()),
                WriteError::Unavailable => ApiError::Unavailable(e.to_string()),
            })
        }
        Err(_) => Err(ApiError::Unavailable("the writer restarted; retry".into())),
    }
}

fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::TooManyEvents { .. } => ApiError::PayloadTooLarge(e.to_string()),
        IngestError::Malformed(m) => ApiError::bad_request("invalid_json", m),
        IngestError::Invalid(details) => ApiError::InvalidEvents {
            message: format!("{} invalid event(s); nothing was stored", details.len()),
            details,
        },
    }
}

/// The body length the client declared, if any.
pub(crate) fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
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
    let declared = declared_length(req);
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
