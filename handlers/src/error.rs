//! API errors, by audience: a status and a stable `code` for clients, the cause in the logs.
//! Every error body is `{"error": {"code", "message"[, "details"]}}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use shadower_actors::domain::ingest::FieldError;

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    InvalidEvents {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("{message}")]
    InvalidRule {
        message: String,
        details: Vec<FieldError>,
    },
    /// 400: query parameters that do not make a valid request, every one listed.
    #[error("{message}")]
    InvalidParams {
        message: String,
        details: Vec<FieldError>,
    },
    /// 400: a string in the body that cannot be stored (e.g. a NUL character).
    #[error("the body holds text that cannot be stored; see details")]
    InvalidText {
        code: &'static str,
        details: Vec<FieldError>,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 429: the workspace's rate limit (headers say when to retry).
    #[error("rate limit exceeded for this workspace; retry after {}s", .0.retry_after_s.max(1))]
    RateLimited(crate::ratelimit::Decision),
    /// 429: a WebSocket session cap is reached.
    #[error("{0}")]
    TooManySessions(String),
    /// 503 with `Retry-After`: the hub cannot do it now, a retry soon may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest { code, .. } => code,
            Self::InvalidEvents { .. } => "invalid_events",
            Self::InvalidRule { .. } => "invalid_rule",
            Self::InvalidParams { .. } => "invalid_parameters",
            Self::InvalidText { code, .. } => code,
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooManySessions(_) => "too_many_sessions",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a [FieldError]>,
    /// The `x-request-id` of the request, to find its cause in the hub's log.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<std::sync::Arc<str>>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest { .. }
            | Self::InvalidEvents { .. }
            | Self::InvalidRule { .. }
            | Self::InvalidParams { .. }
            | Self::InvalidText { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManySessions(_) | Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::Unavailable(_) | Self::TooManySessions(_) => {
                res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            Self::Unauthorized(_) => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        let details = match self {
            Self::InvalidEvents { details, .. }
            | Self::InvalidRule { details, .. }
            | Self::InvalidParams { details, .. }
            | Self::InvalidText { details, .. } => Some(details.as_slice()),
            _ => None,
        };
        let mut res = res
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(Body {
                error: Inner {
                    code: self.code(),
                    message: self.to_string(),
                    details,
                    request_id: crate::request_id::current(),
                },
            });
        if let Self::RateLimited(decision) = self {
            decision.annotate(&mut res);
        }
        res
    }
}

/// Default service: JSON 404 for any path no route knows.
pub async fn not_found() -> HttpResponse {
    ApiError::NotFound("no such route".into()).error_response()
}

/// Per-resource default: JSON 405 for a known path with another method.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}

/// Turns actix's query-string errors into the JSON error body.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}
