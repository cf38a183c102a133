//! The session table and fan-out: shares each rendered frame with every session allowed to see
//! it, counts the bytes queued per session, and reports sessions past their bound. A batch is
//! rendered at most once per [`Format`], and only in the formats some receiving session uses.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Recipient;
use bytestring::ByteString;

use crate::ami::Packet;
use crate::amisrv::render::{render_packet, IdRewrite};
use crate::auth::Rights;
use crate::metrics::{Metrics, SharedMetrics};

use super::session::{CloseSession, Deliver, Format, SessionIo};
use super::subscription::Subscription;

/// A frame on its way to sessions; `packet` (for events) lets per-session filters look inside.
pub struct Outgoing {
    /// The JSON rendering (rendered once, by the PBX actor or the registry).
    pub frame: ByteString,
    pub packet: Option<Packet>,
    /// For a packet carrying a requester's restored ActionID (a UserEvent): that id.
    pub action_id: Option<String>,
    /// What AMI sessions get for a frame that is no PBX packet (a status change); None = nothing.
    pub ami_notice: Option<Packet>,
}

impl Outgoing {
    /// A PBX packet.
    pub fn packet(frame: ByteString, packet: Packet, action_id: Option<String>) -> Outgoing {
        Outgoing {
            frame,
            packet: Some(packet),
            action_id,
            ami_notice: None,
        }
    }

    /// A frame of amihub's own, with what AMI sessions get instead (None: it is JSON only).
    pub fn notice(frame: ByteString, ami_notice: Option<Packet>) -> Outgoing {
        Outgoing {
            frame,
            packet: None,
            action_id: None,
            ami_notice,
        }
    }

    /// The AMI text of this frame, or None when AMI sessions get nothing for it.
    fn render_ami(&self, server: &str) -> Option<ByteString> {
        let id = self
            .action_id
            .as_deref()
            .map_or(IdRewrite::Keep, IdRewrite::Restore);
        self.packet
            .as_ref()
            .or(self.ami_notice.as_ref())
            .map(|p| render_packet(p, Some(server), id))
    }
}

/// A batch's renderings, each made on first use and then shared.
struct Rendered<'a> {
    batch: &'a [Outgoing],
    server: &'a str,
    /// Per format: every frame (None = not for that format), and the whole batch as one Arc.
    frames: [Option<Vec<Option<ByteString>>>; Format::COUNT],
    shared: [Option<(Arc<[ByteString]>, usize)>; Format::COUNT],
}

impl<'a> Rendered<'a> {
    fn frames(&mut self, format: Format) -> &[Option<ByteString>] {
        let (batch, server) = (self.batch, self.server);
        self.frames[format.index()].get_or_insert_with(|| match format {
            Format::Json => batch.iter().map(|o| Some(o.frame.clone())).collect(),
            Format::Ami => batch.iter().map(|o| o.render_ami(server)).collect(),
        })
    }

    fn shared(&mut self, format: Format) -> (Arc<[ByteString]>, usize) {
        if let Some(s) = &self.shared[format.index()] {
            return s.clone();
        }
        let frames: Arc<[ByteString]> = self.frames(format).iter().flatten().cloned().collect();
        let bytes = frames.iter().map(|f| f.len()).sum();
        self.shared[format.index()] = Some((frames.clone(), bytes));
        (frames, bytes)
    }
}

/// One joined session.
pub struct SessionEntry {
    pub user: String,
    pub out: Recipient<Deliver>,
    pub close: Recipient<CloseSession>,
    pub io: Arc<SessionIo>,
    pub rights: Arc<Rights>,
    pub format: Format,
    pub subscription: Option<Subscription>,
    /// Outstanding actions of this session.
    pub pending: usize,
}

impl SessionEntry {
    /// Whether this session receives everything from a server it may see.
    fn takes_all(&self) -> bool {
        self.rights.events.is_all() && self.subscription.as_ref().is_none_or(|s| s.events_all())
    }

    pub(super) fn admits(&self, out: &Outgoing) -> bool {
        let Some(p) = &out.packet else {
            // amihub's notices: AMI sessions with events off take no events at all.
            return !(self.format == Format::Ami
                && self.subscription.as_ref().is_some_and(|s| s.events_off()));
        };
        let Some(event) = p.event() else { return true };
        self.rights.may_see_event(event) && self.subscription.as_ref().is_none_or(|s| s.admits(p))
    }

    pub(super) fn sees_server(&self, id: u32, name: &str) -> bool {
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
        let (messages, out) = match entry.format {
            Format::Json => (
                &self.metrics.ws_messages_out_total,
                &self.metrics.ws_bytes_out_total,
            ),
            Format::Ami => (
                &self.metrics.ami_messages_out_total,
                &self.metrics.ami_bytes_out_total,
            ),
        };
        Metrics::add(messages, frames.len() as u64);
        Metrics::add(out, bytes as u64);
        entry.out.do_send(Deliver { frames });
        true
    }

    /// Sends a server's frames to every session that may see them; returns the sessions that
    /// fell behind. Sessions of one format that take everything share one `Arc` of the frames.
    pub fn broadcast(&self, server: (u32, &str), batch: &[Outgoing]) -> Vec<u64> {
        if batch.is_empty() || self.map.is_empty() {
            return Vec::new();
        }
        let mut rendered = Rendered {
            batch,
            server: server.1,
            frames: Default::default(),
            shared: Default::default(),
        };
        let mut slow = Vec::new();
        for (id, entry) in &self.map {
            if !entry.sees_server(server.0, server.1) {
                continue;
            }
            let ok = if entry.takes_all() {
                let (frames, bytes) = rendered.shared(entry.format);
                frames.is_empty() || self.push(entry, frames, bytes)
            } else {
                let frames: Vec<ByteString> = rendered
                    .frames(entry.format)
                    .iter()
                    .zip(batch)
                    .filter(|(f, o)| f.is_some() && entry.admits(o))
                    .filter_map(|(f, _)| f.clone())
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
