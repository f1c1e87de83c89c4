//! `GET /api/v1/agents/{agent_id}/analytics` (SPEC §8): an agent over a range in the seed's
//! sections — performance, errors, user satisfaction, resource usage, comparisons (against
//! the workspace and the period of the same length before) and rule-based suggestions
//! (`shadower_actors::domain::suggest`). Every figure is read from the rollups in one snapshot,
//! exact up to now.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use shadower_actors::domain::live::ts_json;
use shadower_actors::domain::suggest::{suggest, AgentFigures, Allocation, ModelFigures};
use shadower_actors::domain::timeline::Timeline;
use shadower_actors::store::history::{
    kind, kind_series, run_series, runs_by_agent, snapshot, KindRow, RunParts, RunTotals, Split,
};

use crate::alerts::{authorize, store_error};
use crate::auth::{Principal, Scope};
use crate::cache;
use crate::error::ApiError;
use crate::history::{
    by_runs, change_pct, client, cost_per_success, known_or_404, merge, model_json, rate,
    runs_json, SeriesQuery,
};
use crate::AppState;

const PARAMS: [&str; 6] = [
    "workspace_id",
    "timeframe",
    "from",
    "to",
    "tz",
    "granularity",
];

fn compare(now: Option<f64>, before: Option<f64>) -> Value {
    json!({
        "current": now,
        "previous": before,
        "change_pct": now.zip(before).and_then(|(n, b)| change_pct(n, b)),
    })
}

fn models_of(rows: &[KindRow]) -> Vec<ModelFigures> {
    rows.iter()
        .map(|m| ModelFigures {
            model: m.keys.first().cloned().unwrap_or_default(),
            runs: m.int("runs") as i64,
            succeeded: m.int("succeeded") as i64,
            credits: m.int("credits_micro") as f64 / 1e6,
        })
        .collect()
}

