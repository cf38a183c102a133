//! The response-body wrapper that writes a WebSocket session's queued batches and counts its
//! queued bytes down as they leave (the accounting itself is the registry's [`SessionIo`]).
//!
//! The registry queues batches on the session's [`SessionIo`] and wakes this task; a batch
//! every session takes whole is framed once (WebSocket header and JSON, [`frame_texts`]) and
//! the same bytes go to every session; one that filters is selected and framed here, in its
//! own task. Everything, batches and the context's frames alike, goes in order onto the
//! connection's side queue ([`crate::http::conn`]), never through actix-http's write buffer.
//! The session actor's context stream carries only control frames (ping, pong, close), and
//! drives the actor. When a session passes its bound the registry calls
//! [`SessionIo::abort`]: the wrapper drops everything still queued, sends a 4008 close frame
//! and ends. A client that never reads again has its socket shut down by [`SessionIo::kill`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::AcqRel, Ordering::Release};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use futures_util::Stream;

use crate::http::conn::SideQueue;
pub use crate::registry::session::SessionIo;

/// Frames `texts` as unmasked WebSocket text frames, back to back in one buffer.
pub fn frame_texts(texts: &[ByteString]) -> Bytes {
    let size: usize = texts.iter().map(|t| t.len() + 10).sum();
    let mut buf = BytesMut::with_capacity(size);
    for t in texts {
        Parser::write_message(&mut buf, t.as_bytes(), OpCode::Text, true, false);
    }
    buf.freeze()
}

/// Bytes a session hands its connection's side queue before it waits for the socket to take
/// them: about what actix-http's own write buffer held (32 KiB), but in shared buffers.
const SIDE_LIMIT: usize = 64 * 1024;

/// The HTTP response body of a WebSocket session. It writes nothing through actix-http (which
/// would copy every frame into its write buffer): everything goes, in order, into the
/// connection's [`SideQueue`], which the connection writes behind the 101 head.
pub struct OutboundStream<S> {
    inner: Option<S>,
    io: Arc<SessionIo>,
    side: SideQueue,
    /// What the context is polled with: it tells this task that the context has work (its
    /// mailbox, timers, the client's frames), so a wake-up for a batch does not poll it.
    inner_wake: Arc<InnerWake>,
    inner_waker: Waker,
    closed: bool,
    /// The context's close frame, written after the batches queued before it.
    held: Option<Bytes>,
    inner_done: bool,
}

impl<S> OutboundStream<S> {
    pub fn new(inner: S, io: Arc<SessionIo>, side: SideQueue) -> Self {
        let inner_wake = Arc::new(InnerWake {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        OutboundStream {
            inner: Some(inner),
            io,
            side,
            inner_waker: Waker::from(inner_wake.clone()),
            inner_wake,
            closed: false,
            held: None,
            inner_done: false,
        }
    }
}

impl<S> Drop for OutboundStream<S> {
    fn drop(&mut self) {
        self.io.release_socket();
    }
}

/// The session actor context's waker: marks the context as having work, then wakes the task.
struct InnerWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl InnerWake {
    /// Whether the context asked to be polled since the last look (and forgets it).
    fn take(&self) -> bool {
        self.woken.swap(false, AcqRel)
    }

    /// Polls the context again on the task's next poll.
    fn again(&self) {
        self.woken.store(true, Release);
    }
}

impl Wake for InnerWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.again();
        self.task.wake();
    }
}

/// Whether `frame` (one encoded server frame) is a close frame.
fn is_close(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x0f == 0x8)
}

impl<S, E> Stream for OutboundStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.io.register(cx.waker());
        this.inner_wake.task.register(cx.waker());
        if this.io.is_aborted() {
            // Dropping the context frees every queued frame and stops the session actor.
            this.inner = None;
            this.io.clear();
            if !this.closed {
                this.closed = true;
                let (code, reason) = this.io.close_reason().unwrap_or((1011, String::new()));
                let mut buf = BytesMut::new();
                let reason = CloseReason {
                    code: CloseCode::from(code),
                    description: Some(reason),
                };
                Parser::write_close(&mut buf, Some(reason), false);
                this.side.push(buf.freeze());
            }
            // The connection writes what is queued before it shuts down.
            return Poll::Ready(None);
        }
        // The context first, so the actor runs (and pings are answered) however busy we are;
        // but only when it has work: most wake-ups are the registry's batches.
        if this.held.is_none() && !this.inner_done && this.inner_wake.take() {
            let mut inner_cx = Context::from_waker(&this.inner_waker);
            while let Some(inner) = this.inner.as_mut() {
                if !this.side.has_room(SIDE_LIMIT) {
                    // Woken again once the socket took some of the queue.
                    this.inner_wake.again();
                    break;
                }
                match Pin::new(inner).poll_next(&mut inner_cx) {
                    Poll::Ready(Some(Ok(bytes))) if is_close(&bytes) => {
                        this.held = Some(bytes);
                        break;
                    }
                    Poll::Ready(Some(Ok(bytes))) => this.side.push(bytes),
                    Poll::Ready(Some(Err(e))) => {
                        this.inner_wake.again();
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(None) => {
                        this.inner_done = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        let mut emptied = false;
        while !this.closed && this.side.has_room(SIDE_LIMIT) {
            let Some(batch) = this.io.pop() else {
                emptied = true;
                if let Some(close) = this.held.take() {
                    // Nothing after a close frame; the context still runs until the actor stops.
                    this.closed = true;
                    this.io.clear();
                    this.side.push(close);
                    this.inner_wake.again();
                    cx.waker().wake_by_ref();
                }
                break;
            };
            let (bytes, queued) = batch.wire(&this.io, frame_texts);
            this.io.sub_queued(queued);
            this.side.push(bytes);
        }
        if this.inner_done && (this.closed || emptied) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}
