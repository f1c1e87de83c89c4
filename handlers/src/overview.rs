//! Workspace-level history routes (SPEC §8), read from the rollups, exact up to now:
//! `GET /executive/summary`, `/executive/trends`, `/dashboard/summary|metrics|detailed`,
//! `POST /analytics/compare`, `GET /trends`, `GET /leaderboards/agents` and (from the raw rows,
//! within `retention.raw`) `GET /leaderboards/users`.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shadower_actors::domain::live::ts_json;
use shadower_actors::domain::timeline::Timeline;
use shadower_actors::domain::trend::analyze;
use shadower_actors::domain::window::Window;
use shadower_actors::messages::GetExecution;
use shadower_actors::store::history::{
    active_agents, kind, kind_series, run_series, runs_by_agent, snapshot, KindRow, RunParts,
    RunTotals, Split,
};

use crate::alerts::{authorize, store_error};
use crate::auth::{Principal, Scope};
use crate::cache;
use crate::error::ApiError;
use crate::history::{
    answer, by_runs, change_pct, client, cost_per_success, invalid_parameter, known_or_404, merge,
    model_json, rate, runs_json, Params, SeriesQuery, RANGE, SERIES,
};
use crate::AppState;

/// The range of a route that takes only a range.
fn range_only(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(String, DateTime<Utc>, DateTime<Utc>), ApiError> {
    let mut p = Params::new(req, &RANGE)?;
    let workspace = p.workspace();
    let range = p.range(Utc::now(), state.retention_rollups);
    let range = p.whole_hours_past_raw(range, state.retention_raw);
    let (from, to) = p.finish(range)?;
    Ok((workspace, from, to))
}

/// The headline figures of a workspace over a range.
struct Kpis {
    runs: RunTotals,
    active_agents: i64,
    feedback: Option<KindRow>,
    /// Runs per agent, most first (ties by id).
    per_agent: Vec<(String, i64)>,
}

async fn kpis(
    tx: &deadpool_postgres::Transaction<'_>,
    ws: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Kpis, ApiError> {
    let whole = Timeline::whole(from, to);
    let agents = Split {
        agents: true,
        keys: false,
    };
    let (mut runs, per_agent, mut feedback) = tokio::try_join!(
        run_series(tx, ws, "", &whole, RunParts::ALL),
        kind_series(tx, kind("runs"), ws, "", &whole, agents),
        kind_series(tx, kind("feedback"), ws, "", &whole, Split::default()),
    )
    .map_err(store_error)?;
    let mut ranked: Vec<(String, i64)> = per_agent
        .iter()
        .filter(|r| r.int("runs") > 0)
        .filter_map(|r| Some((r.keys.first()?.clone(), r.int("runs") as i64)))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Kpis {
        runs: runs.pop().unwrap_or_default(),
        active_agents: ranked.len() as i64,
        feedback: feedback.pop(),
        per_agent: ranked,
    })
}

impl Kpis {
    fn values(&self) -> Vec<(&'static str, Option<f64>)> {
        let t = &self.runs;
        let rating = self
            .feedback
            .as_ref()
            .filter(|f| f.int("feedback") > 0)
            .map(|f| f.int("rating_sum") as f64 / f.int("feedback") as f64);
        vec![
            ("runs", Some(t.runs as f64)),
            ("success_rate", rate(t, t.succeeded)),
            ("error_rate", rate(t, t.failed + t.timeout)),
            ("credits", Some(t.credits_micro as f64 / 1e6)),
            ("cost_per_success", cost_per_success(t)),
            ("p95_ms", t.runtime.quantile(0.95)),
            ("active_agents", Some(self.active_agents as f64)),
            ("active_users", Some(t.users.count() as f64)),
            ("tokens", Some((t.tokens_in + t.tokens_out) as f64)),
            ("average_rating", rating),
        ]
    }
}

/// The `n` agents with the most runs (ties by id).
pub(crate) fn leading_agents(mut agents: Vec<(String, RunTotals)>, n: usize) -> Value {
    agents.sort_by(|a, b| b.1.runs.cmp(&a.1.runs).then_with(|| a.0.cmp(&b.0)));
    agents
        .iter()
        .take(n)
        .map(|(id, t)| {
            json!({
                "agent_id": id,
                "runs": t.runs,
                "success_rate": rate(t, t.succeeded),
                "credits": t.credits_micro as f64 / 1e6,
            })
        })
        .collect()
}

/// `GET /api/v1/executive/summary`: the workspace's headline figures over the range, each
/// against the period of the same length before, and its leading agents.
pub async fn executive_summary(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (workspace, from, to) = range_only(&req, &state)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    // The answer reads the period before too: a late event there must invalidate it.
    let mut key = cache::history::Key::new(&req, ws.as_str(), from - (to - from), to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let (prev_from, prev_to) = (from - (to - from), from);
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let (now, before) = tokio::try_join!(
        kpis(&tx, ws.as_str(), from, to),
        kpis(&tx, ws.as_str(), prev_from, prev_to),
    )?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let kpis: serde_json::Map<String, Value> = now
        .values()
        .into_iter()
        .zip(before.values())
        .map(|((name, n), (_, b))| {
            let change = n.zip(b).and_then(|(n, b)| change_pct(n, b));
            (
                name.to_owned(),
                json!({"current": n, "previous": b, "change_pct": change}),
            )
        })
        .collect();
    let body = json!({
        "workspace_id": ws.as_str(),
        "from": ts_json(from),
        "to": ts_json(to),
        "previous_period": {"from": ts_json(prev_from), "to": ts_json(prev_to)},
        "kpis": kpis,
        "top_agents": now.per_agent.iter().take(5).map(|(id, runs)| json!({"agent_id": id, "runs": runs})).collect::<Vec<_>>(),
    });
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

const TREND_METRICS: [&str; 5] = [
    "runs",
    "success_rate",
    "credits",
    "active_agents",
    "active_users",
];

/// Per bucket: runs, success rate, credits, active agents, active users.
async fn bucket_metrics(
    tx: &deadpool_postgres::Transaction<'_>,
    ws: &str,
    timeline: &Timeline,
) -> Result<Vec<[Option<f64>; 5]>, ApiError> {
    let parts = RunParts {
        sketch: false,
        users: true,
    };
    let (runs, active) = tokio::try_join!(
        run_series(tx, ws, "", timeline, parts),
        active_agents(tx, ws, timeline),
    )
    .map_err(store_error)?;
    Ok(runs
        .iter()
        .zip(active)
        .map(|(t, a)| {
            [
                Some(t.runs as f64),
                rate(t, t.succeeded),
                Some(t.credits_micro as f64 / 1e6),
                Some(a as f64),
                Some(t.users.count() as f64),
            ]
        })
        .collect())
}

/// `GET /api/v1/executive/trends`: runs, success rate, credits, active agents and active
/// users per bucket, each against the same bucket of the period before, with the change in %.
/// `metrics` (comma-separated) picks some of them.
pub async fn executive_trends(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut allowed = SERIES.to_vec();
    allowed.retain(|p| *p != "agent_id");
    allowed.push("metrics");
    let (q, wanted) = SeriesQuery::parse_with(&req, &state, &allowed, |p| {
        let Some(list) = p.get("metrics").map(str::to_owned) else {
            return TREND_METRICS.iter().map(|m| m.to_string()).collect();
        };
        let wanted: Vec<String> = list.split(',').map(|m| m.trim().to_owned()).collect();
        if let Some(bad) = wanted.iter().find(|m| !TREND_METRICS.contains(&m.as_str())) {
            let message = format!("{bad:?} is not one of {}", TREND_METRICS.join(", "));
            p.fail("metrics", message);
        }
        wanted
    })?;
    let (ws, decision) = authorize(&principal, &state, &q.workspace, Scope::Read).await?;
    // The answer reads the period before too: a late event there must invalidate it.
    let mut key = cache::history::Key::new(&req, ws.as_str(), q.from - (q.to - q.from), q.to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let span = q.to - q.from;
    let timeline = q.timeline();
    let previous = Timeline::new(q.from - span, q.from, q.granularity, q.tz);
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let (now, before, totals_now, totals_before) = tokio::try_join!(
        bucket_metrics(&tx, ws.as_str(), &timeline),
        bucket_metrics(&tx, ws.as_str(), &previous),
        kpis(&tx, ws.as_str(), q.from, q.to),
        kpis(&tx, ws.as_str(), q.from - span, q.from),
    )?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let total = |k: &Kpis, m: &str| k.values().into_iter().find(|(n, _)| *n == m)?.1;
    let mut metrics = serde_json::Map::new();
    for (i, name) in TREND_METRICS.iter().enumerate() {
        if !wanted.iter().any(|w| w == name) {
            continue;
        }
        let series: Vec<Value> = timeline
            .starts
            .iter()
            .enumerate()
            .map(|(b, start)| {
                let v = now[b][i];
                let p = before.get(b).and_then(|row| row[i]);
                json!({"ts": ts_json(*start), "value": v, "previous_value": p,
                       "change_pct": v.zip(p).and_then(|(v, p)| change_pct(v, p))})
            })
            .collect();
        let (c, p) = (total(&totals_now, name), total(&totals_before, name));
        metrics.insert(
            name.to_string(),
            json!({"current": c, "previous": p,
                   "change_pct": c.zip(p).and_then(|(c, p)| change_pct(c, p)),
                   "series": series}),
        );
    }
    let mut body = Value::Object(q.head(ws.as_str()));
    if let Some(b) = body.as_object_mut() {
        b.remove("agent_id");
    }
    body["previous_period"] = json!({"from": ts_json(q.from - span), "to": ts_json(q.from)});
    body["metrics"] = Value::Object(metrics);
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// `GET /api/v1/dashboard/summary`: the headline figures over the range and the workspace's
/// live state (the last 5 minutes, from memory).
pub async fn dashboard_summary(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (workspace, from, to) = range_only(&req, &state)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let k = kpis(&tx, ws.as_str(), from, to).await?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let live = state
        .registry
        .ask(
            &ws,
            GetExecution {
                agent: None,
                window: Window::M5,
            },
            crate::live::timeout(&state),
        )
        .await
        .map_err(crate::live::unavailable)?;
    let kpis: serde_json::Map<String, Value> = k
        .values()
        .into_iter()
        .map(|(n, v)| (n.to_owned(), json!(v)))
        .collect();
    let body = json!({
        "workspace_id": ws.as_str(),
        "from": ts_json(from),
        "to": ts_json(to),
        "kpis": kpis,
        "live": live,
    });
    Ok(answer(body, &decision))
}

/// `GET /api/v1/dashboard/metrics`: the dashboard's series (runs, rates, p95, credits, tokens,
/// active users) per bucket, for the workspace or `agent_id`.
pub async fn dashboard_metrics(
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
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let series = run_series(&tx, ws.as_str(), agent, &timeline, RunParts::ALL)
        .await
        .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    if !agent.is_empty() {
        known_or_404(
            &conn,
            ws.as_str(),
            agent,
            series.iter().map(|t| t.runs).sum(),
        )
        .await?;
    }
    let points: Vec<Value> = timeline
        .starts
        .iter()
        .zip(&series)
        .map(|(start, t)| {
            json!({
                "ts": ts_json(*start),
                "runs": t.runs,
                "success_rate": rate(t, t.succeeded),
                "error_rate": rate(t, t.failed + t.timeout),
                "p95_ms": t.runtime.quantile(0.95),
                "credits": t.credits_micro as f64 / 1e6,
                "tokens": (t.tokens_in + t.tokens_out) as f64,
                "active_users": t.users.count(),
            })
        })
        .collect();
    let mut body = Value::Object(q.head(ws.as_str()));
    body["series"] = json!(points);
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// `GET /api/v1/dashboard/detailed`: the range broken down: every agent that ran (figures,
/// p95), every model, errors by type and category, and the rating distribution.
pub async fn dashboard_detailed(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (workspace, from, to) = range_only(&req, &state)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), from, to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let whole = Timeline::whole(from, to);
    let keys = Split {
        agents: false,
        keys: true,
    };
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let w = ws.as_str();
    let (agents, models, errors, feedback, totals) = tokio::try_join!(
        runs_by_agent(&tx, w, &whole, true),
        kind_series(&tx, kind("models"), w, "", &whole, keys),
        kind_series(&tx, kind("errors"), w, "", &whole, keys),
        kind_series(&tx, kind("feedback"), w, "", &whole, Split::default()),
        run_series(&tx, w, "", &whole, RunParts::ALL),
    )
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let mut agents = agents;
    agents.sort_by(|a, b| b.1.runs.cmp(&a.1.runs).then_with(|| a.0.cmp(&b.0)));
    let agents: Vec<Value> = agents
        .iter()
        .map(|(id, t)| {
            let mut a = json!({"agent_id": id});
            merge(&mut a, runs_json(t));
            if let Some(o) = a.as_object_mut() {
                o.remove("users");
            }
            a
        })
        .collect();
    let models: Vec<Value> = by_runs(&models).into_iter().map(model_json).collect();
    let mut by_type: HashMap<(String, String), i64> = HashMap::new();
    for e in &errors {
        let key = (
            e.keys.first().cloned().unwrap_or_default(),
            e.keys.get(1).cloned().unwrap_or_default(),
        );
        *by_type.entry(key).or_default() += e.int("errors") as i64;
    }
    let mut errors: Vec<_> = by_type.into_iter().collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let errors: Vec<Value> = errors
        .iter()
        .map(|((t, c), n)| {
            json!({"error_type": (!t.is_empty()).then_some(t), "category": (!c.is_empty()).then_some(c), "count": n})
        })
        .collect();
    let fb = feedback.first();
    let ratings: serde_json::Map<String, Value> = (1..=5)
        .map(|i| {
            let n = fb.map_or(0, |f| f.int(&format!("r{i}")) as i64);
            (i.to_string(), json!(n))
        })
        .collect();
    let mut totals_json = runs_json(totals.first().unwrap_or(&RunTotals::default()));
    totals_json["feedback"] = json!(fb.map_or(0, |f| f.int("feedback") as i64));
    let body = json!({
        "workspace_id": w,
        "from": ts_json(from),
        "to": ts_json(to),
        "totals": totals_json,
        "agents": agents,
        "models": models,
        "errors": errors,
        "ratings": ratings,
    });
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// A period in a compare body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    from: DateTime<chrono::FixedOffset>,
    to: DateTime<chrono::FixedOffset>,
}

/// `POST /analytics/compare`: agents side by side over one range, or periods side by side
/// (for the workspace or one agent).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    #[serde(default)]
    agents: Option<Vec<String>>,
    #[serde(default)]
    periods: Option<Vec<Period>>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    from: Option<DateTime<chrono::FixedOffset>>,
    #[serde(default)]
    to: Option<DateTime<chrono::FixedOffset>>,
}

fn compare_figures(t: &RunTotals) -> Vec<(&'static str, Option<f64>)> {
    vec![
        ("runs", Some(t.runs as f64)),
        ("success_rate", rate(t, t.succeeded)),
        ("error_rate", rate(t, t.failed + t.timeout)),
        ("p95_ms", t.runtime.quantile(0.95)),
        ("credits", Some(t.credits_micro as f64 / 1e6)),
        ("cost_per_success", cost_per_success(t)),
        ("active_users", Some(t.users.count() as f64)),
    ]
}

/// `POST /api/v1/analytics/compare?workspace_id=W` with `{"agents": [..], "from", "to"}` or
/// `{"periods": [{"from","to"}, ..], "agent_id"?}`: each item's figures and each one's
/// change against the first.
pub async fn compare(
    req: HttpRequest,
    body: web::Json<CompareBody>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut p = Params::new(&req, &["workspace_id"])?;
    let workspace = p.workspace();
    let now = Utc::now();
    let oldest = now - state.retention_rollups;
    let utc = |t: DateTime<chrono::FixedOffset>| t.with_timezone(&Utc);
    let check = |p: &mut Params, field: &str, from: DateTime<Utc>, to: DateTime<Utc>| {
        if from >= to {
            p.fail(field, "from must be before to".into());
        } else if from < oldest {
            p.fail(field, "starts past retention.rollups".into());
        } else if to > now + crate::history::MAX_AHEAD {
            p.fail(field, "ends more than a day ahead".into());
        } else if [from, to]
            .iter()
            .any(|t| crate::history::cuts_hour_past(*t, now - state.retention_raw).is_some())
        {
            p.fail(
                field,
                "reaches past retention.raw off the hour: only whole hours can be counted there"
                    .into(),
            );
        }
    };
    // (label, agent, from, to) of each item.
    let mut items: Vec<(Value, String, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    match (&body.agents, &body.periods) {
        (Some(agents), None) => {
            if body.agent_id.is_some() {
                p.fail("agent_id", "goes with periods, not agents".into());
            }
            if !(2..=10).contains(&agents.len()) {
                p.fail("agents", "compare 2 to 10 agents".into());
            }
            let (from, to) = match (body.from, body.to) {
                (Some(f), Some(t)) => (utc(f), utc(t)),
                (None, None) => (now - Duration::hours(24), now),
                _ => {
                    p.fail("from", "from and to go together".into());
                    (now - Duration::hours(24), now)
                }
            };
            check(&mut p, "from", from, to);
            for a in agents {
                match shadower_actors::domain::ids::AgentId::parse(a) {
                    Ok(id) => {
                        items.push((json!({"agent_id": a}), id.as_str().to_owned(), from, to))
                    }
                    Err(e) => p.fail("agents", format!("{a:?}: {e}")),
                }
            }
        }
        (None, Some(periods)) => {
            if body.from.is_some() || body.to.is_some() {
                p.fail("from", "each period has its own from and to".into());
            }
            if !(2..=4).contains(&periods.len()) {
                p.fail("periods", "compare 2 to 4 periods".into());
            }
            let agent = match body
                .agent_id
                .as_deref()
                .map(shadower_actors::domain::ids::AgentId::parse)
            {
                None => String::new(),
                Some(Ok(a)) => a.as_str().to_owned(),
                Some(Err(e)) => {
                    p.fail("agent_id", e.to_string());
                    String::new()
                }
            };
            for (i, period) in periods.iter().enumerate() {
                let (from, to) = (utc(period.from), utc(period.to));
                check(&mut p, &format!("periods[{i}]"), from, to);
                items.push((
                    json!({"from": ts_json(from), "to": ts_json(to)}),
                    agent.clone(),
                    from,
                    to,
                ));
            }
        }
        _ => p.fail("agents", "give either agents or periods".into()),
    }
    p.finish(Some(()))?;
    // The cache key: every item's agent and range; the whole span decides cacheability.
    let body_bytes = serde_json::to_vec(&(
        body.agents.is_some(),
        items
            .iter()
            .map(|(_, a, f, t)| (a, f.timestamp_micros(), t.timestamp_micros()))
            .collect::<Vec<_>>(),
    ))
    .unwrap_or_default();
    let fixed = body.periods.is_some() || body.to.is_some();
    let span = (
        items.iter().map(|i| i.2).min().unwrap_or(now),
        items.iter().map(|i| i.3).max().unwrap_or(now),
    );
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut key =
        cache::history::Key::with_body(&req, ws.as_str(), span.0, span.1, &body_bytes, fixed);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let mut figures = Vec::with_capacity(items.len());
    for (_, agent, from, to) in &items {
        let mut t = run_series(
            &tx,
            ws.as_str(),
            agent,
            &Timeline::whole(*from, *to),
            RunParts::ALL,
        )
        .await
        .map_err(store_error)?;
        figures.push(t.pop().unwrap_or_default());
    }
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let base = compare_figures(&figures[0]);
    let out: Vec<Value> = items
        .iter()
        .zip(&figures)
        .map(|((label, _, _, _), t)| {
            let mut item = label.clone();
            merge(&mut item, runs_json(t));
            let changes: serde_json::Map<String, Value> = compare_figures(t)
                .into_iter()
                .zip(&base)
                .map(|((name, v), (_, b))| {
                    (
                        name.to_owned(),
                        json!(v.zip(*b).and_then(|(v, b)| change_pct(v, b))),
                    )
                })
                .collect();
            item["change_pct_vs_first"] = Value::Object(changes);
            item
        })
        .collect();
    let kind = if body.agents.is_some() {
        "agents"
    } else {
        "periods"
    };
    Ok(cache::history::miss(
        &state,
        &key,
        json!({"workspace_id": ws.as_str(), "compare": kind, "items": out}),
        &decision,
    )
    .await)
}

const TREND_OF: [&str; 7] = [
    "runs",
    "success_rate",
    "error_rate",
    "credits",
    "tokens",
    "p95_ms",
    "active_users",
];

/// `GET /api/v1/trends?workspace_id=W&metric=M[&agent_id=A]`: the metric's series with its
/// direction, slope (per bucket) and change points (`shadower_actors::domain::trend`).
pub async fn trends(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut allowed = SERIES.to_vec();
    allowed.push("metric");
    let (q, metric) = SeriesQuery::parse_with(&req, &state, &allowed, |p| {
        let metric = p.get("metric").unwrap_or("runs").to_owned();
        if !TREND_OF.contains(&metric.as_str()) {
            p.fail("metric", format!("must be one of {}", TREND_OF.join(", ")));
        }
        metric
    })?;
    let (ws, decision) = authorize(&principal, &state, &q.workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), q.from, q.to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let agent = q.agent.as_ref().map_or("", |a| a.as_str());
    let timeline = q.timeline();
    let parts = RunParts {
        sketch: metric == "p95_ms",
        users: metric == "active_users",
    };
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let series = run_series(&tx, ws.as_str(), agent, &timeline, parts)
        .await
        .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    if !agent.is_empty() {
        known_or_404(
            &conn,
            ws.as_str(),
            agent,
            series.iter().map(|t| t.runs).sum(),
        )
        .await?;
    }
    let value = |t: &RunTotals| -> Option<f64> {
        match metric.as_str() {
            "runs" => Some(t.runs as f64),
            "success_rate" => rate(t, t.succeeded),
            "error_rate" => rate(t, t.failed + t.timeout),
            "credits" => Some(t.credits_micro as f64 / 1e6),
            "tokens" => Some((t.tokens_in + t.tokens_out) as f64),
            "p95_ms" => t.runtime.quantile(0.95),
            _ => Some(t.users.count() as f64),
        }
    };
    let values: Vec<Option<f64>> = series.iter().map(value).collect();
    // The trend of the buckets that have a value (a rate of an empty bucket has none).
    let defined: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((i, (*v)?)))
        .collect();
    let trend = analyze(&defined.iter().map(|(_, v)| *v).collect::<Vec<_>>());
    let change_points: Vec<String> = trend
        .change_points
        .iter()
        .filter_map(|&k| defined.get(k))
        .map(|(i, _)| ts_json(timeline.starts[*i]))
        .collect();
    let mut body = Value::Object(q.head(ws.as_str()));
    body["metric"] = json!(metric);
    body["series"] = timeline
        .starts
        .iter()
        .zip(&values)
        .map(|(s, v)| json!({"ts": ts_json(*s), "value": v}))
        .collect();
    body["direction"] = json!(trend.direction);
    body["slope_per_bucket"] = json!(trend.slope);
    body["change_pct"] = json!(trend.change_pct);
    body["change_points"] = json!(change_points);
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

const CRITERIA: [&str; 4] = ["runs", "success_rate", "cost_per_success", "p95_ms"];

/// Leaderboard parameters beyond the range.
struct Board {
    criterion: String,
    min_runs: i64,
    limit: usize,
}

fn board_params(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(String, DateTime<Utc>, DateTime<Utc>, Board), ApiError> {
    let allowed = [
        "workspace_id",
        "timeframe",
        "from",
        "to",
        "criterion",
        "min_runs",
        "limit",
    ];
    let mut p = Params::new(req, &allowed)?;
    let workspace = p.workspace();
    let range = p.range(Utc::now(), state.retention_rollups);
    let range = p.whole_hours_past_raw(range, state.retention_raw);
    let criterion = p.get("criterion").unwrap_or("runs").to_owned();
    if !CRITERIA.contains(&criterion.as_str()) {
        p.fail(
            "criterion",
            format!("must be one of {}", CRITERIA.join(", ")),
        );
    }
    let min_runs = match p.get("min_runs").map(str::parse::<i64>) {
        None => 10,
        Some(Ok(n)) if (1..=1_000_000).contains(&n) => n,
        Some(_) => {
            p.fail(
                "min_runs",
                "must be a whole number from 1 to 1000000".into(),
            );
            10
        }
    };
    let limit = match p.get("limit").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            p.fail("limit", "must be a whole number from 1 to 100".into());
            20
        }
    };
    let (from, to) = p.finish(range)?;
    Ok((
        workspace,
        from,
        to,
        Board {
            criterion,
            min_runs,
            limit,
        },
    ))
}

/// Ranks rows by the criterion (higher runs and success rate lead; lower cost per success and
/// p95 lead), skipping those under `min_runs` or without a value; equal values share a rank
/// and are listed by id.
fn rank(rows: Vec<(String, RunTotals)>, board: &Board) -> (Vec<Value>, usize) {
    let value = |t: &RunTotals| match board.criterion.as_str() {
        "runs" => Some(t.runs as f64),
        "success_rate" => rate(t, t.succeeded),
        "cost_per_success" => cost_per_success(t),
        _ => t.runtime.quantile(0.95),
    };
    // Ratios compare exactly, as cross products of their integer terms, so equal ratios
    // (0.3 credits for 3 successes, 0.1 for 1) tie whatever their floats' last bits.
    let exact = |a: &RunTotals, b: &RunTotals| -> std::cmp::Ordering {
        let decided = |t: &RunTotals| i128::from(t.succeeded + t.failed + t.timeout);
        match board.criterion.as_str() {
            // Higher leads: b against a.
            "runs" => b.runs.cmp(&a.runs),
            "success_rate" => {
                (i128::from(b.succeeded) * decided(a)).cmp(&(i128::from(a.succeeded) * decided(b)))
            }
            // Lower leads.
            "cost_per_success" => (a.credits_micro * i128::from(b.succeeded))
                .cmp(&(b.credits_micro * i128::from(a.succeeded))),
            _ => {
                let p = |t: &RunTotals| t.runtime.quantile(0.95).unwrap_or(f64::INFINITY);
                p(a).total_cmp(&p(b))
            }
        }
    };
    let mut eligible: Vec<(String, RunTotals, f64)> = rows
        .into_iter()
        .filter(|(_, t)| t.runs >= board.min_runs)
        .filter_map(|(id, t)| {
            let v = value(&t)?;
            Some((id, t, v))
        })
        .collect();
    eligible.sort_by(|a, b| exact(&a.1, &b.1).then_with(|| a.0.cmp(&b.0)));
    let total = eligible.len();
    let mut out = Vec::new();
    let mut rank = 0;
    for (i, (id, t, v)) in eligible.iter().take(board.limit).enumerate() {
        if i == 0 || exact(&eligible[i - 1].1, t) != std::cmp::Ordering::Equal {
            rank = i + 1;
        }
        out.push(json!({
            "rank": rank,
            "id": id,
            "value": v,
            "runs": t.runs,
            "success_rate": rate(t, t.succeeded),
            "cost_per_success": cost_per_success(t),
            "p95_ms": t.runtime.quantile(0.95),
            "credits": t.credits_micro as f64 / 1e6,
        }));
    }
    (out, total)
}

/// `GET /api/v1/leaderboards/agents?criterion=runs|success_rate|cost_per_success|p95_ms`:
/// agents with at least `min_runs` runs (default 10) in the range, ranked.
pub async fn leaderboard_agents(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (workspace, from, to, board) = board_params(&req, &state)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), from, to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let rows = runs_by_agent(
        &tx,
        ws.as_str(),
        &Timeline::whole(from, to),
        board.criterion == "p95_ms",
    )
    .await
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let (ranking, eligible) = rank(rows, &board);
    Ok(cache::history::miss(
        &state,
        &key,
        json!({"workspace_id": ws.as_str(), "from": ts_json(from), "to": ts_json(to),
               "criterion": board.criterion, "min_runs": board.min_runs,
               "eligible": eligible, "rankings": ranking}),
        &decision,
    )
    .await)
}

/// `GET /api/v1/leaderboards/users`: the same ranking of users. Rollups keep distinct users
/// but no figures per user, so this one reads the raw runs: its range must lie within
/// `retention.raw`.
pub async fn leaderboard_users(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (workspace, from, to, board) = board_params(&req, &state)?;
    if from < Utc::now() - state.retention_raw {
        return Err(invalid_parameter(
            "from",
            format!(
                "user leaderboards read raw runs, kept retention.raw ({} days)",
                state.retention_raw.num_days()
            ),
        ));
    }
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), from, to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let conn = client(&state).await?;
    let rows = shadower_actors::store::history::runs_by_user(&conn, ws.as_str(), from, to)
        .await
        .map_err(store_error)?;
    let (ranking, eligible) = rank(rows, &board);
    Ok(cache::history::miss(
        &state,
        &key,
        json!({"workspace_id": ws.as_str(), "from": ts_json(from), "to": ts_json(to),
               "criterion": board.criterion, "min_runs": board.min_runs,
               "eligible": eligible, "rankings": ranking}),
        &decision,
    )
    .await)
}
