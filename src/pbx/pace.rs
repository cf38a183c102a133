//! Paced reading of a PBX socket. The registry holds broadcast frames until its next flush
//! anyway (`[fanout]`); so once the PBX has nothing more waiting, its socket is read again only
//! just before that flush, and a busy PBX's events come in one read per flush instead of one
//! per PBX write: one wake-up of the PBX thread and of the registry per interval, not per event.
//! Reading is never paced while something urgent waits: for a second after any action is
//! written (its reply is read at once), nor after a read of a burst ([`PACED_READ_MAX`]) or
//! while more bytes are already in the socket (a PBX at full speed is read flat out).
//!
//! Knows nothing of AMI or the registry: it reads bytes, at the pace it is given.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long reading stays unpaced after an action is written.
pub const UNPACED_AFTER_ACTION: Duration = Duration::from_secs(1);
/// A read of more than this is a burst (a PBX at full speed, or one that sent more than this
/// in one interval): the socket is read again at once, whatever it holds.
pub const PACED_READ_MAX: usize = 16 * 1024;

/// When a quiet socket is read again: a little before the registry's next flush is due, so what
/// the PBX sent meanwhile joins that flush. The registry moves it on with every flush
/// ([`Pace::flushed`]); shared by every PBX actor of one registry. An interval of zero (write
/// coalescing off), or a flush that is already due, reads at once.
#[derive(Clone)]
pub struct Pace(Arc<PaceInner>);

struct PaceInner {
    base: Instant,
    /// Microseconds after `base` the next flush is due.
    due: AtomicU64,
    /// The flush interval in microseconds; zero = read at once.
    interval: AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace(Arc::new(PaceInner {
            base: Instant::now(),
            due: AtomicU64::new(0),
            interval: AtomicU64::new(0),
        }))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Pace {
    /// The registry flushed at `at`; the next flush is due `interval` later.
    pub fn flushed(&self, at: Instant, interval: Duration) {
        let due = at.saturating_duration_since(self.0.base) + interval;
        self.0.due.store(micros(due), Relaxed);
        self.0.interval.store(micros(interval), Relaxed);
    }

    /// When a socket drained at `now` should be read again; None = at once.
    pub fn resume_at(&self, now: Instant) -> Option<Instant> {
        let interval = Duration::from_micros(self.0.interval.load(Relaxed));
        if interval.is_zero() {
            return None;
        }
        let due = self.0.base + Duration::from_micros(self.0.due.load(Relaxed));
        let at = due.checked_sub(interval / 8)?;
        (at > now).then_some(at)
    }
}

/// Until when a PBX actor's socket is read unpaced; the actor moves it on with every action it
/// writes ([`Urgency::action_written`]). Shared by the actor and its reader (one thread).
#[derive(Clone)]
pub struct Urgency(Rc<Cell<Instant>>);

impl Default for Urgency {
    fn default() -> Self {
        Urgency(Rc::new(Cell::new(Instant::now() + UNPACED_AFTER_ACTION)))
    }
}

impl Urgency {
    pub fn action_written(&self) {
        self.0.set(Instant::now() + UNPACED_AFTER_ACTION);
    }

    fn is_urgent(&self) -> bool {
        Instant::now() < self.0.get()
    }
}

/// The read half of a PBX connection, read at the registry's [`Pace`].
pub struct PacedRead<R> {
    inner: R,
    /// The TCP socket under `inner` (under TLS too), to ask whether more bytes wait.
    fd: Option<RawFd>,
    pace: Pace,
    urgency: Urgency,
    sleep: Pin<Box<Sleep>>,
    paused: bool,
}

impl<R> PacedRead<R> {
    /// `fd` must stay open as long as `inner` (it is `inner`'s own socket).
    pub fn new(inner: R, fd: Option<RawFd>, pace: Pace, urgency: Urgency) -> PacedRead<R> {
        PacedRead {
            inner,
            fd,
            pace,
            urgency,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            paused: false,
        }
    }