/// Counts of errors by the key at `at` (0: type, 1: category).
fn errors_by(rows: &[KindRow], at: usize) -> Vec<(String, i64)> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for row in rows {
        if let Some(k) = row.keys.get(at) {
            *counts.entry(k.clone()).or_default() += row.int("errors") as i64;
        }
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

fn feedback_json(row: Option<&KindRow>) -> Value {
    let n = row.map_or(0, |r| r.int("feedback") as i64);
    let avg = |r: Option<&KindRow>| {
        r.filter(|r| r.int("feedback") > 0)
            .map(|r| r.int("rating_sum") as f64 / r.int("feedback") as f64)
    };
    let dist: serde_json::Map<String, Value> = (1..=5)
        .map(|i| {
            let c = row.map_or(0, |r| r.int(&format!("r{i}")) as i64);
            (i.to_string(), json!(c))
        })
        .collect();
    json!({"feedback": n, "average_rating": avg(row), "distribution": dist})
}

/// Mean use ÷ allocation, and the means of the resource itself.
fn resource_json(row: Option<&KindRow>, name: &str) -> (Value, Option<Allocation>) {
    let get = |c: &str| row.map_or(0, |r| r.int(&format!("{name}_{c}")));
    let (n, sum, use_n, use_sum) = (get("n"), get("milli"), get("use_n"), get("use_micro"));
    let alloc = (use_n > 0).then(|| Allocation {
        mean_use: use_sum as f64 / 1e6 / use_n as f64,
        samples: use_n as i64,
    });
    let (limit_n, limit_sum) = (get("limit_n"), get("limit_milli"));
    let unit = if name == "cpu" { "pct" } else { "mb" };
    let body = json!({
        format!("avg_{unit}"): (n > 0).then(|| sum as f64 / 1000.0 / n as f64),
        format!("max_{unit}"): row.and_then(|r| r.float(&format!("{name}_max"))),
        "avg_limit": (limit_n > 0).then(|| limit_sum as f64 / 1000.0 / limit_n as f64),
        "mean_use_of_allocation": alloc.map(|a| a.mean_use),
        "samples": n as i64,
    });
    (body, alloc)
}

/// `GET /api/v1/agents/{agent_id}/analytics`.
pub async fn agent_analytics(
    req: HttpRequest,
    path: web::Path<String>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = SeriesQuery::parse(&req, &state, &PARAMS)?;
    let (ws, decision) = authorize(&principal, &state, &q.workspace, Scope::Read).await?;
    // The answer reads the period before too: a late event there must invalidate it.
    let mut key = cache::history::Key::new(&req, ws.as_str(), q.from - (q.to - q.from), q.to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let agent = crate::live::agent(&path)?;
    let body = sections(&state, ws.as_str(), agent.as_str(), &q).await?;
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// `GET /api/v1/analytics/overview`: the same sections for the whole workspace (its
/// suggestions from the same rules), and its leading agents.
pub async fn overview(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = SeriesQuery::parse(&req, &state, &PARAMS)?;
    let (ws, decision) = authorize(&principal, &state, &q.workspace, Scope::Read).await?;
    // The answer reads the period before too: a late event there must invalidate it.
    let mut key = cache::history::Key::new(&req, ws.as_str(), q.from - (q.to - q.from), q.to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let mut body = sections(&state, ws.as_str(), "", &q).await?;
    if let Some(c) = body["comparisons"].as_object_mut() {
        c.remove("workspace");
    }
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// The sections of `agent` (`""`: the workspace) over the query's range.
async fn sections(
    state: &AppState,
    ws_id: &str,
    id: &str,
    q: &SeriesQuery,
) -> Result<Value, ApiError> {
    let span = q.to - q.from;
    let (prev_from, prev_to) = (q.from - span, q.from);
    let (now, before) = (
        Timeline::whole(q.from, q.to),
        Timeline::whole(prev_from, prev_to),
    );
    let timeline = q.timeline();
    let sketch = RunParts {
        sketch: true,
        users: false,
    };
    let keys = Split {
        agents: false,
        keys: true,
    };
    let whole = Split::default();
    let mut conn = client(state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let (
        current,
        previous,
        workspace,
        series,
        (errors, prev_errors),
        (models, prev_models),
        (feedback, prev_feedback),
        resources,
        per_agent,
    ) = tokio::try_join!(
        run_series(&tx, ws_id, id, &now, RunParts::ALL),
        run_series(&tx, ws_id, id, &before, sketch),
        run_series(&tx, ws_id, "", &now, sketch),
        run_series(&tx, ws_id, id, &timeline, sketch),
        async {
            tokio::try_join!(
                kind_series(&tx, kind("errors"), ws_id, id, &now, keys),
                kind_series(&tx, kind("errors"), ws_id, id, &before, keys),
            )
        },
        async {
            tokio::try_join!(
                kind_series(&tx, kind("models"), ws_id, id, &now, keys),
                kind_series(&tx, kind("models"), ws_id, id, &before, keys),
            )
        },
        async {
            tokio::try_join!(
                kind_series(&tx, kind("feedback"), ws_id, id, &now, whole),
                kind_series(&tx, kind("feedback"), ws_id, id, &before, whole),
            )
        },
        kind_series(&tx, kind("resources"), ws_id, id, &now, whole),
        // The workspace's: its leading agents, in the same snapshot.
        async {
            if id.is_empty() {
                runs_by_agent(&tx, ws_id, &now, false).await
            } else {
                Ok(Vec::new())
            }
        },
    )
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    let first = |mut v: Vec<RunTotals>| v.pop().unwrap_or_default();
    let (current, previous, workspace) = (first(current), first(previous), first(workspace));
    if !id.is_empty() {
        known_or_404(&conn, ws_id, id, current.runs).await?;
    }

    let hours = span.num_milliseconds() as f64 / 3_600_000.0;
    let mut performance = runs_json(&current);
    performance["throughput_per_hour"] = json!(current.runs as f64 / hours);
    performance["series"] = timeline
        .starts
        .iter()
        .zip(&series)
        .map(|(start, t)| {
            json!({
                "ts": ts_json(*start),
                "runs": t.runs,
                "success_rate": rate(t, t.succeeded),
                "error_rate": rate(t, t.failed + t.timeout),
                "p50_ms": t.runtime.quantile(0.5),
                "p95_ms": t.runtime.quantile(0.95),
                "p99_ms": t.runtime.quantile(0.99),
            })
        })
        .collect();

    let failures = current.failed + current.timeout;
    let (by_type, by_category) = (errors_by(&errors, 0), errors_by(&errors, 1));
    let prev_by_type: HashMap<String, i64> = errors_by(&prev_errors, 0).into_iter().collect();
    let total_errors: i64 = by_type.iter().map(|(_, n)| n).sum();
    let prev_total: i64 = prev_by_type.values().sum();
    let share = |n: i64| (total_errors > 0).then(|| n as f64 / total_errors as f64);
    let none_if_empty = |k: &str| (!k.is_empty()).then(|| k.to_owned());
    let errors_section = json!({
        "errors": total_errors,
        "failures": failures,
        "error_rate": rate(&current, failures),
        "by_type": by_type.iter().map(|(t, n)| {
            let before = prev_by_type.get(t).copied().unwrap_or(0);
            json!({"error_type": none_if_empty(t), "count": n, "share": share(*n),
                   "previous_count": before, "change_pct": change_pct(*n as f64, before as f64)})
        }).collect::<Vec<_>>(),
        "by_category": by_category.iter().map(|(c, n)| {
            json!({"category": none_if_empty(c), "count": n, "share": share(*n)})
        }).collect::<Vec<_>>(),
        "trend": {
            "current": total_errors,
            "previous": prev_total,
            "change_pct": change_pct(total_errors as f64, prev_total as f64),
        },
    });

    let mut satisfaction = feedback_json(feedback.first());
    let prev_satisfaction = feedback_json(prev_feedback.first());
    satisfaction["previous_average_rating"] = prev_satisfaction["average_rating"].clone();

    let model_figures = models_of(&models);
    let by_model: Vec<Value> = by_runs(&models).into_iter().map(model_json).collect();
    let (cpu, cpu_alloc) = resource_json(resources.first(), "cpu");
    let (mem, mem_alloc) = resource_json(resources.first(), "mem");
    let resource_usage = json!({
        "credits": current.credits_micro as f64 / 1e6,
        "tokens_in": current.tokens_in as i64,
        "tokens_out": current.tokens_out as i64,
        "cost_per_success": cost_per_success(&current),
        "by_model": by_model,
        "cpu": cpu,
        "memory": mem,
    });

    let p95 = |t: &RunTotals| t.runtime.quantile(0.95);
    let comparisons = json!({
        "workspace": {
            "share_of_runs": (workspace.runs > 0).then(|| current.runs as f64 / workspace.runs as f64),
            "success_rate": {"agent": rate(&current, current.succeeded), "workspace": rate(&workspace, workspace.succeeded)},
            "error_rate": {"agent": rate(&current, failures), "workspace": rate(&workspace, workspace.failed + workspace.timeout)},
            "p95_ms": {"agent": p95(&current), "workspace": p95(&workspace)},
            "cost_per_success": {"agent": cost_per_success(&current), "workspace": cost_per_success(&workspace)},
        },
        "previous_period": {
            "from": ts_json(prev_from),
            "to": ts_json(prev_to),
            "complete": prev_from >= chrono::Utc::now() - state.retention_rollups,
            "runs": compare(Some(current.runs as f64), Some(previous.runs as f64)),
            "success_rate": compare(rate(&current, current.succeeded), rate(&previous, previous.succeeded)),
            "p95_ms": compare(p95(&current), p95(&previous)),
            "credits": compare(Some(current.credits_micro as f64 / 1e6), Some(previous.credits_micro as f64 / 1e6)),
            "cost_per_success": compare(cost_per_success(&current), cost_per_success(&previous)),
        },
    });

    let suggestions = suggest(&AgentFigures {
        runs: current.runs,
        previous_runs: previous.runs,
        models: model_figures,
        previous_models: models_of(&prev_models),
        p95_ms: p95(&current),
        previous_p95_ms: p95(&previous),
        failures,
        error_types: by_type,
        error_rate: rate(&current, failures),
        workspace_error_rate: rate(&workspace, workspace.failed + workspace.timeout),
        cpu: cpu_alloc,
        mem: mem_alloc,
    });

    let mut body = Value::Object(q.head(ws_id));
    body["agent_id"] = json!((!id.is_empty()).then_some(id));
    merge(
        &mut body,
        json!({
            "performance": performance,
            "errors": errors_section,
            "user_satisfaction": satisfaction,
            "resource_usage": resource_usage,
            "comparisons": comparisons,
            "suggestions": suggestions,
        }),
    );
    if id.is_empty() {
        body["top_agents"] = crate::overview::leading_agents(per_agent, 10);
    }
    Ok(body)
}
