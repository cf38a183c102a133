//! The response-body wrapper that counts a WebSocket session's queued bytes down as the HTTP
//! layer takes them for the socket (the accounting itself is the registry's [`SessionIo`]).
//!
//! The registry adds bytes when it queues frames; [`OutboundStream`] subtracts them as encoded
//! WebSocket bytes leave for the socket. When a session passes its bound the registry calls
//! [`SessionIo::abort`]: the wrapper drops everything still queued, sends a 4008 close frame and
//! ends. A client that never reads again has its socket shut down by [`SessionIo::kill`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::ws::{CloseCode, CloseReason, Parser};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

pub use crate::registry::session::SessionIo;

/// Wraps the WebSocket context's byte stream (the HTTP response body).
pub struct OutboundStream<S> {
    inner: Option<S>,
    io: Arc<SessionIo>,
    closed: bool,
}

impl<S> OutboundStream<S> {
    pub fn new(inner: S, io: Arc<SessionIo>) -> Self {
        OutboundStream {
            inner: Some(inner),
            io,
            closed: false,
        }
    }
}

impl<S> Drop for OutboundStream<S> {
    fn drop(&mut self) {
        self.io.release_socket();
    }
}

impl<S, E> Stream for OutboundStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.io.register(cx.waker());
        if this.io.is_aborted() {
            // Dropping the context frees every queued frame and stops the session actor.
            this.inner = None;
            if this.closed {
                return Poll::Ready(None);
            }
            this.closed = true;
            let (code, reason) = this.io.close_reason().unwrap_or((1011, String::new()));
            let mut buf = BytesMut::new();
            let reason = CloseReason {
                code: CloseCode::from(code),
                description: Some(reason),
            };
            Parser::write_close(&mut buf, Some(reason), false);
            return Poll::Ready(Some(Ok(buf.freeze())));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                this.io.sub_queued(bytes.len());
                Poll::Ready(Some(Ok(bytes)))
            }
            other => other,
        }
    }
}