    /// Whether the socket has no bytes waiting (unknown counts as not empty).
    fn socket_empty(&self) -> bool {
        let Some(fd) = self.fd else { return false };
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which points at `waiting`;
        // `fd` is the open socket `inner` reads (see `new`).
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut waiting) };
        rc == 0 && waiting == 0
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for PacedRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.paused {
            if !this.urgency.is_urgent() {
                std::task::ready!(this.sleep.as_mut().poll(cx));
            }
            this.paused = false;
        }
        let (room, before) = (buf.remaining(), buf.filled().len());
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        if read == 0 || read >= room || read > PACED_READ_MAX || this.urgency.is_urgent() {
            return Poll::Ready(Ok(()));
        }
        if let Some(at) = this.pace.resume_at(Instant::now()) {
            if this.socket_empty() {
                this.sleep.as_mut().reset(at);
                this.paused = true;
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair of loopback sockets: (ours, the PBX's).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ours.unwrap(), accepted.unwrap().0)
    }

    /// Reads, into a buffer larger than the data, until `want` bytes came; returns them.
    async fn read_exactly<R: AsyncRead + Unpin>(r: &mut R, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < want {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "end of stream after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// An urgency that has passed: reading is paced.
    fn calm() -> Urgency {
        let u = Urgency::default();
        u.0.set(Instant::now());
        u
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_socket_is_read_again_only_after_the_interval() {
        let (ours, mut pbx) = pair().await;
        let fd = ours.as_raw_fd();
        let pace = Pace::default();
        pace.flushed(Instant::now(), Duration::from_secs(60));
        let mut paced = PacedRead::new(ours, Some(fd), pace, calm());
        pbx.write_all(b"first").await.unwrap();
        assert_eq!(read_exactly(&mut paced, 5).await, b"first");
        pbx.write_all(b"second").await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(read_exactly(&mut paced, 6).await, b"second");
        // The clock is paused: it moved only by sleeping out the pause, which ends an eighth
        // of the interval before the registry's next flush.
        assert!(started.elapsed() >= Duration::from_millis(52_500));
    }

    #[tokio::test(start_paused = true)]
    async fn an_action_written_lifts_the_pause() {
        let (ours, mut pbx) = pair().await;
        let fd = ours.as_raw_fd();
        let pace = Pace::default();
        pace.flushed(Instant::now(), Duration::from_secs(60));
        let urgency = calm();
        let mut paced = PacedRead::new(ours, Some(fd), pace, urgency.clone());
        pbx.write_all(b"event").await.unwrap();
        assert_eq!(read_exactly(&mut paced, 5).await, b"event");
        assert!(paced.paused);
        urgency.action_written();
        pbx.write_all(b"reply").await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(read_exactly(&mut paced, 5).await, b"reply");
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(!paced.paused, "no pause while an action is recent");
    }

    /// Hands out at most 3 bytes per read, as TLS hands out one record at a time.
    struct Records(TcpStream);

    impl AsyncRead for Records {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut small = [0u8; 3];
            let mut record = ReadBuf::new(&mut small);
            std::task::ready!(Pin::new(&mut self.0).poll_read(cx, &mut record))?;
            buf.put_slice(record.filled());
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_read_on_at_once() {
        let (ours, mut pbx) = pair().await;
        let fd = ours.as_raw_fd();
        let pace = Pace::default();
        pace.flushed(Instant::now(), Duration::from_secs(60));
        let mut paced = PacedRead::new(ours, Some(fd), pace, calm());
        let burst = vec![b'x'; PACED_READ_MAX + 1];
        pbx.write_all(&burst).await.unwrap();
        while waiting(fd) < burst.len() {
            tokio::task::yield_now().await;
        }
        let mut buf = vec![0u8; 4 * PACED_READ_MAX];
        assert_eq!(paced.read(&mut buf).await.unwrap(), burst.len());
        assert!(!paced.paused, "a burst is read on at once");
        pbx.write_all(b"tail").await.unwrap();
        assert_eq!(read_exactly(&mut paced, 4).await, b"tail");
    }

    /// Bytes waiting in socket `fd`.
    fn waiting(fd: RawFd) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int to `n`; `fd` is a test's open socket.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        n as usize
    }

    #[tokio::test(start_paused = true)]
    async fn no_pause_while_bytes_wait_in_the_socket_or_when_the_pace_is_zero() {
        let (ours, mut pbx) = pair().await;
        let fd = ours.as_raw_fd();
        let pace = Pace::default();
        let mut paced = PacedRead::new(Records(ours), Some(fd), pace.clone(), calm());
        let mut buf = [0u8; 64];
        // Pace zero: never paused.
        pbx.write_all(b"abc").await.unwrap();
        assert_eq!(read_exactly(&mut paced, 3).await, b"abc");
        assert!(!paced.paused);
        // A record read while more records wait: read on at once.
        pace.flushed(Instant::now(), Duration::from_secs(60));
        pbx.write_all(b"defghi").await.unwrap();
        paced.inner.0.readable().await.unwrap();
        assert_eq!(paced.read(&mut buf).await.unwrap(), 3);
        assert!(!paced.paused, "bytes still wait in the socket");
        assert_eq!(paced.read(&mut buf).await.unwrap(), 3);
        assert_eq!(&buf[..3], b"ghi");
        assert!(paced.paused, "the socket is drained now");
    }
}
