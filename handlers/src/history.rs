//! History routes (SPEC §8) read from the rollups, exact up to now
//! (`shadower_actors::store::history`): `GET /api/v1/agents/{agent_id}/stats`,
//! `GET /api/v1/agents`, `GET /api/v1/agents/{agent_id}`,
//! `GET /api/v1/agents/{agent_id}/executions`, `GET /api/v1/metrics/execution` and
//! `GET /api/v1/metrics/execution/throughput`.
//!
//! Every route takes its parameters from the query string, checks them all and lists every bad
//! one (unknown names included) in one `400 invalid_parameters`.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Value};
use shadower_actors::domain::ids::AgentId;
use shadower_actors::domain::ingest::FieldError;
use shadower_actors::domain::live::ts_json;
use shadower_actors::domain::timeline::{parse_tz, Granularity, Timeline};
use shadower_actors::domain::window::Window;
use shadower_actors::messages::{GetExecution, GetResources};
use shadower_actors::store::history::{
    agent_known, agent_seen, executions as read_executions, kind, kind_series, known_agents,
    run_series, run_totals, snapshot, Execution, ExecutionQuery, KindRow, RunParts, RunTotals,
    Split,
};

use crate::alerts::{authorize, store_error};
use crate::auth::{Principal, Scope};
use crate::cache;
use crate::error::ApiError;
use crate::AppState;

/// `[analytics]`: limits of the history routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Most buckets a series may have; a granularity that would give more is a 400.
    pub max_points: usize,
}

/// The query string of a history route: each name once, only the route's names.
pub(crate) struct Params {
    values: HashMap<String, String>,
    bad: Vec<FieldError>,
}

