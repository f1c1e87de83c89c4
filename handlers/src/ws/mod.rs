//! `GET /ws/metrics/{workspace_id}`: live frames over WebSocket. The only place that uses
//! `actix-web-actors` (deprecated upstream): the session speaks to the workspace through
//! `Recipient<Frame>` and `Recipient<Evict>`, so a swap to `actix-ws` stays inside this folder.
//!
//! Auth, scope and the session caps are checked before the upgrade, so refusals are plain
//! HTTP with the JSON error body (401, 403, 429). Upgrades are governed by the session caps,
//! not the read rate limit: a workspace may hold 10 000 sessions, and a reconnect storm
//! after a restart must not turn into thousands of 429s per second.

mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use parking_lot::Mutex;
use serde::Deserialize;
use shadower_actors::config::WsConfig;
use shadower_actors::domain::ids::WorkspaceId;
use shadower_actors::metrics::ReasonLabel;

use crate::auth::{bearer, Scope};
use crate::error::ApiError;
use crate::AppState;

pub use session::Session;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    since: Option<String>,
}

/// Session counts behind the caps; a [`SessionSlot`] gives its place back when dropped.
#[derive(Default)]
pub struct SessionCaps {
    counts: Mutex<Counts>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_workspace: HashMap<WorkspaceId, usize>,
    by_token: HashMap<String, usize>,
}

/// A session's place under the caps.
pub struct SessionSlot {
    caps: Arc<SessionCaps>,
    workspace: WorkspaceId,
    token: String,
    pub id: u64,
}

impl SessionCaps {
    fn take(
        self: &Arc<Self>,
        cfg: &WsConfig,
        ws: &WorkspaceId,
        token: &str,
    ) -> Result<SessionSlot, &'static str> {
        let mut c = self.counts.lock();
        if c.total >= cfg.max_sessions {
            return Err("cap_total");
        }
        if c.by_workspace.get(ws).copied().unwrap_or(0) >= cfg.max_sessions_per_workspace {
            return Err("cap_workspace");
        }
        // Keyed by a digest of the token, never the token itself.
        let key = token_key(token);
        if c.by_token.get(&key).copied().unwrap_or(0) >= cfg.max_sessions_per_token {
            return Err("cap_token");
        }
        c.total += 1;
        *c.by_workspace.entry(ws.clone()).or_default() += 1;
        *c.by_token.entry(key.clone()).or_default() += 1;
        Ok(SessionSlot {
            caps: self.clone(),
            workspace: ws.clone(),
            token: key,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn total(&self) -> usize {
        self.counts.lock().total
    }
}

fn token_key(token: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    token.hash(&mut h);
    format!("{:016x}", h.finish())
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut c = self.caps.counts.lock();
        c.total -= 1;
        if let Some(n) = c.by_workspace.get_mut(&self.workspace) {
            *n -= 1;
            if *n == 0 {
                c.by_workspace.remove(&self.workspace);
            }
        }
        if let Some(n) = c.by_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                c.by_token.remove(&self.token);
            }
        }
    }
}

/// `since=<epoch>:<seq>`.
fn parse_since(s: &str) -> Result<(u64, u64), ApiError> {
    s.split_once(':')
        .and_then(|(e, q)| Some((e.parse().ok()?, q.parse().ok()?)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_since",
                "since must be <epoch>:<seq>, both integers",
            )
        })
}

pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<WsQuery>,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = match &q.token {
        Some(t) => t.as_str(),
        None => bearer(&req)?,
    };
    let principal = state.auth.verify(token)?;
    let ws = WorkspaceId::parse(&path)
        .map_err(|e| ApiError::bad_request("invalid_workspace_id", format!("workspace_id {e}")))?;
    principal.require(&ws, Scope::Read)?;
    let since = q.since.as_deref().map(parse_since).transpose()?;
    let slot = state
        .ws_caps
        .take(&state.ws, &ws, token)
        .map_err(|reason| {
            state
                .metrics
                .ws_refused
                .get_or_create(&ReasonLabel { reason })
                .inc();
            ApiError::TooManySessions(format!("WebSocket session limit reached ({reason})"))
        })?;
    let session = Session::new(slot, ws, since, state.clone().into_inner());
    let socket = req.conn_data::<crate::conn::ConnSocket>().copied();
    let res = actix_web_actors::ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(64 * 1024)
        .start()
        .map_err(|e| ApiError::bad_request("not_a_websocket", e.to_string()))?;
    Ok(res
        .map_body(|_, body| crate::conn::EndsConnection::new(body, socket))
        .map_into_boxed_body())
}
