//! The HTTP listener's connection: the socket (plain or TLS) as actix-http's dispatcher sees it,
//! with a side queue a WebSocket session writes its frames into. The dispatcher's own bytes
//! (response heads, ordinary bodies) pass through untouched; the side queue's shared buffers are
//! written, vectored and without a copy into actix-http's write buffer, each time the
//! dispatcher flushes, which it does only after its own buffer (the 101 head) is out. So the
//! head always goes first, and the frames keep the order they were queued in.
//!
//! Knows nothing of WebSocket frames or sessions: it writes bytes it is given.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffers one vectored write takes at most (Linux's IOV_MAX is 1024).
const MAX_SLICES: usize = 64;

/// One accepted connection.
pub struct Conn<S> {
    inner: S,
    side: SideQueue,
}

impl<S> Conn<S> {
    pub fn new(inner: S) -> Conn<S> {
        Conn {
            inner,
            side: SideQueue::default(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The queue a WebSocket session on this connection writes through.
    pub fn side_queue(&self) -> SideQueue {
        self.side.clone()
    }
}

/// Bytes queued for the socket behind whatever the dispatcher writes, in order. Shared by the
/// connection and the response body of the one request that upgraded it (same thread).
#[derive(Clone, Default)]
pub struct SideQueue(Rc<RefCell<Side>>);

#[derive(Default)]
struct Side {
    bufs: VecDeque<Bytes>,
    bytes: usize,
    /// The writer stopped queueing at its limit: wake it once the queue drains below that.
    limit: Option<usize>,
}

impl SideQueue {
    /// Queues `bytes` behind everything queued before.
    pub fn push(&self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let mut side = self.0.borrow_mut();
        side.bytes += bytes.len();
        side.bufs.push_back(bytes);
    }

    /// Whether fewer than `limit` bytes wait for the socket; if not, the task is woken when
    /// the connection has written enough for that to be true.
    pub fn has_room(&self, limit: usize) -> bool {
        let mut side = self.0.borrow_mut();
        if side.bytes < limit {
            return true;
        }
        side.limit = Some(limit);
        false
    }

    /// Bytes waiting for the socket.
    pub fn queued(&self) -> usize {
        self.0.borrow().bytes
    }
}

impl<S: AsyncWrite + Unpin> Conn<S> {
    /// Writes the side queue until it is empty or the socket would block.
    fn poll_side(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut side = self.side.0.borrow_mut();
            if side.bufs.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            for (slot, buf) in slices.iter_mut().zip(&side.bufs) {
                *slot = IoSlice::new(buf);
                n += 1;
            }
            let written = match Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            side.bytes = side.bytes.saturating_sub(written);
            let mut left = written;
            while left > 0 {
                let Some(front) = side.bufs.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    side.bufs.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
            if side.limit.is_some_and(|limit| side.bytes < limit) {
                side.limit = None;
                cx.waker().wake_by_ref();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// The dispatcher flushes after writing all of its own buffer: the side queue goes now.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_side(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_side(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::task::{Wake, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_side_queue_goes_after_the_dispatchers_bytes_in_order_through_a_small_pipe() {
        // An 8-byte pipe: every write is partial and most flushes wait for the reader.
        let (socket, mut peer) = tokio::io::duplex(8);
        let mut conn = Conn::new(socket);
        let side = conn.side_queue();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.map(|_| got)
        });
        conn.write_all(b"HTTP/1.1 101 head\r\n\r\n").await.unwrap();
        side.push(Bytes::from_static(b"first frame;"));
        side.push(Bytes::new());
        side.push(Bytes::from_static(b"second;"));
        assert_eq!(side.queued(), 19);
        conn.flush().await.unwrap();
        assert_eq!(side.queued(), 0, "a flush writes the whole side queue");
        side.push(Bytes::from_static(b"third"));
        conn.shutdown().await.unwrap();
        let got = reader.await.unwrap().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            "HTTP/1.1 101 head\r\n\r\nfirst frame;second;third"
        );
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[tokio::test]
    async fn a_writer_stopped_at_its_limit_is_woken_once_the_queue_drains_below_it() {
        let (socket, mut peer) = tokio::io::duplex(64);
        let mut conn = Conn::new(socket);
        let side = conn.side_queue();
        side.push(Bytes::from(vec![b'x'; 100]));
        assert!(side.has_room(101));
        assert!(!side.has_room(50), "100 bytes wait, the limit is 50");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        // The pipe takes 64 bytes: 36 are left, below the limit, so the writer is told.
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_pending());
        assert_eq!(side.queued(), 36);
        assert_eq!(
            count.0.load(Relaxed),
            1,
            "woken once, on crossing the limit"
        );
        let mut buf = [0u8; 64];
        peer.read_exact(&mut buf).await.unwrap();
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_ready());
        assert_eq!(side.queued(), 0);
    }
}
