//! Per-session outbound accounting: bytes queued towards one browser, and the response-body
//! wrapper that counts them down as the HTTP layer takes them for the socket.
//!
//! The registry adds bytes when it queues frames; [`OutboundStream`] subtracts them as encoded
//! WebSocket bytes leave for the socket. When a session passes its bound the registry calls
//! [`SessionIo::abort`]: the wrapper drops everything still queued, sends a 4008 close frame and
//! ends. A client that never reads again has its socket shut down by [`SessionIo::kill`].

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use actix_http::ws::{CloseCode, CloseReason, Parser};
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use futures_util::Stream;

use crate::metrics::SharedMetrics;

/// Shared between the registry, the session actor and the response body of one session.
pub struct SessionIo {
    queued: AtomicUsize,
    aborted: AtomicBool,
    close: Mutex<Option<(u16, String)>>,
    waker: AtomicWaker,
    /// The connection's socket and peer, only to shut it down; forgotten when the body drops.
    socket: Mutex<Option<(RawFd, SocketAddr)>>,
    /// Released when the last reference goes: the open-session count.
    _slot: Option<SessionSlot>,
}

/// Counts one open session in the `ws_sessions` gauge for as long as it lives.
pub struct SessionSlot(SharedMetrics);

impl SessionSlot {
    /// Takes a slot if fewer than `max` sessions are open.
    pub fn acquire(metrics: &SharedMetrics, max: usize) -> Option<SessionSlot> {
        metrics
            .ws_sessions
            .fetch_update(Relaxed, Relaxed, |n| (n < max as u64).then_some(n + 1))
            .ok()
            .map(|_| SessionSlot(metrics.clone()))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.ws_sessions.fetch_sub(1, Relaxed);
    }
}

impl SessionIo {
    pub fn new(socket: Option<(RawFd, SocketAddr)>, slot: Option<SessionSlot>) -> Arc<SessionIo> {
        Arc::new(SessionIo {
            queued: AtomicUsize::new(0),
            aborted: AtomicBool::new(false),
            close: Mutex::new(None),
            waker: AtomicWaker::new(),
            socket: Mutex::new(socket),
            _slot: slot,
        })
    }

    /// Bytes queued and not yet taken by the socket writer.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    pub fn add_queued(&self, n: usize) {
        self.queued.fetch_add(n, Relaxed);
    }

    fn sub_queued(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(n)));
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Relaxed)
    }

    /// Drops what is queued and closes with `code`; wakes the body so it happens promptly.
    pub fn abort(&self, code: u16, reason: &str) {
        if let Ok(mut close) = self.close.lock() {
            *close = Some((code, reason.to_string()));
        }
        self.aborted.store(true, Relaxed);
        self.waker.wake();
    }

    /// Shuts the socket down if the connection is still open (a client that stopped reading).
    pub fn kill(&self) {
        let Ok(guard) = self.socket.lock() else {
            return;
        };
        if let Some((fd, peer)) = *guard {
            // SAFETY: shutdown/getpeername on a descriptor number are harmless even if it was
            // closed meanwhile; the peer check makes sure it is still this session's socket.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let sock = socket2::SockRef::from(&fd);
            if sock.peer_addr().ok().and_then(|a| a.as_socket()) == Some(peer) {
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn release_socket(&self) {
        if let Ok(mut guard) = self.socket.lock() {
            guard.take();
        }
    }
}

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
        this.io.waker.register(cx.waker());
        if this.io.is_aborted() {
            // Dropping the context frees every queued frame and stops the session actor.
            this.inner = None;
            if this.closed {
                return Poll::Ready(None);
            }
            this.closed = true;
            let (code, reason) = this
                .io
                .close
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .unwrap_or((1011, String::new()));
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
