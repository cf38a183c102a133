//! The session side of the registry: the protocol every front end (the WebSocket, the AMI
//! listener) implements to receive what the registry routes to it. A session joins with a
//! [`Format`], a `Recipient<Deliver>` and a `Recipient<CloseSession>` and a shared [`SessionIo`]
//! whose queued bytes the registry bounds; it never learns how the registry routes.
//!
//! This module knows no front end: the WebSocket and AMI modules import it, never the reverse.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{
    fence, AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::metrics::{Metrics, SharedMetrics};

use super::fanout::Unfiltered;

/// How a session wants packets rendered; each format is rendered at most once per broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The SPEC §4 JSON envelope (WebSocket; the AMI listener's `OutputFormat: json`).
    Json,
    /// AMI text with a `Server:` header (the AMI listener).
    Ami,
}

impl Format {
    /// Index into per-format caches.
    pub const COUNT: usize = 2;
    /// Every format, in index order.
    pub const ALL: [Format; Format::COUNT] = [Format::Json, Format::Ami];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A batch of frames shared by every session that takes all of it, with its wire rendering
/// (made by the first front end that writes it, then the same bytes for every session: one
/// copy, whatever the threads; with the fan-out's flush budget, sessions clone it at most a few
/// tens of thousands of times a second, so a shared reference count costs nothing that shows).
pub struct SharedFrames {
    frames: Arc<[ByteString]>,
    bytes: usize,
    wire: OnceLock<Bytes>,
}

impl SharedFrames {
    pub fn new(frames: Arc<[ByteString]>) -> SharedFrames {
        let bytes = frames.iter().map(|f| f.len()).sum();
        SharedFrames {
            frames,
            bytes,
            wire: OnceLock::new(),
        }
    }

    /// The batch framed by `render`, once.
    fn wire(&self, render: Render) -> Bytes {
        self.wire.get_or_init(|| render(&self.frames)).clone()
    }

    pub fn frames(&self) -> &Arc<[ByteString]> {
        &self.frames
    }

    /// Bytes of all frames (what a session is charged for them).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Frames to write, shared with every other session that receives them; or a whole shared
/// batch this session selects from itself ([`Deliver::take`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(Delivery);

enum Delivery {
    Frames(Arc<SharedFrames>),
    Select(Box<Unfiltered>),
}

/// How a front end frames a batch for its socket.
pub type Render = fn(&[ByteString]) -> Bytes;

impl Deliver {
    pub fn frames(frames: Arc<[ByteString]>) -> Deliver {
        Deliver::shared(Arc::new(SharedFrames::new(frames)))
    }

    pub(super) fn shared(frames: Arc<SharedFrames>) -> Deliver {
        Deliver(Delivery::Frames(frames))
    }

    pub(super) fn select(batch: Unfiltered) -> Deliver {
        Deliver(Delivery::Select(Box::new(batch)))
    }

    /// The frames to write. A session that filters pays for it here, in its own task: the
    /// selection runs now, and the bytes it drops are counted off `io`.
    pub fn take(self, io: &SessionIo) -> Arc<[ByteString]> {
        match self.0 {
            Delivery::Frames(shared) => shared.frames.clone(),
            // Closed already: what is left is dropped, not selected.
            Delivery::Select(batch) if io.is_aborted() => {
                batch.drop_unselected(io);
                Arc::from(Vec::new())
            }
            Delivery::Select(batch) => batch.select(io),
        }
    }

    /// The bytes to write, framed by `render` (once for every session sharing the batch), and
    /// how many queued bytes they stand for.
    pub fn wire(self, io: &SessionIo, render: Render) -> (Bytes, usize) {
        match self.0 {
            Delivery::Frames(shared) => (shared.wire(render), shared.bytes),
            select => {
                let frames = Deliver(select).take(io);
                let bytes = frames.iter().map(|f| f.len()).sum();
                (render(&frames), bytes)
            }
        }
    }
}

/// Close this session (WebSocket close code: 1001 at shutdown, 4001 when credentials changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: u16,
    pub reason: String,
}

/// A token bucket: `rate` tokens per second, bursts up to `burst` (`rate` unless given).
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32) -> TokenBucket {
        TokenBucket::with_burst(rate, rate)
    }

    pub fn with_burst(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: Instant::now(),
        }
    }

    /// Takes one token; false when the session is over its rate.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Shared between the registry, a session actor and its socket writer: the bytes queued towards
/// one client, and the order to drop them and close.
pub struct SessionIo {
    queued: AtomicUsize,
    /// Batches for a front end that writes them from its own socket task (the WebSocket),
    /// oldest first; their bytes are in `queued`.
    outq: Mutex<VecDeque<Deliver>>,
    aborted: AtomicBool,
    close: Mutex<Option<(u16, String)>>,
    waker: AtomicWaker,
    /// Told when the writer takes the queue from above `watch` bytes to at most that (0: no
    /// one has asked), for a registry waiting out a congestion.
    drained: Notify,
    watch: AtomicUsize,
    /// The connection's socket and peer, only to shut it down; forgotten when the body drops.
    socket: Mutex<Option<(RawFd, SocketAddr)>>,
    /// Released when the last reference goes: the open-session count.
    _slot: Option<SessionSlot>,
}