impl Params {
    pub(crate) fn new(req: &HttpRequest, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?
            .into_inner();
        let mut params = Self {
            values: HashMap::new(),
            bad: Vec::new(),
        };
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                let message = format!("is not a parameter of this route ({})", allowed.join(", "));
                params.fail(&name, message);
            } else if params.values.insert(name.clone(), value).is_some() {
                params.fail(&name, "is given more than once".into());
            }
        }
        Ok(params)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub(crate) fn fail(&mut self, field: &str, message: String) {
        if !self.bad.iter().any(|b| b.field == field) {
            self.bad.push(FieldError {
                index: 0,
                field: field.into(),
                message,
            });
        }
    }

    /// `workspace_id`, required.
    pub(crate) fn workspace(&mut self) -> String {
        match self.get("workspace_id") {
            Some(w) => w.to_owned(),
            None => {
                self.fail("workspace_id", "is required".into());
                String::new()
            }
        }
    }

    /// The range: `timeframe` (ending now) or `from`/`to` (RFC 3339); 24 hours when neither.
    pub(crate) fn range(
        &mut self,
        now: DateTime<Utc>,
        retention: Duration,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let time = |params: &mut Self, field: &str| {
            let text = params.get(field)?.to_owned();
            match DateTime::parse_from_rfc3339(&text) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    params.fail(
                        field,
                        format!("must be an RFC 3339 time with an offset ({e})"),
                    );
                    None
                }
            }
        };
        let (from, to) = (time(self, "from"), time(self, "to"));
        let given = |p: &Self, f: &str| p.get(f).is_some();
        let range = match (
            self.get("timeframe").map(str::to_owned),
            given(self, "from"),
            given(self, "to"),
        ) {
            (Some(_), true, _) | (Some(_), _, true) => {
                self.fail(
                    "timeframe",
                    "give either timeframe or from/to, not both".into(),
                );
                None
            }
            (Some(tf), false, false) => match TIMEFRAMES.iter().find(|(name, _)| *name == tf) {
                Some((_, hours)) => Some((now - Duration::hours(*hours), now)),
                None => {
                    self.fail(
                        "timeframe",
                        "must be one of 1h, 24h, 7d, 30d, 90d, 1y".into(),
                    );
                    None
                }
            },
            (None, true, false) | (None, false, true) => {
                let missing = if given(self, "from") { "to" } else { "from" };
                self.fail(missing, "from and to go together".into());
                None
            }
            (None, true, true) => from.zip(to),
            (None, false, false) => Some((now - Duration::hours(24), now)),
        }?;
        if range.0 >= range.1 {
            self.fail("from", "must be before to".into());
            return None;
        }
        if range.0 < now - retention {
            self.fail(
                "from",
                format!(
                    "is past retention.rollups ({} days): nothing that old is kept",
                    retention.num_days()
                ),
            );
            return None;
        }
        if range.1 > now + MAX_AHEAD {
            self.fail(
                "to",
                "is more than a day ahead: no event can be stored that late".into(),
            );
            return None;
        }
        Some(range)
    }

    /// Rollup reads count the partial hours of a range from raw rows, which are kept only
    /// `retention.raw`: past it a range must cut no hour. A `timeframe` then starts on the
    /// hour; a `from` or `to` that cuts one is refused.
    pub(crate) fn whole_hours_past_raw(
        &mut self,
        range: Option<(DateTime<Utc>, DateTime<Utc>)>,
        raw: Duration,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let (from, to) = range?;
        let cutoff = Utc::now() - raw;
        let message = format!(
            "is older than retention.raw ({} days) and not on a whole hour: the raw rows of \
             that hour are gone, so only whole hours can be counted there",
            raw.num_days()
        );
        let from = match cuts_hour_past(from, cutoff) {
            Some(hour) if self.get("from").is_none() => hour,
            Some(_) => {
                self.fail("from", message);
                return None;
            }
            None => from,
        };
        if cuts_hour_past(to, cutoff).is_some() {
            self.fail("to", message);
            return None;
        }
        Some((from, to))
    }

    /// `tz` (IANA name, default UTC).
    pub(crate) fn tz(&mut self) -> Tz {
        let Some(name) = self.get("tz").map(str::to_owned) else {
            return chrono_tz::UTC;
        };
        parse_tz(&name).unwrap_or_else(|| {
            let message = format!("{name:?} is not an IANA time zone name (e.g. Europe/Paris)");
            self.fail("tz", message);
            chrono_tz::UTC
        })
    }

    /// `granularity` (default from the range), refused past `max_points` buckets.
    pub(crate) fn granularity(
        &mut self,
        range: Option<(DateTime<Utc>, DateTime<Utc>)>,
        max_points: usize,
    ) -> Granularity {
        let asked = self.get("granularity").map(str::to_owned);
        let granularity = match asked.as_deref().map(Granularity::parse) {
            Some(Some(g)) => g,
            Some(None) => {
                let message = format!("must be one of {}", Granularity::NAMES);
                self.fail("granularity", message);
                return Granularity::Hour;
            }
            None => range.map_or(Granularity::Hour, |(f, t)| Granularity::for_range(f, t)),
        };
        if let Some((from, to)) = range {
            let points = granularity.max_points(from, to);
            if points > max_points as i64 {
                self.fail(
                    "granularity",
                    format!(
                        "{} over this range gives up to {points} points, more than analytics.max_points ({max_points})",
                        granularity.name()
                    ),
                );
            }
        }
        granularity
    }

    /// An optional agent id.
    pub(crate) fn agent(&mut self, field: &str) -> Option<AgentId> {
        let text = self.get(field)?.to_owned();
        match AgentId::parse(&text) {
            Ok(a) => Some(a),
            Err(e) => {
                self.fail(field, e.to_string());
                None
            }
        }
    }

    /// `value` when no parameter was bad, else every problem found as one error.
    pub(crate) fn finish<T>(mut self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(v) if self.bad.is_empty() => Ok(v),
            _ => {
                if self.bad.is_empty() {
                    self.fail("timeframe", "no range could be read".into());
                }
                Err(ApiError::InvalidParams {
                    message: format!("{} invalid parameter(s)", self.bad.len()),
                    details: self.bad,
                })
            }
        }
    }
}

/// A 400 `invalid_parameters` naming one parameter.
pub(crate) fn invalid_parameter(field: &str, message: String) -> ApiError {
    ApiError::InvalidParams {
        message: "1 invalid parameter(s)".into(),
        details: vec![FieldError {
            index: 0,
            field: field.into(),
            message,
        }],
    }
}

/// The start of `t`'s hour when `t` is older than `cutoff` and not on a whole hour.
pub(crate) fn cuts_hour_past(t: DateTime<Utc>, cutoff: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let hour = t.duration_trunc(Duration::hours(1)).ok()?;
    (t < cutoff && hour != t).then_some(hour)
}

/// How far past now a range may end: events are refused past `ingest.max_future` anyway, and
/// a bound keeps a read's work in proportion to retention.
pub(crate) const MAX_AHEAD: Duration = Duration::days(1);

