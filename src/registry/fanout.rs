//! The session table and fan-out: shares each rendered frame with every session allowed to see
//! it, counts the bytes queued per session, and reports sessions past their bound.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Recipient;
use bytestring::ByteString;

use crate::ami::Packet;
use crate::auth::Rights;
use crate::metrics::{Metrics, SharedMetrics};
use crate::ws::outbound::SessionIo;
use crate::ws::session::{CloseSession, Deliver};

use super::subscription::Subscription;

/// A frame on its way to sessions; `packet` (for events) lets per-session filters look inside.
pub struct Outgoing {
    pub frame: ByteString,
    pub packet: Option<Packet>,
}

/// One joined session.
pub struct SessionEntry {
    pub user: String,
    pub out: Recipient<Deliver>,
    pub close: Recipient<CloseSession>,
    pub io: Arc<SessionIo>,
    pub rights: Arc<Rights>,
    pub subscription: Option<Subscription>,
    /// Outstanding actions of this session.
    pub pending: usize,
}

impl SessionEntry {
    /// Whether this session receives everything from a server it may see.
    fn takes_all(&self) -> bool {
        self.rights.events.is_all() && self.subscription.as_ref().is_none_or(|s| s.events_all())
    }

    fn admits(&self, out: &Outgoing) -> bool {
        let Some(p) = &out.packet else { return true };
        let Some(event) = p.event() else { return true };
        self.rights.may_see_event(event) && self.subscription.as_ref().is_none_or(|s| s.admits(p))
    }

    fn sees_server(&self, id: u32, name: &str) -> bool {
        self.rights.may_see_server(id, name)
            && self
                .subscription
                .as_ref()
                .is_none_or(|s| s.sees_server(id, name))
    }
}

/// Every joined session, keyed by session id.
pub struct Sessions {
    pub map: HashMap<u64, SessionEntry>,
    queue_limit: usize,
    metrics: SharedMetrics,
}

impl Sessions {
    pub fn new(queue_limit: usize, metrics: SharedMetrics) -> Sessions {
        Sessions {
            map: HashMap::new(),
            queue_limit,
            metrics,
        }
    }

    /// When every session is more than half its bound behind, their queues (to wait on):
    /// reading the PBX faster would only cut them all, while holding back slows no one who
    /// is keeping up, since no one is.
    pub fn congested(&self) -> Option<Vec<Arc<SessionIo>>> {
        let half = self.queue_limit / 2;
        let all_behind = !self.map.is_empty() && self.map.values().all(|s| s.io.queued() > half);
        all_behind.then(|| self.map.values().map(|s| s.io.clone()).collect())
    }

    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    /// Queues frames to one session; false if that would pass its bound (caller cuts it loose).
    pub fn send(&self, session: u64, frames: Arc<[ByteString]>) -> bool {
        let Some(entry) = self.map.get(&session) else {
            return true;
        };
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        self.push(entry, frames, bytes)
    }

    fn push(&self, entry: &SessionEntry, frames: Arc<[ByteString]>, bytes: usize) -> bool {
        if entry.io.queued() + bytes > self.queue_limit {
            return false;
        }
        entry.io.add_queued(bytes);
        Metrics::add(&self.metrics.ws_messages_out_total, frames.len() as u64);
        Metrics::add(&self.metrics.ws_bytes_out_total, bytes as u64);
        entry.out.do_send(Deliver { frames });
        true
    }

    /// Sends a server's frames to every session that may see them; returns the sessions that
    /// fell behind. Sessions that take everything share one `Arc` of the frames.
    pub fn broadcast(&self, server: (u32, &str), batch: &[Outgoing]) -> Vec<u64> {
        if batch.is_empty() || self.map.is_empty() {
            return Vec::new();
        }
        let mut shared: Option<(Arc<[ByteString]>, usize)> = None;
        let mut slow = Vec::new();
        for (id, entry) in &self.map {
            if !entry.sees_server(server.0, server.1) {
                continue;
            }
            let ok = if entry.takes_all() {
                let (frames, bytes) = shared
                    .get_or_insert_with(|| {
                        let bytes = batch.iter().map(|o| o.frame.len()).sum();
                        (batch.iter().map(|o| o.frame.clone()).collect(), bytes)
                    })
                    .clone();
                self.push(entry, frames, bytes)
            } else {
                let frames: Vec<ByteString> = batch
                    .iter()
                    .filter(|o| entry.admits(o))
                    .map(|o| o.frame.clone())
                    .collect();
                let bytes = frames.iter().map(|f| f.len()).sum();
                frames.is_empty() || self.push(entry, frames.into(), bytes)
            };
            if !ok {
                slow.push(*id);
            }
        }
        slow
    }
}
