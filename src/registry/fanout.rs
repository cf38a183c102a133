//! The session table and fan-out: shares each rendered frame with every session allowed to see
//! it, counts the bytes queued per session, and reports sessions past their bound. A batch is
//! rendered at most once per [`Format`], and only in the formats some receiving session uses.
//!
//! The registry's own cost per session is the same whether the session filters or not: a
//! session that takes everything gets the shared frames; one whose rights or subscription
//! narrow events gets the whole shared batch (frames and packets, one `Arc` each) with its
//! [`Selection`], is charged every byte of it, and selects itself ([`Deliver::take`] in the
//! session actor), handing the bytes it drops back. A heavy filterer spends its own actor's
//! time, never the registry's; and since the session actors of many users share the HTTP
//! workers, each user's filtering time is bounded too ([`FilterBudget`]): a session whose
//! selection finds its user's budget spent is closed with 4008, like any session that cannot
//! keep up, before it can slow the sessions it shares a worker with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::Recipient;
use bytestring::ByteString;

use crate::ami::Packet;
use crate::amisrv::render::{render_packet, IdRewrite};
use crate::auth::Rights;
use crate::metrics::{Metrics, SharedMetrics};

use super::session::{CloseSession, Deliver, Format, SessionIo, SharedFrames};
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

/// One format's rendering of a batch: every frame (None = not for that format), and its bytes.
type FormatFrames = (Arc<[Option<ByteString>]>, usize);

/// A batch's renderings, each made on first use and then shared.
struct Rendered {
    batch: Arc<[Outgoing]>,
    server: Arc<str>,
    /// Per format: every frame, and the frames that exist as one Arc (for takers of all).
    frames: [Option<FormatFrames>; Format::COUNT],
    shared: [Option<Arc<SharedFrames>>; Format::COUNT],
}

impl Rendered {
    fn frames(&mut self, format: Format) -> FormatFrames {
        let (batch, server) = (&self.batch, &self.server);
        self.frames[format.index()]
            .get_or_insert_with(|| {
                let frames: Arc<[Option<ByteString>]> = match format {
                    Format::Json => batch.iter().map(|o| Some(o.frame.clone())).collect(),
                    Format::Ami => batch.iter().map(|o| o.render_ami(server)).collect(),
                };
                let bytes = frames.iter().flatten().map(|f| f.len()).sum();
                (frames, bytes)
            })
            .clone()
    }

    fn shared(&mut self, format: Format) -> Arc<SharedFrames> {
        if let Some(s) = &self.shared[format.index()] {
            return s.clone();
        }
        let (frames, _) = self.frames(format);
        let shared = Arc::new(SharedFrames::new(
            frames.iter().flatten().cloned().collect(),
        ));
        self.shared[format.index()] = Some(shared.clone());
        shared
    }
}

/// Selection time one user may spend per second over all its sessions; also the burst.
pub const FILTER_BUDGET_PER_SECOND: Duration = Duration::from_millis(100);

/// One user's selection time: a token bucket of CPU time shared by all its sessions.
pub struct FilterBudget {
    /// Seconds available, and when that was computed.
    left: Mutex<(f64, Instant)>,
}

impl FilterBudget {
    fn new() -> FilterBudget {
        FilterBudget {
            left: Mutex::new((FILTER_BUDGET_PER_SECOND.as_secs_f64(), Instant::now())),
        }
    }

    /// Time the user may spend selecting now.
    fn available(&self) -> Duration {
        let Ok(mut left) = self.left.lock() else {
            return Duration::ZERO;
        };
        let rate = FILTER_BUDGET_PER_SECOND.as_secs_f64();
        let now = Instant::now();
        left.0 = (left.0 + now.duration_since(left.1).as_secs_f64() * rate).min(rate);
        left.1 = now;
        Duration::from_secs_f64(left.0.max(0.0))
    }

    fn spend(&self, spent: Duration) {
        if let Ok(mut left) = self.left.lock() {
            left.0 -= spent.as_secs_f64();
        }
    }
}