const TIMEFRAMES: [(&str, i64); 6] = [
    ("1h", 1),
    ("24h", 24),
    ("7d", 7 * 24),
    ("30d", 30 * 24),
    ("90d", 90 * 24),
    ("1y", 365 * 24),
];

pub(crate) const RANGE: [&str; 4] = ["workspace_id", "timeframe", "from", "to"];
pub(crate) const SERIES: [&str; 7] = [
    "workspace_id",
    "timeframe",
    "from",
    "to",
    "tz",
    "granularity",
    "agent_id",
];

/// A checked series request.
pub(crate) struct SeriesQuery {
    pub(crate) workspace: String,
    pub(crate) agent: Option<AgentId>,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) granularity: Granularity,
    pub(crate) tz: Tz,
}

impl SeriesQuery {
    pub(crate) fn parse(
        req: &HttpRequest,
        state: &AppState,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        Self::parse_with(req, state, allowed, |_| ()).map(|(q, ())| q)
    }

    /// [`SeriesQuery::parse`] that also reads the route's own parameters with `extra`, in
    /// the same pass, so their problems are listed with the others.
    pub(crate) fn parse_with<T>(
        req: &HttpRequest,
        state: &AppState,
        allowed: &[&str],
        extra: impl FnOnce(&mut Params) -> T,
    ) -> Result<(Self, T), ApiError> {
        let mut p = Params::new(req, allowed)?;
        let workspace = p.workspace();
        let range = p.range(Utc::now(), state.retention_rollups);
        let range = p.whole_hours_past_raw(range, state.retention_raw);
        let tz = p.tz();
        let granularity = p.granularity(range, state.analytics.max_points);
        // A zone whose days do not start on a UTC hour cuts hours, which past retention.raw
        // cannot be split between its buckets.
        if let (Some((from, to)), true) =
            (range, p.bad.is_empty() && granularity != Granularity::Hour)
        {
            let cutoff = Utc::now() - state.retention_raw;
            let timeline = Timeline::new(from, to, granularity, tz);
            let inner = &timeline.bounds[1..timeline.bounds.len() - 1];
            if inner.iter().any(|b| cuts_hour_past(*b, cutoff).is_some()) {
                p.fail(
                    "tz",
                    format!(
                        "{} starts its {}s off the hour, and their boundaries older than retention.raw cannot be counted exactly; use a range within {} days or granularity=hour",
                        tz.name(),
                        granularity.name(),
                        state.retention_raw.num_days()
                    ),
                );
            }
        }
        let agent = p.agent("agent_id");
        let own = extra(&mut p);
        let (from, to) = p.finish(range)?;
        let q = Self {
            workspace,
            agent,
            from,
            to,
            granularity,
            tz,
        };
        Ok((q, own))
    }

    pub(crate) fn timeline(&self) -> Timeline {
        Timeline::new(self.from, self.to, self.granularity, self.tz)
    }

    pub(crate) fn head(&self, ws: &str) -> serde_json::Map<String, Value> {
        let mut head = serde_json::Map::new();
        head.insert("workspace_id".into(), json!(ws));
        head.insert(
            "agent_id".into(),
            json!(self.agent.as_ref().map(|a| a.as_str())),
        );
        head.insert("from".into(), json!(ts_json(self.from)));
        head.insert("to".into(), json!(ts_json(self.to)));
        head.insert("granularity".into(), json!(self.granularity.name()));
        head.insert("tz".into(), json!(self.tz.name()));
        head
    }
}

/// A pooled connection for history reads.
pub(crate) async fn client(state: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    state
        .query_pool
        .get()
        .await
        .map_err(|e| store_error(e.into()))
}

/// 404 for an agent the workspace has no record of, when the answer found nothing.
pub(crate) async fn known_or_404(
    client: &deadpool_postgres::Object,
    ws: &str,
    agent: &str,
    runs: i64,
) -> Result<(), ApiError> {
    if runs == 0 && !agent_known(client, ws, agent).await.map_err(store_error)? {
        return Err(ApiError::NotFound(format!(
            "agent {agent} has sent nothing to workspace {ws} within retention"
        )));
    }
    Ok(())
}

pub(crate) fn answer(body: Value, decision: &crate::ratelimit::Decision) -> HttpResponse {
    let mut res = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .json(body);
    decision.annotate(&mut res);
    res
}

