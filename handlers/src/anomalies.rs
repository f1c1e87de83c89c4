//! Anomalies: the ones the live detector found (`GET /api/v1/anomalies`, from PostgreSQL)
//! and the same detector run over stored history (`POST /api/v1/anomalies/detect`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shadower_actors::domain::anomaly::track::BucketInputs;
use shadower_actors::domain::anomaly::{Config, Detector, Metric, Scorer};
use shadower_actors::domain::ids::AgentId;
use shadower_actors::domain::live::{ms_to_time, ts_json};
use shadower_actors::store::anomalies::{self as store, ListFilter};

use crate::alerts::{api_body, authorize, json_response, page_limit, parse_body, store_error};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::live::agent;
use crate::AppState;

/// Most anomalies per page.
const MAX_PAGE: i64 = 1_000;
/// History scored before `from` so the detector has its baseline when the range starts
/// (seasonal detectors need a full day).
const DETECT_LEAD: Duration = Duration::days(2);

#[derive(Deserialize)]
pub struct ListQuery {
    workspace_id: String,
    metric: Option<String>,
    agent_id: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
}

fn metric(s: &str) -> Result<Metric, ApiError> {
    Metric::parse(s).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_metric",
            format!(
                "metric must be one of {}",
                Metric::ALL.map(Metric::as_str).join(", ")
            ),
        )
    })
}

fn time(field: &'static str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_time",
                format!("{field} must be an RFC 3339 timestamp ({e})"),
            )
        })
}

/// `GET /api/v1/anomalies?workspace_id=W[&metric=][&agent_id=][&since=][&before=][&limit=]`:
/// newest bucket first; `next_before` pages on when the page is full.
pub async fn list(
    q: web::Query<ListQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, d) = authorize(&principal, &state, &q.workspace_id, Scope::Read).await?;
    let limit = page_limit(q.limit, MAX_PAGE)?;
    let filter = ListFilter {
        metric: q.metric.as_deref().map(metric).transpose()?,
        agent: q.agent_id.as_deref().map(agent).transpose()?.map(Some),
        since: q.since.as_deref().map(|s| time("since", s)).transpose()?,
        before: q.before.as_deref().map(|s| time("before", s)).transpose()?,
        limit,
    };
    let rows = store::list(&state.query_pool, &ws, &filter)
        .await
        .map_err(store_error)?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().and_then(|r| r["bucket_start"].as_str()))
        .flatten()
        .map(str::to_string);
    Ok(json_response(
        StatusCode::OK,
        &json!({"workspace_id": ws.as_str(), "anomalies": rows, "next_before": next_before}),
        d,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectBody {
    workspace_id: String,
    metric: String,
    #[serde(default)]
    agent_id: Option<String>,
    from: String,
    to: String,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    sensitivity: Option<f64>,
}

/// The bucket named, or the finest of 1m/5m/1h that covers the range in at most `max`.
fn detect_bucket(name: Option<&str>, span_ms: i64, max: usize) -> Result<i64, ApiError> {
    let ms = match name {
        Some("1m") => 60_000,
        Some("5m") => 300_000,
        Some("1h") => 3_600_000,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_bucket",
                "bucket must be one of 1m, 5m, 1h",
            ))
        }
        None => [60_000, 300_000, 3_600_000]
            .into_iter()
            .find(|b| span_ms / b <= max as i64)
            .unwrap_or(3_600_000),
    };
    if span_ms / ms > max as i64 {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!(
                "the range holds {} buckets of this size; at most {max} (anomaly.max_detect_buckets): use a larger bucket or a shorter range",
                span_ms / ms
            ),
        ));
    }
    Ok(ms)
}

