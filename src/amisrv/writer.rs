//! The socket writer of one AMI session: takes the frames the session queued, writes them in
//! batches, and counts their bytes off the session's [`SessionIo`]. It stops at once when the
//! registry aborts the session (a slow consumer: whatever is still queued is dropped), when the
//! socket fails or accepts nothing for [`WRITE_TIMEOUT`], or after the last frame once the
//! session has closed its side.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytestring::ByteString;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::registry::session::SessionIo;

/// A client whose socket takes no byte of a batch for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes gathered into one write, about.
const BATCH_BYTES: usize = 64 * 1024;

/// Frames to write; `newline` appends "\n" after each (one JSON object per line).
pub struct Out {
    pub frames: Arc<[ByteString]>,
    pub newline: bool,
}

/// Why the writer ended (for the session's log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// The session closed its side and everything was written.
    Drained,
    /// The registry cut the session loose.
    Aborted,
    /// The socket failed or stalled.
    Failed,
}

fn aborted(io: &SessionIo) -> impl std::future::Future<Output = ()> + '_ {
    poll_fn(move |cx| {
        io.register(cx.waker());
        if io.is_aborted() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

fn append(buf: &mut Vec<u8>, out: &Out) -> usize {
    let mut counted = 0;
    for f in out.frames.iter() {
        buf.extend_from_slice(f.as_bytes());
        counted += f.len();
        if out.newline {
            buf.push(b'\n');
        }
    }
    counted
}

/// Runs until the session ends; returns why.
pub async fn run<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    io: Arc<SessionIo>,
) -> WriterEnd {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let next = tokio::select! {
            biased;
            _ = aborted(&io) => return WriterEnd::Aborted,
            next = rx.recv() => next,
        };
        let Some(first) = next else {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
            return WriterEnd::Drained;
        };
        buf.clear();
        let mut counted = append(&mut buf, &first);
        while buf.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => counted += append(&mut buf, &more),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            biased;
            _ = aborted(&io) => return WriterEnd::Aborted,
            r = tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(&buf)) => r,
        };
        match written {
            Ok(Ok(())) => io.sub_queued(counted),
            _ => return WriterEnd::Failed,
        }
    }
}