/// What one session may receive of a server's batch: its rights and its subscription, and
/// its user's selection budget.
#[derive(Clone)]
pub struct Selection {
    pub rights: Arc<Rights>,
    pub subscription: Option<Arc<Subscription>>,
    pub format: Format,
    pub budget: Arc<FilterBudget>,
}

impl Selection {
    /// Whether this session receives everything from a server it may see.
    pub(super) fn takes_all(&self) -> bool {
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

/// One frame of a shared broadcast batch. The history keeps these, so the frames it replays
/// are the very bytes and packets the live fan-out used (no copy, no second rendering).
#[derive(Clone)]
pub struct InBatch {
    batch: Arc<[Outgoing]>,
    index: usize,
}

impl InBatch {
    /// Every frame of a batch, in order.
    pub fn all(batch: &Arc<[Outgoing]>) -> impl Iterator<Item = InBatch> + '_ {
        (0..batch.len()).map(|index| InBatch {
            batch: batch.clone(),
            index,
        })
    }
}

impl std::ops::Deref for InBatch {
    type Target = Outgoing;

    fn deref(&self) -> &Outgoing {
        // In range by construction: `all` makes indexes below the batch's length only.
        &self.batch[self.index]
    }
}

impl From<Outgoing> for InBatch {
    /// A frame of its own (tests, benches).
    fn from(o: Outgoing) -> InBatch {
        InBatch {
            batch: Arc::from(vec![o]),
            index: 0,
        }
    }
}

/// A whole shared batch for a session that selects from it itself.
pub struct Unfiltered {
    batch: Arc<[Outgoing]>,
    frames: Arc<[Option<ByteString>]>,
    /// What the registry charged to the session's queue for it.
    bytes: usize,
    select: Selection,
    metrics: SharedMetrics,
}

impl Unfiltered {
    /// The frames the selection admits; the bytes of the rest are counted off `io`. A
    /// selection that would pass its user's budget stops, and the session is closed (4008).
    pub fn select(self, io: &SessionIo) -> Arc<[ByteString]> {
        let budget = self.select.budget.available();
        let started = Instant::now();
        let mut frames = Vec::new();
        let mut over = false;
        for (frame, out) in self.frames.iter().zip(self.batch.iter()) {
            if let Some(frame) = frame.as_ref().filter(|_| self.select.admits(out)) {
                frames.push(frame.clone());
            }
            if started.elapsed() > budget {
                over = true;
                break;
            }
        }
        self.select.budget.spend(started.elapsed());
        if over {
            self.refuse(io);
            return Arc::from(Vec::new());
        }
        let kept: usize = frames.iter().map(|f| f.len()).sum();
        io.sub_queued(self.bytes.saturating_sub(kept));
        count_out(&self.metrics, self.select.format, frames.len(), kept);
        frames.into()
    }

    /// Drops this batch unselected: the session was closed before it came to it.
    pub fn drop_unselected(self, io: &SessionIo) {
        io.sub_queued(self.bytes);
    }