/// `GET /api/v1/agents/{agent_id}/stats`: an agent's runs over a range.
pub async fn agent_stats(
    req: HttpRequest,
    path: web::Path<String>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut p = Params::new(&req, &RANGE)?;
    let workspace = p.workspace();
    let range = p.range(Utc::now(), state.retention_rollups);
    let range = p.whole_hours_past_raw(range, state.retention_raw);
    let (from, to) = p.finish(range)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), from, to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let agent = crate::live::agent(&path)?;
    let mut client = client(&state).await?;
    let t = run_totals(&mut client, ws.as_str(), agent.as_str(), from, to)
        .await
        .map_err(store_error)?;
    known_or_404(&client, ws.as_str(), agent.as_str(), t.runs).await?;
    let mut body = json!({
        "workspace_id": ws.as_str(),
        "agent_id": agent.as_str(),
        "from": ts_json(from),
        "to": ts_json(to),
    });
    merge(&mut body, runs_json(&t));
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// `GET /api/v1/metrics/execution`: the runs of the workspace (or of `agent_id`) over a
/// range, in total and per bucket, with runtime percentiles and distinct users.
pub async fn execution(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = SeriesQuery::parse(&req, &state, &SERIES)?;
    let (ws, decision) = authorize(&principal, &state, &q.workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), q.from, q.to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let agent = q.agent.as_ref().map_or("", |a| a.as_str());
    let (whole, timeline) = (Timeline::whole(q.from, q.to), q.timeline());
    let mut client = client(&state).await?;
    let tx = snapshot(&mut client).await.map_err(store_error)?;
    let (mut total, series) = tokio::try_join!(
        run_series(&tx, ws.as_str(), agent, &whole, RunParts::ALL),
        run_series(&tx, ws.as_str(), agent, &timeline, RunParts::ALL),
    )
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let total = total.pop().unwrap_or_default();
    if !agent.is_empty() {
        known_or_404(&client, ws.as_str(), agent, total.runs).await?;
    }
    let mut body = Value::Object(q.head(ws.as_str()));
    body["totals"] = runs_json(&total);
    body["series"] = timeline
        .starts
        .iter()
        .zip(&series)
        .map(|(start, t)| {
            let mut point = json!({"ts": ts_json(*start)});
            merge(&mut point, runs_json(t));
            point
        })
        .collect();
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// `GET /api/v1/metrics/execution/throughput`: runs per bucket and per minute, and the peak.
pub async fn throughput(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = SeriesQuery::parse(&req, &state, &SERIES)?;
    let (ws, decision) = authorize(&principal, &state, &q.workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), q.from, q.to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let agent = q.agent.as_ref().map_or("", |a| a.as_str());
    let timeline = q.timeline();
    let mut client = client(&state).await?;
    let tx = snapshot(&mut client).await.map_err(store_error)?;
    let series = run_series(&tx, ws.as_str(), agent, &timeline, RunParts::SUMS)
        .await
        .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let runs: i64 = series.iter().map(|t| t.runs).sum();
    if !agent.is_empty() {
        known_or_404(&client, ws.as_str(), agent, runs).await?;
    }
    // Rates over the part of each bucket inside the range.
    let minutes = |i: usize| {
        (timeline.bounds[i + 1] - timeline.bounds[i]).num_milliseconds() as f64 / 60_000.0
    };
    let points: Vec<Value> = series
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "ts": ts_json(timeline.starts[i]),
                "runs": t.runs,
                "per_minute": t.runs as f64 / minutes(i),
            })
        })
        .collect();
    let peak = series
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| {
            (a.runs as f64 / minutes(*i)).total_cmp(&(b.runs as f64 / minutes(*j)))
        })
        .filter(|(_, t)| t.runs > 0)
        .map(|(i, _)| points[i].clone());
    let total_minutes = (q.to - q.from).num_milliseconds() as f64 / 60_000.0;
    let mut body = Value::Object(q.head(ws.as_str()));
    body["runs"] = json!(runs);
    body["per_minute"] = json!(runs as f64 / total_minutes);
    body["per_hour"] = json!(runs as f64 / total_minutes * 60.0);
    body["peak"] = json!(peak);
    body["series"] = json!(points);
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

const EXECUTIONS: [&str; 9] = [
    "workspace_id",
    "timeframe",
    "from",
    "to",
    "status",
    "model",
    "user_id",
    "limit",
    "cursor",
];

const STATUSES: [&str; 4] = ["succeeded", "failed", "timeout", "cancelled"];

