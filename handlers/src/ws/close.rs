//! Ending a WebSocket's TCP connection as soon as its closing handshake is done.
//!
//! RFC 6455 §7.1.1 asks the server to close the TCP connection first, and clients wait for
//! it. actix-http does not: when an upgraded response ends, the request's payload (the
//! client's side of the socket) is still open, so the dispatcher lingers, reading until the
//! client hangs up or `server.client_disconnect_timeout` passes. Linger is right for plain
//! HTTP (a `413`/`429` sent before its body was read must reach the client before the
//! socket closes), so the setting stays; for a WebSocket the hub ends the reading side of
//! the socket itself once the session's frames are done. The dispatcher then reads end of
//! file, flushes what is left (the close frame), sends FIN and drops the connection.

use std::any::Any;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::Extensions;
use actix_web::web::Bytes;

/// The socket of an accepted connection, recorded by [`on_connect`].
#[derive(Clone, Copy, Debug)]
pub struct ConnSocket(RawFd);

/// The `HttpServer::on_connect` hook: remembers each TCP connection's socket and bounds
/// how long its peer may leave the hub's bytes unacknowledged (`send_timeout`, zero = the
/// kernel's default). Without that bound a client that stops reading holds its connection,
/// and the bytes queued for it, for as long as it likes, even after its session ended: the
/// dispatcher's last flush has no timer of its own.
pub fn on_connect(send_timeout: Duration) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync {
    move |conn, data| {
        let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        if !send_timeout.is_zero() {
            if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(send_timeout))
            {
                tracing::warn!(error = %e, "Setting TCP_USER_TIMEOUT failed.");
            }
        }
        data.insert(ConnSocket(stream.as_raw_fd()));
    }
}

/// A WebSocket response body that ends its connection's reading side when it ends.
pub struct EndsConnection {
    body: BoxBody,
    socket: Option<ConnSocket>,
}

impl EndsConnection {
    /// Wraps an upgraded response's body; without a recorded socket (a connection not
    /// accepted by the hub's server, as in in-process tests) it only passes the body on.
    pub fn new(body: BoxBody, socket: Option<ConnSocket>) -> Self {
        Self { body, socket }
    }

    fn end_reading(&mut self) {
        let Some(ConnSocket(fd)) = self.socket.take() else {
            return;
        };
        // SAFETY: the body is polled only by the HTTP/1 dispatcher of the connection that
        // `fd` was recorded for, which owns the socket until it drops this body with it,
        // so while `poll_next` runs the descriptor is open and is that connection's.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = socket2::SockRef::from(&socket).shutdown(Shutdown::Read) {
            // The peer may be gone already; the dispatcher finds that out by itself.
            tracing::debug!(error = %e, "Ending a WebSocket's reading side failed.");
        }
    }
}

impl MessageBody for EndsConnection {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.end_reading();
        }
        next
    }
}