/// Queue slots an idle session keeps.
const IDLE_QUEUE_CAPACITY: usize = 8;

/// Picks one front end's open-session gauge out of the metrics.
pub type Gauge = fn(&Metrics) -> &AtomicU64;

/// Counts one open session in a front end's gauge (`ws_sessions`, `ami_sessions`) for as long
/// as it lives.
pub struct SessionSlot(SharedMetrics, Gauge);

impl SessionSlot {
    /// Takes a slot if fewer than `max` sessions of this front end are open.
    pub fn acquire(metrics: &SharedMetrics, gauge: Gauge, max: usize) -> Option<SessionSlot> {
        gauge(metrics)
            .fetch_update(Relaxed, Relaxed, |n| (n < max as u64).then_some(n + 1))
            .ok()
            .map(|_| SessionSlot(metrics.clone(), gauge))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Relaxed);
    }
}

impl SessionIo {
    pub fn new(socket: Option<(RawFd, SocketAddr)>, slot: Option<SessionSlot>) -> Arc<SessionIo> {
        Arc::new(SessionIo {
            queued: AtomicUsize::new(0),
            outq: Mutex::new(VecDeque::new()),
            aborted: AtomicBool::new(false),
            close: Mutex::new(None),
            waker: AtomicWaker::new(),
            drained: Notify::new(),
            watch: AtomicUsize::new(0),
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

    /// The writer took `n` bytes for the socket.
    pub fn sub_queued(&self, n: usize) {
        // SeqCst, pairing with the fence in `any_drained`: the waiter sees this subtraction or
        // this sees its mark (no fence of its own: on x86 the read-modify-write is one already).
        let before = self
            .queued
            .fetch_update(SeqCst, Relaxed, |q| Some(q.saturating_sub(n)))
            .unwrap_or_default();
        let mark = self.watch.load(SeqCst);
        if mark > 0 && before > mark && before.saturating_sub(n) <= mark {
            self.drained.notify_waiters();
        }
    }

    /// Queues a batch for the socket task and wakes it.
    pub fn push(&self, deliver: Deliver) {
        if let Ok(mut q) = self.outq.lock() {
            q.push_back(deliver);
        }
        self.waker.wake();
    }

    /// The oldest queued batch; an emptied queue gives back memory a burst made it take.
    pub fn pop(&self) -> Option<Deliver> {
        let mut q = self.outq.lock().ok()?;
        let next = q.pop_front();
        if q.is_empty() && q.capacity() > IDLE_QUEUE_CAPACITY {
            q.shrink_to(IDLE_QUEUE_CAPACITY);
        }
        next
    }

    /// Drops every queued batch (the session is closing).
    pub fn clear(&self) {
        let dropped = self.outq.lock().map(|mut q| std::mem::take(&mut *q));
        drop(dropped);
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

    /// The close code and reason given to [`SessionIo::abort`].
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.close.lock().ok().and_then(|c| c.clone())
    }

    /// Wakes this task when the session is aborted (one writer per session).
    pub fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Forgets the socket (its connection is gone), so `kill` never touches a reused descriptor.
    pub fn release_socket(&self) {
        if let Ok(mut guard) = self.socket.lock() {
            guard.take();
        }
    }
}

/// Resolves as soon as one of `ios` has at most `mark` bytes queued (at once if one has). The
/// writers tell it only when they cross `mark`, so a wait costs one look at each queue, not one
/// per write.
pub async fn any_drained(ios: &[Arc<SessionIo>], mark: usize) {
    for io in ios {
        io.watch.store(mark, Relaxed);
    }
    fence(SeqCst);
    loop {
        // Made before the check: a crossing in between still wakes this.
        let drained: Vec<_> = ios
            .iter()
            .map(|io| Box::pin(io.drained.notified()))
            .collect();
        if ios.is_empty() || ios.iter().any(|io| io.queued() <= mark) {
            return;
        }
        futures_util::future::select_all(drained).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::poll;

    #[tokio::test]
    async fn a_congestion_wait_ends_when_one_writer_takes_its_queue_below_the_mark() {
        let (a, b) = (SessionIo::new(None, None), SessionIo::new(None, None));
        a.add_queued(1000);
        b.add_queued(1000);
        let ios = vec![a.clone(), b.clone()];
        let mut wait = Box::pin(any_drained(&ios, 500));
        assert!(poll!(wait.as_mut()).is_pending(), "both are behind");
        b.sub_queued(100);
        assert!(
            poll!(wait.as_mut()).is_pending(),
            "900 bytes is still behind"
        );
        a.sub_queued(0);
        assert!(poll!(wait.as_mut()).is_pending(), "nothing taken");
        b.sub_queued(600);
        assert!(
            poll!(wait.as_mut()).is_ready(),
            "300 bytes is below the mark"
        );
        assert!(
            poll!(Box::pin(any_drained(&ios, 500))).is_ready(),
            "b is below it at once"
        );
        assert!(
            poll!(Box::pin(any_drained(&[], 500))).is_ready(),
            "no one to wait for"
        );
    }
}