/// Most runs on one page of executions, and the default.
const MAX_PAGE: i64 = 500;
const DEFAULT_PAGE: i64 = 50;

/// A page cursor: a position, made opaque.
fn seal_cursor(position: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

/// The position of a cursor [`seal_cursor`] made, if `text` is one.
fn open_cursor(text: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The cursor of the page after the one that ends with `last`.
fn cursor_of(last: &Execution) -> String {
    seal_cursor(&format!(
        "{}:{}",
        last.completed_at.timestamp_micros(),
        last.event_id
    ))
}

fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, String)> {
    let text = open_cursor(text)?;
    let (micros, event) = text.split_once(':')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    shadower_actors::domain::ids::EventId::parse(event).ok()?;
    Some((at, event.to_owned()))
}

/// `GET /api/v1/agents/{agent_id}/executions`: the agent's runs, newest first, a page at a
/// time (`limit`, default 50, at most 500; `cursor` from the previous page's `next_cursor`),
/// filtered by range, `status` (comma-separated), `model` and `user_id`.
pub async fn executions(
    req: HttpRequest,
    path: web::Path<String>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut p = Params::new(&req, &EXECUTIONS)?;
    let workspace = p.workspace();
    let range = p.range(Utc::now(), state.retention_rollups);
    let statuses: Vec<String> = match p.get("status").map(str::to_owned) {
        None => Vec::new(),
        Some(list) => {
            let statuses: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            if statuses.iter().any(|s| !STATUSES.contains(&s.as_str())) {
                let message = format!("each status must be one of {}", STATUSES.join(", "));
                p.fail("status", message);
            }
            statuses
        }
    };
    let text = |p: &mut Params, field: &str| {
        let value = p.get(field)?.to_owned();
        if value.is_empty() || value.len() > 256 || value.contains('\0') {
            p.fail(field, "must be 1 to 256 bytes without NUL".into());
        }
        Some(value)
    };
    let (model, user) = (text(&mut p, "model"), text(&mut p, "user_id"));
    let limit = match p.get("limit").map(str::parse::<i64>) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            p.fail(
                "limit",
                format!("must be a whole number from 1 to {MAX_PAGE}"),
            );
            DEFAULT_PAGE
        }
    };
    let cursor = match p.get("cursor").map(str::to_owned) {
        None => None,
        Some(text) => {
            let cursor = parse_cursor(&text);
            if cursor.is_none() {
                p.fail("cursor", "is not a cursor this route gave".into());
            }
            cursor
        }
    };
    let (from, to) = p.finish(range)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let agent = crate::live::agent(&path)?;
    let client = client(&state).await?;
    let query = ExecutionQuery {
        from,
        to,
        statuses: statuses.iter().map(String::as_str).collect(),
        model: model.as_deref(),
        user: user.as_deref(),
        before: cursor.as_ref().map(|(at, id)| (*at, id.as_str())),
        limit: limit + 1,
    };
    let mut page = read_executions(&client, ws.as_str(), agent.as_str(), &query)
        .await
        .map_err(store_error)?;
    if page.is_empty() && cursor.is_none() {
        known_or_404(&client, ws.as_str(), agent.as_str(), 0).await?;
    }
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let next = more.then(|| page.last().map(cursor_of)).flatten();
    let body = json!({
        "workspace_id": ws.as_str(),
        "agent_id": agent.as_str(),
        "from": ts_json(from),
        "to": ts_json(to),
        "executions": page.iter().map(execution_json).collect::<Vec<_>>(),
        "next_cursor": next,
    });
    Ok(answer(body, &decision))
}

fn execution_json(e: &Execution) -> Value {
    json!({
        "event_id": e.event_id,
        "run_id": e.run_id,
        "user_id": e.user_id,
        "status": e.status,
        "started_at": e.started_at.map(ts_json),
        "completed_at": ts_json(e.completed_at),
        "runtime_ms": e.runtime_ms,
        "credits": e.credits,
        "tokens_in": e.tokens_in,
        "tokens_out": e.tokens_out,
        "model": e.model,
        "error": e.error.as_ref().map(|err| json!({
            "type": err.error_type,
            "category": err.category,
            "severity": err.severity,
            "message": err.message,
        })),
    })
}

const AGENTS: [&str; 9] = [
    "workspace_id",
    "timeframe",
    "from",
    "to",
    "q",
    "sort",
    "order",
    "limit",
    "cursor",
];

