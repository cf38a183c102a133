//! The writing side of one simulator connection: it owns the socket's write half and writes, in
//! queue order, the banner, responses, events published to the connection and flood batches,
//! coalescing what is queued into writes of up to one batch. A slow reader only slows this loop.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::flood::{Flood, BATCH_BYTES};
use super::session::ConnShared;
use super::{FloodSpec, Inner};

/// Messages queued for one connection before it counts as not reading (and is closed, as
/// Asterisk closes a session that hits its write timeout).
pub(crate) const QUEUE_MESSAGES: usize = 8192;

/// What the writer of one connection is asked to do.
pub(crate) enum Out {
    /// An event (counted in `events_sent`).
    Event(Bytes),
    /// Banner-less bytes such as responses.
    Raw(Bytes),
    /// Test bytes, written by themselves so a split stays a split.
    Inject(Bytes),
    /// Start (replacing any running one) or stop a flood.
    Flood(Option<FloodSpec>),
    /// Flush what is queued, then close.
    Close,
}

pub(crate) async fn write_loop(
    inner: &Inner,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Out>,
    shared: &ConnShared,
    id: u64,
) {
    let token = &shared.token;
    let mut buf = BytesMut::with_capacity(BATCH_BYTES + 4096);
    let mut flood: Option<Flood> = None;
    // A black hole holds the banner back until it ends, or until the client gives up.
    let mut silent = inner.silent.subscribe();
    loop {
        tokio::select! {
            r = silent.wait_for(|on| !*on) => match r {
                Ok(_) => break,
                Err(_) => return,
            },
            _ = token.cancelled() => return,
            msg = rx.recv() => if matches!(msg, None | Some(Out::Close)) { return },
        }
    }
    let banner = format!("{}\r\n", inner.cfg.banner);
    if !write(&mut wr, banner.as_bytes(), token).await {
        return;
    }
    loop {
        let flooding = flood.is_some() && !*inner.silent.borrow();
        let delay = match flood.as_mut() {
            Some(f) if flooding => f.delay(),
            _ => Duration::ZERO,
        };
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            msg = rx.recv() => {
                let Some(mut msg) = msg else { return };
                // Coalesce queued responses and events into one write.
                buf.clear();
                let mut events = 0;
                loop {
                    match msg {
                        Out::Event(b) => {
                            buf.extend_from_slice(&b);
                            events += 1;
                        }
                        Out::Raw(b) => buf.extend_from_slice(&b),
                        Out::Inject(b) => {
                            let before = write(&mut wr, &buf, token).await;
                            if !before || !write(&mut wr, &b, token).await {
                                return;
                            }
                            buf.clear();
                        }
                        Out::Flood(spec) => flood = spec.map(|s| Flood::new(&s, id)),
                        Out::Close => {
                            if write(&mut wr, &buf, token).await {
                                inner.stats.events_sent.fetch_add(events, Relaxed);
                                let _ = wr.shutdown().await;
                            }
                            return;
                        }
                    }
                    match rx.try_recv() {
                        Ok(next) if buf.len() < BATCH_BYTES => msg = next,
                        Ok(next) => {
                            // Batch full: write it, then carry on with `next`.
                            if !write(&mut wr, &buf, token).await {
                                return;
                            }
                            inner.stats.events_sent.fetch_add(events, Relaxed);
                            buf.clear();
                            events = 0;
                            msg = next;
                        }
                        Err(_) => break,
                    }
                }
                if !write(&mut wr, &buf, token).await {
                    return;
                }
                inner.stats.events_sent.fetch_add(events, Relaxed);
            }
            _ = async { if !delay.is_zero() { tokio::time::sleep(delay).await } }, if flooding => {
                let Some(f) = flood.as_mut() else { continue };
                buf.clear();
                let n = f.fill(&mut buf);
                if !write(&mut wr, &buf, token).await {
                    return;
                }
                inner.stats.events_sent.fetch_add(n, Relaxed);
                if f.finished() {
                    flood = None;
                }
            }
        }
    }
}

/// Writes all of `bytes` unless the connection is cancelled first; false when it is over.
async fn write(wr: &mut OwnedWriteHalf, bytes: &[u8], token: &CancellationToken) -> bool {
    if bytes.is_empty() {
        return true;
    }
    tokio::select! {
        r = wr.write_all(bytes) => r.is_ok(),
        _ = token.cancelled() => false,
    }
}
