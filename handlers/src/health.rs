//! Liveness, readiness and the Prometheus exposition.

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use shadower_actors::store;

use crate::AppState;

/// Bound on the readiness probe's round trip to PostgreSQL.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health/live`: 200 while the process runs.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// How long a readiness answer is reused: anonymous probes, however many, cost PostgreSQL
/// and Redis at most one round trip each per interval.
pub const READY_TTL: Duration = Duration::from_secs(1);

/// The last readiness answer and when it was made. Callers that find it stale wait for one
/// of them to refresh it, then all answer from the refreshed one.
#[derive(Default)]
pub struct ReadyCache(tokio::sync::Mutex<Option<(Instant, bool, Value)>>);

/// `GET /health/ready`: 200 when the hub can accept and commit events; 503 naming what is
/// wrong otherwise (PostgreSQL down or read-only, writer backlog full). Redis down is
/// `degraded`, still 200: the hub keeps serving without it. The checks are at most
/// [`READY_TTL`] old, and say what is wrong in fixed words (the causes go to the log).
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (ok, body) = {
        let mut cached = state.ready.0.lock().await;
        match &*cached {
            Some((at, ok, body)) if at.elapsed() < READY_TTL => (*ok, body.clone()),
            _ => {
                let (ok, body) = probe(&state).await;
                state.metrics.ready_probes.inc();
                *cached = Some((Instant::now(), ok, body.clone()));
                (ok, body)
            }
        }
    };
    let mut res = if ok {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

async fn probe(state: &AppState) -> (bool, Value) {
    let postgres =
        match tokio::time::timeout(PROBE_TIMEOUT, store::probe_writable(&state.pool)).await {
            Ok(Ok(())) => json!({"status": "up"}),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Readiness: PostgreSQL check failed.");
                json!({"status": "down", "error": postgres_problem(&e)})
            }
            Err(_) => json!({"status": "down", "error": "no answer within 2s"}),
        };
    let backlog_rows = state.backlog.rows();
    let writer = if state.backlog.is_full() {
        json!({"status": "down", "error": "writer backlog full", "backlog_rows": backlog_rows})
    } else {
        json!({"status": "up", "backlog_rows": backlog_rows})
    };
    let redis = match tokio::time::timeout(PROBE_TIMEOUT, redis_ping(&state.redis)).await {
        Ok(Ok(())) => json!({"status": "up"}),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Readiness: Redis check failed.");
            json!({"status": "degraded", "error": "unreachable"})
        }
        Err(_) => json!({"status": "degraded", "error": "no answer within 2s"}),
    };
    let ok = postgres["status"] == "up" && writer["status"] == "up";
    let status = match (ok, redis["status"] == "up") {
        (false, _) => "unavailable",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    let body = json!({
        "status": status,
        "checks": {"postgres": postgres, "writer": writer, "redis": redis},
    });
    (ok, body)
}

/// What is wrong with PostgreSQL, in fixed words.
fn postgres_problem(e: &store::StoreError) -> &'static str {
    match e {
        store::StoreError::Pool(_) => "unreachable",
        // No SQLSTATE: the connection itself failed (closed, refused, reset).
        store::StoreError::Db(e) if e.as_db_error().is_none() => "unreachable",
        store::StoreError::Data(m) if m.contains("read-only") => "read-only",
        _ => "error (see the hub's log)",
    }
}

async fn redis_ping(pool: &crate::RedisPool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let pong: String = bb8_redis::redis::cmd("PING")
        .query_async(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    (pong == "PONG").then_some(()).ok_or(pong)
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .writer_backlog_rows
        .set(state.backlog.rows() as i64);
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}