/// What `GET /agents` sorts by.
const SORTS: [&str; 8] = [
    "runs",
    "success_rate",
    "error_rate",
    "credits",
    "avg_runtime_ms",
    "tokens",
    "last_active",
    "agent_id",
];

/// One row of the agents list: the agent, its figures over the range, the sort key.
struct AgentRow {
    agent_id: String,
    first_hour: DateTime<Utc>,
    last_hour: DateTime<Utc>,
    runs: RunTotals,
    key: Option<f64>,
}

fn sort_key(sort: &str, row: &AgentRow) -> Option<f64> {
    let t = &row.runs;
    let decided = (t.succeeded + t.failed + t.timeout) as f64;
    match sort {
        "runs" => Some(t.runs as f64),
        "success_rate" => (decided > 0.0).then(|| t.succeeded as f64 / decided),
        "error_rate" => (decided > 0.0).then(|| (t.failed + t.timeout) as f64 / decided),
        "credits" => Some(t.credits_micro as f64),
        "avg_runtime_ms" => (t.runs > 0).then(|| t.runtime_us as f64 / t.runs as f64),
        "tokens" => Some((t.tokens_in + t.tokens_out) as f64),
        "last_active" => Some(row.last_hour.timestamp() as f64),
        _ => None,
    }
}

/// The list's order: by key (`None`, an undefined rate, always last), then by agent id
/// (ascending, unless the sort is by id itself).
fn list_order(
    by_id: bool,
    descending: bool,
    a: (Option<f64>, &str),
    b: (Option<f64>, &str),
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let by_key = match (a.0, b.0) {
        (Some(x), Some(y)) if descending => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let by_agent = if by_id && descending {
        b.1.cmp(a.1)
    } else {
        a.1.cmp(b.1)
    };
    by_key.then(by_agent)
}

fn list_cursor(sort: &str, descending: bool, row: &AgentRow) -> String {
    let key = row.key.map_or(String::new(), |k| k.to_string());
    seal_cursor(&format!(
        "{sort}|{}|{key}|{}",
        u8::from(descending),
        row.agent_id
    ))
}

/// A list cursor's position, if it was made for this sort and order.
fn parse_list_cursor(text: &str, sort: &str, descending: bool) -> Option<(Option<f64>, String)> {
    let text = open_cursor(text)?;
    let mut parts = text.splitn(4, '|');
    let (s, d, key, agent) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if s != sort || d != (u8::from(descending)).to_string() {
        return None;
    }
    let key = if key.is_empty() {
        None
    } else {
        Some(key.parse::<f64>().ok()?)
    };
    Some((key, agent.to_owned()))
}

/// `GET /api/v1/agents`: every agent the workspace heard from within retention, with its
/// figures over the range (zeros when it ran nothing in it), filtered by `q` (a substring of
/// the id, any case), sorted (`sort`, `order`) and a page at a time (`limit`, `cursor`).
pub async fn list_agents(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut p = Params::new(&req, &AGENTS)?;
    let workspace = p.workspace();
    let range = p.range(Utc::now(), state.retention_rollups);
    let range = p.whole_hours_past_raw(range, state.retention_raw);
    let sort = p.get("sort").unwrap_or("runs").to_owned();
    if !SORTS.contains(&sort.as_str()) {
        p.fail("sort", format!("must be one of {}", SORTS.join(", ")));
    }
    let descending = match p.get("order") {
        None => sort != "agent_id",
        Some("desc") => true,
        Some("asc") => false,
        Some(_) => {
            p.fail("order", "must be asc or desc".into());
            true
        }
    };
    let needle = p.get("q").map(str::to_lowercase);
    if needle.as_ref().is_some_and(|n| n.len() > 128) {
        p.fail("q", "must be at most 128 bytes".into());
    }
    let limit = match p.get("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            p.fail("limit", "must be a whole number from 1 to 1000".into());
            100
        }
    };
    let after = match p.get("cursor").map(str::to_owned) {
        None => None,
        Some(text) => {
            let at = parse_list_cursor(&text, &sort, descending);
            if at.is_none() {
                p.fail(
                    "cursor",
                    "is not a cursor this route gave for this sort and order".into(),
                );
            }
            at
        }
    };
    let (from, to) = p.finish(range)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut client = client(&state).await?;
    let tx = snapshot(&mut client).await.map_err(store_error)?;
    let whole = Timeline::whole(from, to);
    let split = Split {
        agents: true,
        keys: false,
    };
    let (known, sums) = tokio::try_join!(
        known_agents(&tx, ws.as_str()),
        kind_series(&tx, kind("runs"), ws.as_str(), "", &whole, split),
    )
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let mut figures: HashMap<String, KindRow> = sums
        .into_iter()
        .filter_map(|row| Some((row.keys.first()?.clone(), row)))
        .collect();
    let mut rows: Vec<AgentRow> = known
        .into_iter()
        .filter(|a| {
            needle
                .as_ref()
                .is_none_or(|n| a.agent_id.to_lowercase().contains(n.as_str()))
        })
        .map(|a| {
            let runs = figures
                .remove(&a.agent_id)
                .map(|row| RunTotals::from_sums(&row))
                .unwrap_or_default();
            let mut row = AgentRow {
                agent_id: a.agent_id,
                first_hour: a.first_hour,
                last_hour: a.last_hour,
                runs,
                key: None,
            };
            row.key = sort_key(&sort, &row);
            row
        })
        .collect();
    let by_id = sort == "agent_id";
    rows.sort_by(|a, b| {
        list_order(
            by_id,
            descending,
            (a.key, &a.agent_id),
            (b.key, &b.agent_id),
        )
    });
    let total = rows.len();
    let start = after.as_ref().map_or(0, |(key, agent)| {
        rows.partition_point(|r| {
            list_order(by_id, descending, (r.key, &r.agent_id), (*key, agent))
                != std::cmp::Ordering::Greater
        })
    });
    let page: Vec<&AgentRow> = rows.iter().skip(start).take(limit).collect();
    let next = (start + page.len() < total)
        .then(|| page.last().map(|r| list_cursor(&sort, descending, r)))
        .flatten();
    // Liveness from memory, for the agents that sent a heartbeat in the last 24 hours.
    let live = state
        .registry
        .ask(
            &ws,
            GetResources {
                agent: None,
                window: Window::M5,
            },
            crate::live::timeout(&state),
        )
        .await
        .unwrap_or_default();
    let agents: Vec<Value> = page
        .iter()
        .map(|r| {
            let mut item = json!({
                "agent_id": r.agent_id,
                "first_active_hour": ts_json(r.first_hour),
                "last_active_hour": ts_json(r.last_hour),
            });
            merge(&mut item, runs_json(&r.runs));
            if let Some(obj) = item.as_object_mut() {
                obj.remove("users");
                if let Some(rt) = obj.get_mut("runtime_ms").and_then(Value::as_object_mut) {
                    rt.retain(|k, _| k == "avg");
                }
            }
            let liveness = AgentId::parse(&r.agent_id)
                .ok()
                .and_then(|id| live.get(&id))
                .map(|v| json!({"state": v.state, "last_heartbeat": v.last_seen}));
            item["liveness"] = json!(liveness);
            item
        })
        .collect();
    let body = json!({
        "workspace_id": ws.as_str(),
        "from": ts_json(from),
        "to": ts_json(to),
        "sort": sort,
        "order": if descending { "desc" } else { "asc" },
        "total": total,
        "agents": agents,
        "next_cursor": next,
    });
    Ok(answer(body, &decision))
}

