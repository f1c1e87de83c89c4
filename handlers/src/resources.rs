//! Resource history (SPEC §8, seed §9), from the heartbeat rollups, exact up to now:
//! `GET /resources/agents/{agent_id}/history` (a timeline), `GET /resources/efficiency` (every
//! agent's use of what it was allocated) and `GET /resources/compare` (agents side by side).
//! The live views stay in `live.rs`.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use shadower_actors::domain::ids::AgentId;
use shadower_actors::domain::live::ts_json;
use shadower_actors::domain::timeline::Timeline;
use shadower_actors::store::history::{
    kind, kind_series, runs_by_agent, snapshot, KindRow, RunTotals, Split,
};

use crate::alerts::{authorize, store_error};
use crate::auth::{Principal, Scope};
use crate::cache;
use crate::error::ApiError;
use crate::history::{client, known_or_404, Params, SeriesQuery};
use crate::AppState;

/// A resource row's figures: means and maxima of cpu and memory, mean allocations and the mean
/// use ÷ allocation of the heartbeats that carried both.
fn figures(row: Option<&KindRow>) -> Value {
    let int = |c: &str| row.map_or(0, |r| r.int(c));
    let mean = |sum: &str, n: &str, scale: f64| {
        let n = int(n);
        (n > 0).then(|| int(sum) as f64 / scale / n as f64)
    };
    json!({
        "samples": int("samples") as i64,
        "cpu_pct": {
            "avg": mean("cpu_milli", "cpu_n", 1000.0),
            "max": row.and_then(|r| r.float("cpu_max")),
        },
        "mem_mb": {
            "avg": mean("mem_milli", "mem_n", 1000.0),
            "max": row.and_then(|r| r.float("mem_max")),
        },
        "cpu_limit_cores": {"avg": mean("cpu_limit_milli", "cpu_limit_n", 1000.0)},
        "mem_limit_mb": {"avg": mean("mem_limit_milli", "mem_limit_n", 1000.0)},
        "efficiency": {
            "cpu": mean("cpu_use_micro", "cpu_use_n", 1e6),
            "cpu_samples": int("cpu_use_n") as i64,
            "mem": mean("mem_use_micro", "mem_use_n", 1e6),
            "mem_samples": int("mem_use_n") as i64,
        },
        "concurrent_runs_max": row.and_then(|r| r.float("concurrent_max")),
        "queue_depth_max": row.and_then(|r| r.float("queue_max")),
    })
}

const HISTORY: [&str; 6] = [
    "workspace_id",
    "timeframe",
    "from",
    "to",
    "tz",
    "granularity",
];