/// `POST /api/v1/anomalies/detect`: the live detector's method over stored events, every
/// bucket of `[from, to)` with its band and verdict. Buckets are aggregated from the raw
/// tables in SQL; the two days before `from` are scored first to give the detector its
/// baseline.
pub async fn detect(
    principal: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = api_body(&req, payload, &state).await?;
    let b: DetectBody = parse_body(&body, "invalid_body")?;
    let (ws, d) = authorize(&principal, &state, &b.workspace_id, Scope::Read).await?;
    let metric = metric(&b.metric)?;
    let agent = b.agent_id.as_deref().map(agent).transpose()?;
    let (from, to) = (time("from", &b.from)?, time("to", &b.to)?);
    let to = to.min(Utc::now());
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must be before to (and before now)",
        ));
    }
    let live = state.registry.deps().anomaly.detector;
    let sensitivity = b.sensitivity.unwrap_or(live.sensitivity);
    if !(0.0..=1.0).contains(&sensitivity) {
        return Err(ApiError::bad_request(
            "invalid_sensitivity",
            "sensitivity must be between 0 and 1",
        ));
    }
    let span_ms = (to - from).num_milliseconds();
    let bucket_ms = detect_bucket(b.bucket.as_deref(), span_ms, state.anomaly_max_buckets)?;
    let config = Config {
        bucket_ms,
        threshold: live.threshold,
        sensitivity,
    };
    let align = |t: DateTime<Utc>| t.timestamp_millis().div_euclid(bucket_ms) * bucket_ms;
    // Complete buckets only: the one holding `now` is still filling.
    let first = align(from);
    let end = (align(to - Duration::milliseconds(1)) + bucket_ms).min(align(Utc::now()));
    if first >= end {
        return Err(ApiError::bad_request(
            "invalid_range",
            "the range holds no complete bucket yet",
        ));
    }
    let lead_start = align(from - DETECT_LEAD);
    let client = state
        .query_pool
        .get()
        .await
        .map_err(|e| store_error(e.into()))?;
    let history = store::history(
        &client,
        &ws,
        ms_to_time(lead_start),
        ms_to_time(end),
        bucket_ms,
        agent.as_ref(),
    )
    .await
    .map_err(store_error)?;
    drop(client);
    let key = agent.as_ref().map(|a| a.as_str().to_string());
    let mut detector = Detector::new(metric, &config)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let mut buckets = Vec::with_capacity(((end - first) / bucket_ms) as usize);
    let mut flagged = 0;
    let mut start = lead_start;
    while start < end {
        let inputs: BucketInputs = history
            .get(&(key.clone(), start))
            .copied()
            .unwrap_or_default();
        let verdict = detector
            .observe(start, inputs.input(metric))
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        if start >= first {
            buckets.push(match verdict {
                Some(v) => {
                    flagged += usize::from(v.is_anomaly);
                    json!({
                        "bucket_start": ts_json(ms_to_time(start)),
                        "value": v.value,
                        "expected": v.expected,
                        "lower": v.lower,
                        "upper": v.upper,
                        "score": v.score,
                        "is_anomaly": v.is_anomaly,
                        "severity": v.severity.map(|s| s.as_str()),
                        "direction": v.direction.map(|d| d.as_str()),
                    })
                }
                None => json!({
                    "bucket_start": ts_json(ms_to_time(start)),
                    "value": inputs.value(metric, bucket_ms),
                    "expected": null,
                    "lower": null,
                    "upper": null,
                    "score": null,
                    "is_anomaly": false,
                    "warming_up": true,
                }),
            });
        }
        start += bucket_ms;
    }
    let body: Value = json!({
        "workspace_id": ws.as_str(),
        "agent_id": agent.as_ref().map(AgentId::as_str),
        "metric": metric.as_str(),
        "method": metric.method(),
        "bucket": match bucket_ms { 60_000 => "1m", 300_000 => "5m", _ => "1h" },
        "from": ts_json(ms_to_time(first)),
        "to": ts_json(ms_to_time(end)),
        "threshold": config.effective_threshold(),
        "anomalies": flagged,
        "buckets": buckets,
    });
    Ok(json_response(StatusCode::OK, &body, d))
}