/// `GET /api/v1/agents/{agent_id}`: when the agent was first and last heard from, the models
/// it used over the range (default 30 days) and its live state (the last 5 minutes).
pub async fn get_agent(
    req: HttpRequest,
    path: web::Path<String>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut p = Params::new(&req, &RANGE)?;
    let workspace = p.workspace();
    let now = Utc::now();
    let range = if p.get("timeframe").is_none() && p.get("from").is_none() && p.get("to").is_none()
    {
        Some((now - Duration::days(30), now))
    } else {
        let range = p.range(now, state.retention_rollups);
        p.whole_hours_past_raw(range, state.retention_raw)
    };
    let (from, to) = p.finish(range)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let agent = crate::live::agent(&path)?;
    let mut client = client(&state).await?;
    let tx = snapshot(&mut client).await.map_err(store_error)?;
    let whole = Timeline::whole(from, to);
    let by_model = Split {
        agents: false,
        keys: true,
    };
    let (seen, models) = tokio::try_join!(
        agent_seen(&tx, ws.as_str(), agent.as_str()),
        kind_series(
            &tx,
            kind("models"),
            ws.as_str(),
            agent.as_str(),
            &whole,
            by_model
        ),
    )
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let Some((first_seen, last_seen)) = seen else {
        return Err(ApiError::NotFound(format!(
            "agent {agent} has sent nothing to workspace {ws} within retention"
        )));
    };
    let timeout = crate::live::timeout(&state);
    let execution = state
        .registry
        .ask(
            &ws,
            GetExecution {
                agent: Some(agent.clone()),
                window: Window::M5,
            },
            timeout,
        )
        .await
        .map_err(crate::live::unavailable)?;
    let mut resources = state
        .registry
        .ask(
            &ws,
            GetResources {
                agent: Some(agent.clone()),
                window: Window::M5,
            },
            timeout,
        )
        .await
        .map_err(crate::live::unavailable)?;
    let models: Vec<Value> = by_runs(&models)
        .into_iter()
        .map(|m| {
            let mut item = model_json(m);
            let runs = m.int("runs") as i64;
            item["avg_runtime_ms"] =
                json!((runs > 0).then(|| m.int("runtime_us") as f64 / 1000.0 / runs as f64));
            item
        })
        .collect();
    let body = json!({
        "workspace_id": ws.as_str(),
        "agent_id": agent.as_str(),
        "first_seen": ts_json(first_seen),
        "last_seen": ts_json(last_seen),
        "from": ts_json(from),
        "to": ts_json(to),
        "models": models,
        "live": {
            "execution": execution,
            "resources": resources.remove(&agent),
        },
    });
    Ok(answer(body, &decision))
}

