//! One WebSocket session: joins its workspace, writes the frames it is handed, answers the
//! client's messages, pings, and leaves.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws;
use serde_json::json;
use shadower_actors::domain::ids::WorkspaceId;
use shadower_actors::domain::subscription::Subscription;
use shadower_actors::fanout::SessionSink;
use shadower_actors::messages::{Evict, Frame, Join, Leave, Resubscribe};
use shadower_actors::workspace::WorkspaceActor;

use super::SessionSlot;
use crate::AppState;

/// Longest client message read; a larger one gets an error frame.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

pub struct Session {
    slot: SessionSlot,
    workspace: WorkspaceId,
    since: Option<(u64, u64)>,
    state: Arc<AppState>,
    /// The workspace actor this session joined (it is told when the session leaves).
    joined: Option<Addr<WorkspaceActor>>,
    /// Last frame heard from the client; past `ws.client_timeout` the session is dropped.
    heard: Instant,
}

impl Session {
    pub(super) fn new(
        slot: SessionSlot,
        workspace: WorkspaceId,
        since: Option<(u64, u64)>,
        state: Arc<AppState>,
    ) -> Self {
        Self {
            slot,
            workspace,
            since,
            state,
            joined: None,
            heard: Instant::now(),
        }
    }

    fn error(ctx: &mut ws::WebsocketContext<Self>, message: impl Into<String>) {
        ctx.text(json!({"type": "error", "message": message.into()}).to_string());
    }

    fn client_message(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if text.len() > MAX_CLIENT_MESSAGE {
            return Self::error(ctx, "message too large");
        }
        #[derive(serde::Deserialize)]
        struct Kind {
            #[serde(rename = "type")]
            kind: String,
        }
        match serde_json::from_str::<Kind>(text).map(|k| k.kind) {
            Ok(k) if k == "ping" => ctx.text(r#"{"type":"pong"}"#),
            Ok(k) if k == "subscribe" => match Subscription::parse(text) {
                Ok(sub) => {
                    let sent = self.joined.as_ref().map(|addr| {
                        addr.try_send(Resubscribe {
                            session: self.slot.id,
                            sub,
                        })
                    });
                    if !matches!(sent, Some(Ok(()))) {
                        Self::error(ctx, "the workspace is busy; send subscribe again");
                    }
                }
                Err(e) => Self::error(ctx, e),
            },
            Ok(k) => Self::error(
                ctx,
                format!(
                    "unknown message type `{}`",
                    k.chars().take(32).collect::<String>()
                ),
            ),
            Err(_) => Self::error(
                ctx,
                "messages are JSON objects with a \"type\": ping or subscribe",
            ),
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The bounded outgoing queue: past it the workspace evicts this session (4008).
        ctx.set_mailbox_capacity(self.state.ws.max_queue);
        self.state.metrics.ws_sessions.inc();
        let addr = self.state.registry.get(&self.workspace);
        let join = Join {
            session: self.slot.id,
            sink: SessionSink {
                frames: ctx.address().recipient(),
                evict: ctx.address().recipient(),
                sub: Subscription::default(),
            },
            since: self.since,
        };
        self.state.registry.mailbox_sent();
        // `wait`: no frame is written before the snapshot.
        ctx.wait(
            addr.send(join)
                .into_actor(self)
                .map(move |joined, act, ctx| match joined {
                    Ok(joined) => {
                        act.joined = Some(addr);
                        ctx.text(joined.snapshot);
                        for frame in joined.replay {
                            ctx.text(frame);
                        }
                    }
                    Err(e) => {
                        act.state.registry.mailbox_unsent();
                        ctx.close(Some(ws::CloseReason {
                            code: ws::CloseCode::Again,
                            description: Some(format!("workspace unavailable: {e}")),
                        }));
                        ctx.stop();
                    }
                }),
        );
        let (ping, timeout) = (
            self.state.ws.ping_interval.get(),
            self.state.ws.client_timeout.get(),
        );
        ctx.run_interval(ping, move |act, ctx| {
            if act.heard.elapsed() > timeout {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("no answer to pings".into()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.state.metrics.ws_sessions.dec();
        if let Some(addr) = &self.joined {
            // A full workspace mailbox only delays this; the workspace also drops sessions
            // whose mailbox is closed on the next broadcast.
            if addr
                .try_send(Leave {
                    session: self.slot.id,
                })
                .is_ok()
            {
                self.state.registry.mailbox_sent();
            }
        }
    }
}

impl Handler<Frame> for Session {
    type Result = ();

    fn handle(&mut self, frame: Frame, ctx: &mut Self::Context) {
        ctx.text(frame.0);
    }
}

impl Handler<Evict> for Session {
    type Result = ();

    fn handle(&mut self, msg: Evict, ctx: &mut Self::Context) {
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Other(msg.code),
            description: Some(msg.reason.into()),
        }));
        self.joined = None; // the workspace already dropped us
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.client_message(&text, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Binary(_)) => {
                Self::error(ctx, "binary messages are not supported; send JSON text")
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) | Ok(ws::Message::Nop) => {}
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket protocol error; closing.");
                ctx.stop();
            }
        }
    }
}
