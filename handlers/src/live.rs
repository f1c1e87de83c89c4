//! Reads of live state, from the workspace actor's memory, never cached.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use shadower_actors::domain::ids::{AgentId, WorkspaceId};
use shadower_actors::domain::live::{ts_json, ExecView, ResourceView};
use shadower_actors::domain::window::Window;
use shadower_actors::messages::{GetExecution, GetResources};

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::ratelimit::{Budget, Decision};
use crate::AppState;

#[derive(Deserialize)]
pub struct RealtimeQuery {
    workspace_id: String,
    agent_id: Option<String>,
    window: Option<String>,
}

#[derive(Serialize)]
struct Realtime<'a> {
    workspace_id: &'a WorkspaceId,
    agent_id: Option<&'a AgentId>,
    ts: String,
    execution: ExecView,
}

fn workspace(s: &str) -> Result<WorkspaceId, ApiError> {
    WorkspaceId::parse(s)
        .map_err(|e| ApiError::bad_request("invalid_workspace_id", format!("workspace_id {e}")))
}

/// An agent id from the query or body, or a 400 saying what is wrong with it.
pub(crate) fn agent(s: &str) -> Result<AgentId, ApiError> {
    AgentId::parse(s)
        .map_err(|e| ApiError::bad_request("invalid_agent_id", format!("agent_id {e}")))
}

fn window(s: Option<&str>) -> Result<Window, ApiError> {
    s.unwrap_or("5m")
        .parse()
        .map_err(|e: shadower_actors::domain::window::WindowError| {
            ApiError::bad_request("invalid_window", e.to_string())
        })
}

fn live_json(body: &impl Serialize, decision: Decision) -> HttpResponse {
    let mut res = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body);
    decision.annotate(&mut res);
    res
}

pub(crate) fn unavailable(e: actix::MailboxError) -> ApiError {
    ApiError::Unavailable(format!(
        "the workspace's live state is not available right now ({e})"
    ))
}

/// The workspace a read names, once the token grants it with `read` and its rate limit
/// allows one more request.
async fn authorize_read(
    principal: &Principal,
    state: &AppState,
    ws: &str,
) -> Result<(WorkspaceId, Decision), ApiError> {
    let ws = workspace(ws)?;
    principal.require(&ws, Scope::Read)?;
    let decision = state.limit(&ws, Budget::Read, 1).await?;
    Ok((ws, decision))
}

pub(crate) fn timeout(state: &AppState) -> Duration {
    state.registry.deps().request_timeout
}

/// `GET /api/v1/metrics/execution/realtime?workspace_id=W[&agent_id=A][&window=5m]`
pub async fn realtime(
    q: web::Query<RealtimeQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, decision) = authorize_read(&principal, &state, &q.workspace_id).await?;
    let agent_id = q.agent_id.as_deref().map(agent).transpose()?;
    let window = window(q.window.as_deref())?;
    let msg = GetExecution {
        agent: agent_id.clone(),
        window,
    };
    let execution = state
        .registry
        .ask(&ws, msg, timeout(&state))
        .await
        .map_err(unavailable)?;
    Ok(live_json(
        &Realtime {
            workspace_id: &ws,
            agent_id: agent_id.as_ref(),
            ts: ts_json(chrono::Utc::now()),
            execution,
        },
        decision,
    ))
}

#[derive(Deserialize)]
pub struct WindowQuery {
    window: Option<String>,
}

#[derive(Serialize)]
struct WorkspaceResources<'a> {
    workspace_id: &'a WorkspaceId,
    ts: String,
    window: &'static str,
    agents: std::collections::BTreeMap<AgentId, ResourceView>,
}

/// `GET /api/v1/resources/workspace/{W}[?window=5m]`
pub async fn workspace_resources(
    path: web::Path<String>,
    q: web::Query<WindowQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, decision) = authorize_read(&principal, &state, &path).await?;
    let window = window(q.window.as_deref())?;
    let agents = state
        .registry
        .ask(
            &ws,
            GetResources {
                agent: None,
                window,
            },
            timeout(&state),
        )
        .await
        .map_err(unavailable)?;
    Ok(live_json(
        &WorkspaceResources {
            workspace_id: &ws,
            ts: ts_json(chrono::Utc::now()),
            window: window.as_str(),
            agents,
        },
        decision,
    ))
}

#[derive(Deserialize)]
pub struct AgentResourcesQuery {
    workspace_id: String,
    window: Option<String>,
}

#[derive(Serialize)]
struct AgentResources<'a> {
    workspace_id: &'a WorkspaceId,
    agent_id: &'a AgentId,
    ts: String,
    #[serde(flatten)]
    resources: ResourceView,
}

/// `GET /api/v1/resources/agents/{A}?workspace_id=W[&window=5m]`
pub async fn agent_resources(
    path: web::Path<String>,
    q: web::Query<AgentResourcesQuery>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, decision) = authorize_read(&principal, &state, &q.workspace_id).await?;
    let agent_id = agent(&path)?;
    let window = window(q.window.as_deref())?;
    let msg = GetResources {
        agent: Some(agent_id.clone()),
        window,
    };
    let mut views = state
        .registry
        .ask(&ws, msg, timeout(&state))
        .await
        .map_err(unavailable)?;
    let resources = views.remove(&agent_id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "agent {agent_id} has sent no heartbeat in the last 24h"
        ))
    })?;
    Ok(live_json(
        &AgentResources {
            workspace_id: &ws,
            agent_id: &agent_id,
            ts: ts_json(chrono::Utc::now()),
            resources,
        },
        decision,
    ))
}

#[derive(Deserialize)]
pub struct TestFrame {
    /// `alert` or `anomaly`.
    channel: String,
    payload: serde_json::Value,
}

/// `POST /api/v1/workspaces/{W}/test-frames` (admin; only with `ws.test_hooks`): broadcasts
/// an alert or anomaly frame, as the alert and anomaly engines will.
pub async fn test_frame(
    path: web::Path<String>,
    body: web::Json<TestFrame>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state.ws.test_hooks {
        return Err(ApiError::NotFound("no such route".into()));
    }
    let ws = workspace(&path)?;
    principal.require(&ws, Scope::Admin)?;
    let channel = match body.channel.as_str() {
        "alert" => shadower_actors::domain::subscription::Channel::Alerts,
        "anomaly" => shadower_actors::domain::subscription::Channel::Anomalies,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_channel",
                "channel must be alert or anomaly",
            ))
        }
    };
    let msg = shadower_actors::messages::Emit {
        channel,
        payload: body.into_inner().payload,
    };
    state
        .registry
        .ask(&ws, msg, timeout(&state))
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"sent": true})))
}
