//! Every actor message, in one place.

use std::collections::BTreeMap;

use actix::Message;
use bytestring::ByteString;
use tokio::sync::oneshot;

use crate::domain::event::Event;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::live::{ExecView, ResourceView};
use crate::domain::window::Window;
use crate::writer::{Reservation, WriteError};

/// A request's validated events, for the writer to commit. `reply` answers once the
/// events are committed (and applied to the windows) or cannot be.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    pub workspace: WorkspaceId,
    pub events: Vec<Event>,
    /// Holds the events' place in `writer.max_backlog_rows` until the batch is done.
    pub reservation: Reservation,
    pub reply: oneshot::Sender<Result<(), WriteError>>,
}

/// Resolves when the writer holds nothing: used on shutdown after the server stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Newly inserted events of one committed transaction `xid`, to fold into the windows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    pub events: Vec<Event>,
    pub xid: u64,
}

/// The execution window of the workspace, or of one agent.
#[derive(Message)]
#[rtype(result = "ExecView")]
pub struct GetExecution {
    pub agent: Option<AgentId>,
    pub window: Window,
}

/// Resource windows of every agent, or of one.
#[derive(Message)]
#[rtype(result = "BTreeMap<AgentId, ResourceView>")]
pub struct GetResources {
    pub agent: Option<AgentId>,
    pub window: Window,
}

/// A serialized frame for a WebSocket session (shared bytes, cloned cheaply).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Frame(pub ByteString);

/// Close the session with `code` (4008 slow consumer, 1001 hub shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict {
    pub code: u16,
    pub reason: &'static str,
}

/// A session joins a workspace: answered with its snapshot and replayed frames.
#[derive(Message)]
#[rtype(result = "crate::fanout::Joined")]
pub struct Join {
    pub session: u64,
    pub sink: crate::fanout::SessionSink,
    /// `since=<epoch>:<seq>` of a reconnecting client.
    pub since: Option<(u64, u64)>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: u64,
}

/// A session narrowed (or widened) its stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resubscribe {
    pub session: u64,
    pub sub: crate::domain::subscription::Subscription,
}

/// Broadcast an `alert` or `anomaly` frame now (the alert and anomaly engines, and the
/// test hook, use it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Emit {
    pub channel: crate::domain::subscription::Channel,
    pub payload: serde_json::Value,
}

/// Close every session of the workspace (hub shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSessions;

/// The workspace's alert rules changed in PostgreSQL: load them. Answers once they apply.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ReloadRules;