pub(crate) fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// Change from `before` to `now` in per cent; `None` from zero.
pub(crate) fn change_pct(now: f64, before: f64) -> Option<f64> {
    (before != 0.0).then(|| (now - before) / before.abs() * 100.0)
}

/// `n` runs over those that ended (as the live windows: cancelled ones left out).
pub(crate) fn rate(t: &RunTotals, n: i64) -> Option<f64> {
    let decided = t.succeeded + t.failed + t.timeout;
    (decided > 0).then(|| n as f64 / decided as f64)
}

/// Credits of every run per successful one.
pub(crate) fn cost_per_success(t: &RunTotals) -> Option<f64> {
    (t.succeeded > 0).then(|| t.credits_micro as f64 / 1e6 / t.succeeded as f64)
}

/// Rows of the models kind, most runs first (ties by model).
pub(crate) fn by_runs(rows: &[KindRow]) -> Vec<&KindRow> {
    let mut rows: Vec<&KindRow> = rows.iter().collect();
    rows.sort_by(|a, b| {
        b.int("runs")
            .cmp(&a.int("runs"))
            .then_with(|| a.keys.cmp(&b.keys))
    });
    rows
}

/// One model's figures (`model` null for runs without one).
pub(crate) fn model_json(m: &KindRow) -> Value {
    let ok = m.int("succeeded") as i64;
    let credits = m.int("credits_micro") as f64 / 1e6;
    json!({
        "model": m.keys.first().filter(|k| !k.is_empty()),
        "runs": m.int("runs") as i64,
        "succeeded": ok,
        "credits": credits,
        "cost_per_success": (ok > 0).then(|| credits / ok as f64),
        "tokens_in": m.int("tokens_in") as i64,
        "tokens_out": m.int("tokens_out") as i64,
    })
}

/// The figures of a [`RunTotals`].
pub(crate) fn runs_json(t: &RunTotals) -> Value {
    let runs = t.runs as f64;
    let credits = t.credits_micro as f64 / 1e6;
    // A sum past an i64 (never seen, but possible over a year) is given as a float.
    let big = |n: i128| i64::try_from(n).map_or_else(|_| json!(n as f64), |n| json!(n));
    json!({
        "runs": t.runs,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "timeout": t.timeout,
        "cancelled": t.cancelled,
        "success_rate": rate(t, t.succeeded),
        "error_rate": rate(t, t.failed + t.timeout),
        "runtime_ms": {
            "avg": (t.runs > 0).then(|| t.runtime_us as f64 / 1000.0 / runs),
            "p50": t.runtime.quantile(0.5),
            "p95": t.runtime.quantile(0.95),
            "p99": t.runtime.quantile(0.99),
            "max": t.runtime.max(),
        },
        "credits": credits,
        "cost_per_success": cost_per_success(t),
        "tokens_in": big(t.tokens_in),
        "tokens_out": big(t.tokens_out),
        "users": {"distinct": t.users.count(), "exact": t.users.is_exact()},
    })
}