    /// Closes the session whose user spent its selection budget.
    fn refuse(self, io: &SessionIo) {
        io.sub_queued(self.bytes);
        if io.is_aborted() {
            return;
        }
        Metrics::inc(match self.select.format {
            Format::Json => &self.metrics.ws_slow_consumer_closes_total,
            Format::Ami => &self.metrics.ami_slow_consumer_closes_total,
        });
        log::warn!(
            "session: subscription filters over the user's budget ({} ms/s), closing with 4008",
            FILTER_BUDGET_PER_SECOND.as_millis()
        );
        io.abort(4008, "slow consumer (subscription filters over budget)");
    }
}

/// Counts frames handed to one session of `format`.
fn count_out(metrics: &Metrics, format: Format, frames: usize, bytes: usize) {
    let (messages, out) = match format {
        Format::Json => (&metrics.ws_messages_out_total, &metrics.ws_bytes_out_total),
        Format::Ami => (
            &metrics.ami_messages_out_total,
            &metrics.ami_bytes_out_total,
        ),
    };
    Metrics::add(messages, frames as u64);
    Metrics::add(out, bytes as u64);
}

/// One joined session.
pub struct SessionEntry {
    pub user: String,
    /// The session actor, or None when its socket task takes batches from `io` itself.
    pub out: Option<Recipient<Deliver>>,
    pub close: Recipient<CloseSession>,
    pub io: Arc<SessionIo>,
    pub select: Selection,
    /// Outstanding actions of this session.
    pub pending: usize,
}

/// Every joined session, keyed by session id.
pub struct Sessions {
    pub map: HashMap<u64, SessionEntry>,
    /// Each user's selection budget, shared by its sessions while any is joined.
    budgets: HashMap<String, Weak<FilterBudget>>,
    queue_limit: usize,
    metrics: SharedMetrics,
}

impl Sessions {
    pub fn new(queue_limit: usize, metrics: SharedMetrics) -> Sessions {
        Sessions {
            map: HashMap::new(),
            budgets: HashMap::new(),
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

    /// The selection budget of `user`, shared with its other sessions.
    pub fn budget(&mut self, user: &str) -> Arc<FilterBudget> {
        if let Some(b) = self.budgets.get(user).and_then(Weak::upgrade) {
            return b;
        }
        self.budgets.retain(|_, b| b.strong_count() > 0);
        let b = Arc::new(FilterBudget::new());
        self.budgets.insert(user.to_string(), Arc::downgrade(&b));
        b
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
        let n = frames.len();
        let ok = self.push(entry, Deliver::frames(frames), bytes);
        if ok {
            count_out(&self.metrics, entry.select.format, n, bytes);
        }
        ok
    }

    /// Charges `bytes` to the session's queue and hands it `deliver`; false past its bound.
    fn push(&self, entry: &SessionEntry, deliver: Deliver, bytes: usize) -> bool {
        if entry.io.queued() + bytes > self.queue_limit {
            return false;
        }
        entry.io.add_queued(bytes);
        match &entry.out {
            Some(out) => out.do_send(deliver),
            None => entry.io.push(deliver),
        }
        true
    }

    /// Sends a server's frames to every session that may see them; returns the sessions that
    /// fell behind. Sessions of one format that take everything share one `Arc` of the frames;
    /// the others share the whole batch and select from it themselves.
    pub fn broadcast(&self, server: (u32, &str), batch: Arc<[Outgoing]>) -> Vec<u64> {
        if batch.is_empty() || self.map.is_empty() {
            return Vec::new();
        }
        let mut rendered = Rendered {
            batch,
            server: server.1.into(),
            frames: Default::default(),
            shared: Default::default(),
        };
        let mut slow = Vec::new();
        // Messages and bytes out per format, counted once for the whole broadcast.
        let mut out = [(0, 0); Format::COUNT];
        for (id, entry) in &self.map {
            if !entry.select.sees_server(server.0, server.1) {
                continue;
            }
            let ok = if entry.select.takes_all() {
                let shared = rendered.shared(entry.select.format);
                let (n, bytes) = (shared.frames().len(), shared.bytes());
                let ok = n == 0 || self.push(entry, Deliver::shared(shared), bytes);
                if ok {
                    let counted = &mut out[entry.select.format.index()];
                    *counted = (counted.0 + n, counted.1 + bytes);
                }
                ok
            } else {
                let (frames, bytes) = rendered.frames(entry.select.format);
                if bytes == 0 {
                    continue;
                }
                let job = Unfiltered {
                    batch: rendered.batch.clone(),
                    frames,
                    bytes,
                    select: entry.select.clone(),
                    metrics: self.metrics.clone(),
                };
                self.push(entry, Deliver::select(job), bytes)
            };
            if !ok {
                slow.push(*id);
            }
        }
        for format in Format::ALL {
            let (n, bytes) = out[format.index()];
            if n > 0 {
                count_out(&self.metrics, format, n, bytes);
            }
        }
        slow
    }
}