/// `GET /api/v1/resources/agents/{agent_id}/history`: the agent's heartbeats per bucket
/// (hourly by default up to two days) and over the whole range.
pub async fn agent_history(
    req: HttpRequest,
    path: web::Path<String>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = SeriesQuery::parse(&req, &state, &HISTORY)?;
    let (ws, decision) = authorize(&principal, &state, &q.workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), q.from, q.to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let agent = crate::live::agent(&path)?;
    let timeline = q.timeline();
    let whole = Timeline::whole(q.from, q.to);
    let resources = kind("resources");
    let mut conn = client(&state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let (series, total) = tokio::try_join!(
        kind_series(
            &tx,
            resources,
            ws.as_str(),
            agent.as_str(),
            &timeline,
            Split::default()
        ),
        kind_series(
            &tx,
            resources,
            ws.as_str(),
            agent.as_str(),
            &whole,
            Split::default()
        ),
    )
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    known_or_404(&conn, ws.as_str(), agent.as_str(), total.len() as i64).await?;
    let by_bucket: HashMap<usize, &KindRow> = series.iter().map(|r| (r.bucket, r)).collect();
    let points: Vec<Value> = timeline
        .starts
        .iter()
        .enumerate()
        .map(|(i, start)| {
            let mut p = figures(by_bucket.get(&i).copied());
            p["ts"] = json!(ts_json(*start));
            p
        })
        .collect();
    let mut body = Value::Object(q.head(ws.as_str()));
    body["agent_id"] = json!(agent.as_str());
    body["totals"] = figures(total.first());
    body["series"] = json!(points);
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// Every agent's resources over the range, and its runs.
async fn per_agent(
    state: &AppState,
    ws: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<(Vec<KindRow>, HashMap<String, RunTotals>), ApiError> {
    let whole = Timeline::whole(from, to);
    let agents = Split {
        agents: true,
        keys: false,
    };
    let mut conn = client(state).await?;
    let tx = snapshot(&mut conn).await.map_err(store_error)?;
    let (resources, runs) = tokio::try_join!(
        kind_series(&tx, kind("resources"), ws, "", &whole, agents),
        runs_by_agent(&tx, ws, &whole, false),
    )
    .map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    Ok((resources, runs.into_iter().collect()))
}

/// `GET /api/v1/resources/efficiency`: for every agent that sent heartbeats carrying its
/// allocation, the mean share of its cpu and memory allocation it used, least used first (the
/// allocations most worth shrinking), and the workspace's mean over all those heartbeats.
pub async fn efficiency(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut p = Params::new(&req, &crate::history::RANGE)?;
    let workspace = p.workspace();
    let range = p.range(chrono::Utc::now(), state.retention_rollups);
    let range = p.whole_hours_past_raw(range, state.retention_raw);
    let (from, to) = p.finish(range)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), from, to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let (rows, _) = per_agent(&state, ws.as_str(), from, to).await?;
    let (mut use_sum, mut use_n) = ([0i128; 2], [0i128; 2]);
    let mut agents: Vec<(Option<f64>, String, Value)> = rows
        .iter()
        .filter(|r| r.int("cpu_use_n") > 0 || r.int("mem_use_n") > 0)
        .map(|r| {
            for (i, name) in ["cpu", "mem"].iter().enumerate() {
                use_sum[i] += r.int(&format!("{name}_use_micro"));
                use_n[i] += r.int(&format!("{name}_use_n"));
            }
            let f = figures(Some(r));
            let id = r.keys.first().cloned().unwrap_or_default();
            let worst = [
                f["efficiency"]["cpu"].as_f64(),
                f["efficiency"]["mem"].as_f64(),
            ]
            .into_iter()
            .flatten()
            .reduce(f64::min);
            (
                worst,
                id.clone(),
                json!({"agent_id": id, "efficiency": f["efficiency"],
                       "cpu_limit_cores": f["cpu_limit_cores"], "mem_limit_mb": f["mem_limit_mb"],
                       "cpu_pct": f["cpu_pct"], "mem_mb": f["mem_mb"]}),
            )
        })
        .collect();
    agents.sort_by(|a, b| {
        a.0.unwrap_or(f64::INFINITY)
            .total_cmp(&b.0.unwrap_or(f64::INFINITY))
            .then_with(|| a.1.cmp(&b.1))
    });
    let mean = |i: usize| (use_n[i] > 0).then(|| use_sum[i] as f64 / 1e6 / use_n[i] as f64);
    let body = json!({
        "workspace_id": ws.as_str(),
        "from": ts_json(from),
        "to": ts_json(to),
        "workspace": {"cpu": mean(0), "mem": mean(1)},
        "agents": agents.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
    });
    Ok(cache::history::miss(&state, &key, body, &decision).await)
}

/// `GET /api/v1/resources/compare?agents=a,b[,…]`: agents' resources and what they did with
/// them (runs, credits and tokens per run) side by side.
pub async fn compare(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut p = Params::new(&req, &["workspace_id", "timeframe", "from", "to", "agents"])?;
    let workspace = p.workspace();
    let range = p.range(chrono::Utc::now(), state.retention_rollups);
    let range = p.whole_hours_past_raw(range, state.retention_raw);
    let list: Vec<String> = p
        .get("agents")
        .map(|a| a.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let mut ids = Vec::new();
    for a in &list {
        match AgentId::parse(a) {
            Ok(id) => ids.push(id),
            Err(e) => p.fail("agents", format!("{a:?}: {e}")),
        }
    }
    if !(2..=10).contains(&list.len()) {
        p.fail("agents", "compare 2 to 10 agents, comma-separated".into());
    }
    let (from, to) = p.finish(range)?;
    let (ws, decision) = authorize(&principal, &state, &workspace, Scope::Read).await?;
    let mut key = cache::history::Key::new(&req, ws.as_str(), from, to);
    if let Some(hit) = cache::history::lookup(&state, &mut key).await {
        return Ok(cache::history::hit(hit, &decision));
    }
    let (rows, runs) = per_agent(&state, ws.as_str(), from, to).await?;
    let by_id: HashMap<&str, &KindRow> = rows
        .iter()
        .filter_map(|r| Some((r.keys.first()?.as_str(), r)))
        .collect();
    let items: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut f = figures(by_id.get(id.as_str()).copied());
            let t = runs.get(id.as_str()).cloned().unwrap_or_default();
            let per_run = |x: f64| (t.runs > 0).then(|| x / t.runs as f64);
            f["agent_id"] = json!(id.as_str());
            f["runs"] = json!(t.runs);
            f["credits_per_run"] = json!(per_run(t.credits_micro as f64 / 1e6));
            f["tokens_per_run"] = json!(per_run((t.tokens_in + t.tokens_out) as f64));
            f
        })
        .collect();
    Ok(cache::history::miss(&state, &key, json!({"workspace_id": ws.as_str(), "from": ts_json(from), "to": ts_json(to), "agents": items}), &decision).await)
}
