//! The hub's side of a TCP connection: when to stop reading what a client sends.
//!
//! When a response ends while the request's payload is still open, actix-http's dispatcher
//! lingers: it reads and discards until the client hangs up or
//! `server.client_disconnect_timeout` passes. Two cases make that wrong:
//! - a WebSocket after its closing handshake: RFC 6455 §7.1.1 has the server close the TCP
//!   connection first, and clients wait for it (the linger made a closing dashboard wait 1 s);
//! - a body the hub refused without reading it (a `401`, a `413` by its declared length, a
//!   `429` charged before reading): the linger read the rest of the upload at memory speed,
//!   for free, so a client past its budget could still make the hub copy gigabytes (under
//!   the noisy-neighbour load, 94 % of the hub's CPU was receiving refused uploads).
//!
//! In both cases the hub ends the reading side of the socket itself once the response is
//! out ([`EndsConnection`]). The dispatcher then reads only what the kernel had already
//! queued, reaches end of file, flushes what is left, sends FIN and drops the connection.
//! The client still reads the answer (on Linux, data that arrived before a reset stays
//! readable); its upload fails with a broken pipe. Linger itself stays for what it is good
//! at: an answer to a client that stops sending by itself.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, ConnectionType};
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::Stream;

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

/// A response body that ends its connection's reading side when it ends.
pub struct EndsConnection {
    body: BoxBody,
    socket: Option<ConnSocket>,
}

impl EndsConnection {
    /// Wraps a response's body; without a recorded socket (a connection not accepted by the
    /// hub's server, as in in-process service tests) it only passes the body on.
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
            tracing::debug!(error = %e, "Ending a connection's reading side failed.");
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

/// A request payload that notes when it was read to its end.
struct Watched {
    inner: Payload,
    ended: Rc<Cell<bool>>,
}

impl Stream for Watched {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            this.ended.set(true);
        }
        next
    }
}

/// Whether a request announces a body (a length above zero, or chunks).
fn has_body(req: &ServiceRequest) -> bool {
    crate::ingest::declared_length(req.request()).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// Middleware: a response to a request whose body was not read to its end says
/// `Connection: close` and ends the connection's reading side once it is sent, so the rest
/// of the upload is never read (see the module's text).
pub fn end_unread_uploads<S, B>(
    mut req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let watched = has_body(&req).then(|| {
        let ended = Rc::new(Cell::new(false));
        let inner = req.take_payload();
        req.set_payload(Payload::Stream {
            payload: Box::pin(Watched {
                inner,
                ended: ended.clone(),
            }),
        });
        (ended, req.conn_data::<ConnSocket>().copied())
    });
    let fut = srv.call(req);
    async move {
        let res = fut.await?.map_into_boxed_body();
        Ok(match watched {
            Some((ended, socket)) if !ended.get() => res.map_body(|head, body| {
                head.set_connection_type(ConnectionType::Close);
                BoxBody::new(EndsConnection::new(body, socket))
            }),
            _ => res,
        })
    }
}
