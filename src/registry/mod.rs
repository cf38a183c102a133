//! The registry actor: server_id -> PBX actor, the set of sessions (WebSocket and AMI front ends,
//! which speak the [`session`] protocol), and ActionID routing.
//!
//! It decides who receives each packet: unsolicited events go to every session allowed to see
//! them (rendered once per format and shared), responses and list events go only to whoever
//! asked, with their own ActionID. It never waits for a session: bytes queued per session are
//! counted and a session past its bound is cut loose (4008 on the WebSocket).

mod admin;
mod coalesce;
pub mod fanout;
pub mod history;
pub mod pending;
pub mod resume;
pub mod session;
pub mod subscription;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use bytestring::ByteString;

use crate::ami::{Action, Limits, Packet};
use crate::amisrv::render::{render_packet, render_reply, status_event, IdRewrite};
use crate::auth::Rights;
use crate::config::{
    FanoutSettings, HistorySettings, LimitSettings, ReconnectSettings, ServerSettings,
};
use crate::metrics::{Metrics, SharedMetrics};
use crate::pbx::{PbxHandle, SendAction, ServerStatus, Shutdown as PbxShutdown};
use crate::ws::protocol::{
    encode_packet, encode_prompt, encode_reply, encode_status, encode_status_with, with_position,
    with_positions, ServerTag,
};
pub use admin::{
    AddServer, CloseUserSessions, DropServer, HttpAction, ListServers, ListSessions, Readiness,
    ServerInfo, ServerQuality, ServerState, SessionInfo,
};
use coalesce::{timer_delay, Held, Hold};
use fanout::{InBatch, Outgoing, Selection, SessionEntry, Sessions};
use history::{FrameLog, History};
pub use pending::{ActionFailure, Collected};
use pending::{Pending, PendingTable, ReplyTo, Token, ID_PREFIX};
pub use resume::{HistoryGap, Resume};
use session::{any_drained, CloseSession, Deliver, Format, SessionIo};
pub use subscription::Subscription;

/// Longest a PBX's batch is held back while every session is behind.
const CONGESTION_WAIT: Duration = Duration::from_millis(50);
/// A session cut loose for falling behind gets this long to read its close frame.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// One packet from a PBX; `json` is its broadcast rendering when it carried no ActionID.
pub struct Inbound {
    pub packet: Packet,
    pub json: Option<ByteString>,
    /// Cluster mode: its place in the server's shared history (None for replies).
    pub at: Option<At>,
}

/// A frame's place in a history shared by several nodes (cluster mode, SPEC §10/§11): the
/// stream's epoch and the entry's offset, so every node stamps and keeps the same positions.
/// `kept` is false for what a node says on its own (its view of the store): that frame takes
/// the position of the newest frame before it and is no frame of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub epoch: Arc<str>,
    pub offset: u64,
    pub kept: bool,
}

/// A broadcast frame on its way to the fan-out, with its shared-history place (cluster mode).
type Framed = (Outgoing, Option<At>);

/// Packets read from one PBX, in wire order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PbxPackets {
    pub server_id: u32,
    /// Which PBX actor sent it: a dropped server's late messages never touch its replacement.
    pub generation: u64,
    pub items: Vec<Inbound>,
    /// Set when the state rebuild completed with the last of these packets ("state ready").
    pub state_version: Option<u64>,
}

/// A PBX connection changed state (or greeted us with a banner).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PbxStatusChanged {
    pub server_id: u32,
    pub generation: u64,
    pub status: ServerStatus,
    pub reason: String,
    pub banner: Option<String>,
    /// Set when the server's live state has just been rebuilt.
    pub state_version: Option<u64>,
    /// Cluster mode: its place in the server's shared history.
    pub at: Option<At>,
}

impl PbxStatusChanged {
    /// A banner was read: the connection is logging in.
    pub fn logging_in(server_id: u32, generation: u64, banner: String, at: Option<At>) -> Self {
        PbxStatusChanged {
            server_id,
            generation,
            status: ServerStatus::Connecting,
            reason: "logging in".into(),
            banner: Some(banner),
            state_version: None,
            at,
        }
    }
}

/// Cluster mode: frames a shared history held before this node followed it, kept for resume
/// and sent to no one (they are older than anything live here).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KeepHistory {
    pub server_id: u32,
    pub generation: u64,
    pub frames: Vec<(Outgoing, At)>,
}

/// A session joins: a JSON session receives current statuses, then what it may see.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub session: u64,
    pub user: String,
    /// The session actor; None when the session's socket task takes batches from `io`.
    pub out: Option<Recipient<Deliver>>,
    pub close: Recipient<CloseSession>,
    pub io: Arc<SessionIo>,
    pub rights: Arc<Rights>,
    pub format: Format,
    /// What it receives from the start (AMI: the login's `Events:`); None = everything.
    pub subscription: Option<Subscription>,
}

/// A session is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: u64,
}

/// An action from a session (already checked against the user's action allowlist).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientRequest {
    pub session: u64,
    pub action: Action,
    pub target: Target,
    pub client_id: Option<String>,
}

/// Which server(s) a client action goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server by id (`AMIServerID`).
    Id(u32),
    /// Every server the user may act on (WebSocket without `AMIServerID`).
    Every,
    /// A server by name or id (AMI `Server:` header or the user's `ami_default_server`).
    Named(String),
    /// The only server the user may act on; an error naming the choices if there are several.
    Sole,
}

/// Replace what a session receives (within its rights).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub session: u64,
    pub subscription: Subscription,
}

/// A session's rendering changed (the AMI listener's `SetOutputFormat`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetFormat {
    pub session: u64,
    pub format: Format,
}

/// Close every session with 1001 and log off every PBX.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

struct ServerEntry {
    settings: Arc<ServerSettings>,
    tag: ServerTag,
    addr: PbxHandle,
    status: ServerStatus,
    reason: String,
    banner: String,
    since: SystemTime,
    connects: u64,
    /// The first connection attempt has finished (either way): counts towards readiness.
    settled: bool,
    /// Identifies the PBX actor of this entry (see `PbxPackets::generation`).
    generation: u64,
    /// Its broadcast frames, for resume; a new epoch whenever the entry is (re)created.
    history: Box<dyn FrameLog>,
}

/// The registry actor (one per process).
pub struct Registry {
    limits: LimitSettings,
    ami_limits: Limits,
    reconnect: ReconnectSettings,
    metrics: SharedMetrics,
    servers: BTreeMap<u32, ServerEntry>,
    sessions: Sessions,
    pending: PendingTable,
    /// After Shutdown, late joiners are closed with 1001 at once.
    shutting_down: bool,
    next_generation: u64,
    /// Cluster mode: servers are mirrored from the shared store instead of connected here.
    cluster: Option<crate::cluster::Cluster>,
    history: HistorySettings,
    marks: resume::Marks,
    /// Broadcast frames waiting for the next flush (`[fanout]`), and the flush timer.
    held: Held<Framed>,
    flush_timer: Option<SpawnHandle>,
}

impl Registry {
    /// PBX actors are started on the registry's own thread (README, "PBX actors on the
    /// registry's thread").
    pub fn new(
        limits: LimitSettings,
        ami_limits: Limits,
        reconnect: ReconnectSettings,
        metrics: SharedMetrics,
    ) -> Registry {
        Registry {
            sessions: Sessions::new(limits.session_queue_bytes, metrics.clone()),
            limits,
            ami_limits,
            reconnect,
            metrics,
            servers: BTreeMap::new(),
            pending: PendingTable::default(),
            shutting_down: false,
            next_generation: 0,
            cluster: None,
            history: HistorySettings::default(),
            marks: resume::Marks::default(),
            held: Held::new(FanoutSettings::default()),
            flush_timer: None,
        }
    }

    /// Bounds of each server's history (default: `HistorySettings::default()`).
    pub fn with_history(mut self, history: HistorySettings) -> Registry {
        self.history = history;
        self
    }

    /// Write coalescing of the broadcast fan-out (default: `FanoutSettings::default()`).
    pub fn with_fanout(mut self, fanout: FanoutSettings) -> Registry {
        self.held = Held::new(fanout);
        self
    }

    /// Holds a server's broadcast frames for the next flush (`[fanout]`), or fans them out now.
    fn hold(&mut self, ctx: &mut Context<Self>, server: u32, batch: Vec<Framed>) {
        let sessions = self.sessions.map.len();
        match self.held.hold(server, batch, Instant::now(), sessions) {
            Hold::Now(batch) => self.broadcast(ctx, server, batch),
            Hold::Full => self.flush(ctx),
            Hold::Later(delay) if self.flush_timer.is_none() => {
                self.flush_timer = Some(ctx.run_later(timer_delay(delay), |act, ctx| {
                    act.flush_timer = None;
                    act.flush(ctx);
                }));
            }
            Hold::Later(_) => {}
        }
    }

    /// Fans out every held frame now: before a frame sent to one session directly (so it
    /// follows the broadcasts that came before it), and before the session table changes.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.flush_timer.take() {
            ctx.cancel_future(timer);
        }
        if self.held.is_empty() {
            return;
        }
        for (server, batch) in self.held.drain(Instant::now()) {
            self.broadcast(ctx, server, batch);
        }
    }

    /// A fresh history for a server entry (a new epoch; in cluster mode, the stream's).
    fn new_history(&self) -> Box<dyn FrameLog> {
        match &self.cluster {
            Some(c) => c.frame_log(self.history.clone()),
            None => Box::new(History::new(self.history.clone())),
        }
    }

    /// Cluster mode: each server's actor is a mirror of the shared stream (SPEC §11).
    pub fn with_cluster(mut self, cluster: Option<crate::cluster::Cluster>) -> Registry {
        self.cluster = cluster;
        self
    }

    fn reply(&mut self, ctx: &mut Context<Self>, session: u64, frame: ByteString) {
        self.flush(ctx);
        if !self.sessions.send(session, Arc::from(vec![frame])) {
            self.cut_loose(ctx, session);
        }
    }

    fn error_reply(
        &mut self,
        ctx: &mut Context<Self>,
        session: u64,
        server: Option<u32>,
        id: Option<&str>,
        message: &str,
    ) {
        let tag = server.and_then(|s| self.servers.get(&s)).map(|e| &e.tag);
        let fields = [("Response", "Error"), ("Message", message)];
        let frame = match self.sessions.map.get(&session).map(|s| s.select.format) {
            Some(Format::Ami) => render_reply(&fields, id, tag.map(|t| t.name.as_str())),
            _ => {
                let mut fields = fields.to_vec();
                fields.extend(id.map(|id| ("ActionID", id)));
                encode_reply(tag, &fields)
            }
        };
        self.reply(ctx, session, frame);
    }

    /// Stamps a server's broadcast frames with their history position, fans them out and keeps
    /// them for resume (the same bytes, shared). A single node numbers them itself; in cluster
    /// mode each comes with its stream position, and a frame without one (the node's own) takes
    /// the position of the frame before it.
    fn broadcast(&mut self, ctx: &mut Context<Self>, server: u32, batch: Vec<Framed>) {
        let batch = self.held.before(server, batch);
        let shared = self.cluster.is_some();
        let Some(entry) = self.servers.get_mut(&server) else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        let mut places = Vec::with_capacity(if shared { batch.len() } else { 0 });
        let mut frames: Vec<Outgoing> = Vec::with_capacity(batch.len());
        if shared {
            let mut here = At {
                epoch: entry.history.epoch().into(),
                offset: entry.history.newest(),
                kept: false,
            };
            for (mut o, at) in batch {
                let at = at.unwrap_or_else(|| here.clone());
                o.frame = with_position(&o.frame, &at.epoch, at.offset);
                here = At {
                    kept: false,
                    ..at.clone()
                };
                places.push(at);
                frames.push(o);
            }
        } else {
            frames.extend(batch.into_iter().map(|(o, _)| o));
            let next = entry.history.newest() + 1;
            let texts = frames.iter().map(|o| &*o.frame);
            let stamped = with_positions(texts, entry.history.epoch(), next);
            for (o, frame) in frames.iter_mut().zip(stamped) {
                o.frame = frame;
            }
        }
        let batch: Arc<[Outgoing]> = frames.into();
        let slow = self
            .sessions
            .broadcast((server, &entry.tag.name), batch.clone());
        let now = Instant::now();
        for (i, frame) in InBatch::all(&batch).enumerate() {
            match places.get(i) {
                Some(at) => entry.history.append_at(at, at.kept.then_some(frame), now),
                None => {
                    entry.history.append(frame, now);
                }
            }
        }
        for id in slow {
            self.cut_loose(ctx, id);
        }
    }

    /// Closes a session that fell behind with 4008; it never slows anyone else.
    fn cut_loose(&mut self, ctx: &mut Context<Self>, session: u64) {
        let Some(entry) = self.sessions.map.remove(&session) else {
            return;
        };
        self.marks.left(session);
        self.pending.map.retain(|_, p| p.session() != Some(session));
        Metrics::inc(match entry.select.format {
            Format::Json => &self.metrics.ws_slow_consumer_closes_total,
            Format::Ami => &self.metrics.ami_slow_consumer_closes_total,
        });
        log::warn!(
            "session {session} ({}): slow consumer, closing with 4008",
            entry.user
        );
        entry.io.abort(4008, "slow consumer");
        // Weak: a client that reads its close frame frees its session at once.
        let io = Arc::downgrade(&entry.io);
        ctx.run_later(SLOW_CLOSE_GRACE, move |_, _| {
            if let Some(io) = io.upgrade() {
                io.kill();
            }
        });
    }

    /// Removes a pending action, releasing its slot in the session's count.
    fn finish(&mut self, seq: Token) -> Option<Pending> {
        let p = self.pending.map.remove(&seq)?;
        self.metrics.action_duration.observe(p.started.elapsed());
        if let Some(s) = p.session().and_then(|s| self.sessions.map.get_mut(&s)) {
            s.pending = s.pending.saturating_sub(1);
        }
        Some(p)
    }

    /// Ends a pending action with an error for whoever waits on it.
    fn fail(&mut self, ctx: &mut Context<Self>, seq: Token, failure: ActionFailure) {
        let Some(mut p) = self.finish(seq) else {
            return;
        };
        match &mut p.reply {
            ReplyTo::Session(session) => {
                let (session, id) = (*session, p.shown_id(seq));
                self.error_reply(
                    ctx,
                    session,
                    Some(p.server_id),
                    Some(&id),
                    &failure.to_string(),
                );
            }
            ReplyTo::Collect { tx, .. } => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Err(failure));
                }
            }
        }
    }

    /// Fails every action in flight to one server (it disconnected or was removed).
    fn fail_server(&mut self, ctx: &mut Context<Self>, server_id: u32, text: &str) {
        let lost: Vec<Token> = self
            .pending
            .map
            .iter()
            .filter(|(_, p)| p.server_id == server_id)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in lost {
            self.fail(ctx, seq, ActionFailure::Failed(text.to_string()));
        }
    }

    /// A packet carrying one of our ActionIDs: to its requester if it is part of the reply.
    fn route_reply(
        &mut self,
        ctx: &mut Context<Self>,
        seq: Token,
        packet: Packet,
        tag: &ServerTag,
    ) -> Option<Packet> {
        let p = self.pending.map.get_mut(&seq)?;
        let Some(done) = p.absorb(&packet) else {
            return Some(packet);
        };
        let shown = p.shown_id(seq);
        let own = p.client_id.clone();
        match &mut p.reply {
            ReplyTo::Session(session) => {
                let session = *session;
                if done {
                    self.finish(seq);
                }
                let frame = match self.sessions.map.get(&session).map(|s| s.select.format) {
                    Some(Format::Ami) => {
                        let id = own.as_deref().map_or(IdRewrite::Remove, IdRewrite::Restore);
                        render_packet(&packet, Some(&tag.name), id)
                    }
                    _ => encode_packet(tag, &packet, Some(&shown)),
                };
                self.reply(ctx, session, frame);
            }
            ReplyTo::Collect {
                tx,
                response,
                events,
                bytes,
            } => {
                *bytes += packet.heap_bytes();
                if *bytes > pending::MAX_COLLECT_BYTES {
                    let text = format!("result larger than {} bytes", pending::MAX_COLLECT_BYTES);
                    self.fail(ctx, seq, ActionFailure::Failed(text));
                    return None;
                }
                if pending::is_response(&packet) {
                    *response = Some(packet);
                } else {
                    events.push(packet);
                }
                if done {
                    let tx = tx.take();
                    let result = Collected {
                        response: response.take().unwrap_or_default(),
                        events: std::mem::take(events),
                        action_id: shown.clone(),
                    };
                    self.finish(seq);
                    if let Some(tx) = tx {
                        let _ = tx.send(Ok(result));
                    }
                }
            }
        }
        None
    }

    /// Ages out history and shows what it holds in the metrics.
    fn sweep_history(&mut self) {
        let now = Instant::now();
        let (mut frames, mut bytes) = (0, 0);
        for s in self.servers.values_mut() {
            s.history.expire(now);
            let u = s.history.usage();
            frames += u.frames;
            bytes += u.bytes;
        }
        let m = &self.metrics;
        m.history_frames.store(frames as u64, Relaxed);
        m.history_bytes.store(bytes as u64, Relaxed);
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        self.sweep_history();
        for seq in self.pending.expired(Instant::now()) {
            let responded = self.pending.map.get(&seq).is_some_and(|p| p.responded);
            let collecting = self
                .pending
                .map
                .get(&seq)
                .is_some_and(|p| p.session().is_none());
            if responded && !collecting {
                self.finish(seq);
            } else {
                self.fail(ctx, seq, ActionFailure::Timeout);
            }
        }
    }

    /// Writes an action upstream under a fresh id; failures come back through `fail`.
    fn dispatch(
        &mut self,
        ctx: &mut Context<Self>,
        server_id: u32,
        mut action: Action,
        pending: Pending,
    ) -> Result<(), ActionFailure> {
        let server = self
            .servers
            .get(&server_id)
            .ok_or(ActionFailure::UnknownServer(server_id))?;
        if server.status != ServerStatus::Connected {
            return Err(ActionFailure::NotConnected(server_id));
        }
        let addr = server.addr.send.clone();
        if let Some(s) = pending
            .session()
            .and_then(|s| self.sessions.map.get_mut(&s))
        {
            if s.pending >= self.limits.max_pending_actions_per_session {
                return Err(ActionFailure::Failed("Too many outstanding actions".into()));
            }
            s.pending += 1;
        }
        let seq = self.pending.insert(pending);
        action.set("ActionID", pending::wire_id(seq));
        ctx.spawn(
            addr.send(SendAction { action })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let err = match res {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    act.fail(ctx, seq, ActionFailure::Failed(err));
                }),
        );
        Ok(())
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        ctx.run_interval(Duration::from_millis(250), |act, ctx| act.sweep(ctx));
    }
}

impl Handler<PbxPackets> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: PbxPackets, ctx: &mut Context<Self>) -> Self::Result {
        self.route_packets(msg, ctx);
        // Backpressure towards the PBX when every session is behind: reply once one of them
        // has drained below half its bound (or after CONGESTION_WAIT, so a set of clients that
        // all stalled still reaches its bound and is cut).
        let Some(ios) = self.sessions.congested() else {
            return Box::pin(async {});
        };
        let half = self.sessions.queue_limit() / 2;
        Box::pin(async move {
            let _ = tokio::time::timeout(CONGESTION_WAIT, any_drained(&ios, half)).await;
        })
    }
}

impl Registry {
    /// The entry of `server_id` if it is still the generation a PBX actor's message comes from
    /// (a message of a removed or re-added server is dropped).
    fn current(&mut self, server_id: u32, generation: u64) -> Option<&mut ServerEntry> {
        self.servers
            .get_mut(&server_id)
            .filter(|s| s.generation == generation)
    }

    fn route_packets(&mut self, msg: PbxPackets, ctx: &mut Context<Self>) {
        let current = self.current(msg.server_id, msg.generation);
        let Some(tag) = current.map(|s| s.tag.clone()) else {
            return;
        };
        let mut batch: Vec<(Outgoing, Option<At>)> = Vec::with_capacity(msg.items.len());
        for item in msg.items {
            let packet = match item.json {
                Some(frame) => {
                    batch.push((Outgoing::packet(frame, item.packet, None), item.at));
                    continue;
                }
                None => item.packet,
            };
            let mut packet = packet;
            let mut restored = None;
            if let Some(seq) = self.pending.lookup(msg.server_id, packet.action_id()) {
                // Keep wire order for everyone: what came before this reply goes out first.
                let before = std::mem::take(&mut batch);
                self.broadcast(ctx, msg.server_id, before);
                restored = self.pending.map.get(&seq).map(|p| p.shown_id(seq));
                match self.route_reply(ctx, seq, packet, &tag) {
                    Some(p) => packet = p,
                    None => continue,
                }
            } else if is_orphan_reply(&packet) {
                // A late reply for a requester that is gone (left, cut, timed out): it belongs
                // to no one, and must never reach everyone.
                log::debug!(
                    "server {}: dropped a reply for a finished action",
                    msg.server_id
                );
                continue;
            }
            let frame = encode_packet(&tag, &packet, restored.as_deref());
            batch.push((Outgoing::packet(frame, packet, restored), item.at));
        }
        self.hold(ctx, msg.server_id, batch);
        if let Some(version) = msg.state_version {
            self.apply_status(
                ctx,
                PbxStatusChanged {
                    server_id: msg.server_id,
                    generation: msg.generation,
                    status: ServerStatus::Connected,
                    reason: "state ready".into(),
                    banner: None,
                    state_version: Some(version),
                    at: None,
                },
            );
        }
    }
}

/// A packet carrying one of amihub's ActionIDs that is no longer pending. Only a UserEvent
/// (the PBX's broadcast of a client's UserEvent action) is an event for everyone.
fn is_orphan_reply(p: &Packet) -> bool {
    p.action_id().is_some_and(|id| id.starts_with(ID_PREFIX)) && p.event() != Some("UserEvent")
}

impl Handler<KeepHistory> for Registry {
    type Result = ();

    fn handle(&mut self, msg: KeepHistory, _ctx: &mut Context<Self>) {
        let Some(entry) = self.current(msg.server_id, msg.generation) else {
            return;
        };
        let (frames, places): (Vec<Outgoing>, Vec<At>) = msg
            .frames
            .into_iter()
            .map(|(mut o, at)| {
                o.frame = with_position(&o.frame, &at.epoch, at.offset);
                (o, at)
            })
            .unzip();
        let batch: Arc<[Outgoing]> = frames.into();
        let now = Instant::now();
        for (frame, at) in InBatch::all(&batch).zip(&places) {
            entry.history.append_at(at, Some(frame), now);
        }
    }
}

impl Handler<PbxStatusChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PbxStatusChanged, ctx: &mut Context<Self>) {
        self.apply_status(ctx, msg);
    }
}

impl Registry {
    fn apply_status(&mut self, ctx: &mut Context<Self>, msg: PbxStatusChanged) {
        let Some(server) = self.current(msg.server_id, msg.generation) else {
            return;
        };
        let tag = server.tag.clone();
        if let Some(banner) = msg.banner {
            let frame = encode_prompt(&tag, &banner);
            server.banner = banner;
            let frame = Outgoing::notice(frame, None);
            self.broadcast(ctx, msg.server_id, vec![(frame, msg.at)]);
            return;
        }
        if msg.status != ServerStatus::Connecting {
            server.settled = true;
        }
        // A status of a shared history is a frame on every node, repeated or not.
        let shared = msg.at.as_ref().is_some_and(|a| a.kept);
        if server.status == msg.status
            && server.reason == msg.reason
            && msg.state_version.is_none()
            && !shared
        {
            return;
        }
        let was_connected = server.status == ServerStatus::Connected;
        if server.status != msg.status {
            server.since = SystemTime::now();
            if msg.status == ServerStatus::Connected {
                server.connects += 1;
            }
        }
        server.status = msg.status;
        server.reason = msg.reason.clone();
        let version = msg.state_version.map(|v| v.to_string());
        let extra: Vec<(&str, &str)> = version
            .iter()
            .map(|v| ("StateVersion", v.as_str()))
            .collect();
        let frame = encode_status_with(&tag, msg.status.as_str(), &msg.reason, &extra);
        let notice = status_event(msg.status.as_str(), &msg.reason);
        self.broadcast(
            ctx,
            msg.server_id,
            vec![(Outgoing::notice(frame, Some(notice)), msg.at)],
        );
        if was_connected && msg.status != ServerStatus::Connected {
            let text = format!("Server {} disconnected: {}", msg.server_id, msg.reason);
            self.fail_server(ctx, msg.server_id, &text);
        }
    }
}

impl Handler<Join> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        self.flush(ctx);
        let session = msg.session;
        let statuses = self.join(msg);
        if !statuses.is_empty() && !self.sessions.send(session, statuses.into()) {
            self.cut_loose(ctx, session);
        }
    }
}

impl Registry {
    /// Adds a session; returns the current statuses it is to get (JSON sessions), each with the
    /// server's newest history position: where this session's live traffic begins.
    fn join(&mut self, msg: Join) -> Vec<ByteString> {
        if self.shutting_down {
            msg.close.do_send(CloseSession {
                code: 1001,
                reason: "amihub shutting down".into(),
            });
            return Vec::new();
        }
        // AMI clients expect nothing unsolicited at login; they hear of later status changes.
        let statuses: Vec<ByteString> = self
            .servers
            .values()
            .filter(|s| {
                msg.format == Format::Json && msg.rights.may_see_server(s.tag.id, &s.tag.name)
            })
            .map(|s| {
                let frame = encode_status(&s.tag, s.status.as_str(), &s.reason);
                with_position(&frame, s.history.epoch(), s.history.newest())
            })
            .collect();
        let budget = self.sessions.budget(&msg.user);
        if msg.format == Format::Json {
            self.marks.joined(msg.session, self.servers.iter());
        }
        self.sessions.map.insert(
            msg.session,
            SessionEntry {
                user: msg.user,
                out: msg.out,
                close: msg.close,
                io: msg.io,
                select: Selection {
                    rights: msg.rights,
                    format: msg.format,
                    subscription: msg.subscription.map(Arc::new),
                    budget,
                },
                pending: 0,
            },
        );
        statuses
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        self.sessions.map.remove(&msg.session);
        self.marks.left(msg.session);
        self.pending
            .map
            .retain(|_, p| p.session() != Some(msg.session));
    }
}

impl Handler<Subscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        self.flush(ctx);
        if let Some(s) = self.sessions.map.get_mut(&msg.session) {
            s.select.subscription = Some(Arc::new(msg.subscription));
        }
    }
}

impl Handler<SetFormat> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SetFormat, ctx: &mut Context<Self>) {
        self.flush(ctx);
        if let Some(s) = self.sessions.map.get_mut(&msg.session) {
            s.select.format = msg.format;
        }
    }
}

impl Handler<ClientRequest> for Registry {
    type Result = ();

    fn handle(&mut self, req: ClientRequest, ctx: &mut Context<Self>) {
        let Some(rights) = self
            .sessions
            .map
            .get(&req.session)
            .map(|s| s.select.rights.clone())
        else {
            return;
        };
        let visible = |id: &u32, s: &ServerEntry| rights.may_see_server(*id, &s.tag.name);
        let named = match &req.target {
            Target::Named(name) => match self.find_server(name) {
                Some(id) => Some(id),
                None => {
                    let msg = format!("Unknown server {name:?} ({})", self.choices(&rights));
                    let id = req.client_id.as_deref();
                    return self.error_reply(ctx, req.session, None, id, &msg);
                }
            },
            Target::Sole => {
                let mine: Vec<u32> = self
                    .servers
                    .iter()
                    .filter(|(id, s)| visible(id, s))
                    .map(|(id, _)| *id)
                    .collect();
                match mine[..] {
                    [only] => Some(only),
                    [] => None,
                    _ => {
                        let msg = format!(
                            "Which server? Add a Server: header ({})",
                            self.choices(&rights)
                        );
                        let id = req.client_id.as_deref();
                        return self.error_reply(ctx, req.session, None, id, &msg);
                    }
                }
            }
            Target::Id(id) => Some(*id),
            Target::Every => None,
        };
        let targets: Vec<u32> = match named {
            Some(id) => match self.servers.get(&id) {
                Some(s) if !visible(&id, s) => {
                    Metrics::inc(&self.metrics.actions_refused_total);
                    log::warn!(
                        "session {}: refused {} to server {id} (not permitted)",
                        req.session,
                        req.action.name()
                    );
                    let msg = format!("Server {id} is not permitted for this user");
                    return self.error_reply(
                        ctx,
                        req.session,
                        None,
                        req.client_id.as_deref(),
                        &msg,
                    );
                }
                _ => vec![id],
            },
            None => self
                .servers
                .iter()
                .filter(|(id, s)| visible(id, s))
                .map(|(id, _)| *id)
                .collect(),
        };
        if targets.is_empty() {
            self.error_reply(
                ctx,
                req.session,
                None,
                req.client_id.as_deref(),
                "No servers available",
            );
        }
        for id in targets {
            let pending = Pending::new(
                ReplyTo::Session(req.session),
                id,
                req.client_id.clone(),
                &req.action,
                Duration::from_secs(self.limits.action_timeout_s),
            );
            if let Err(e) = self.dispatch(ctx, id, req.action.clone(), pending) {
                let shown = req.client_id.as_deref();
                let server = self.servers.contains_key(&id).then_some(id);
                let text = match e {
                    ActionFailure::UnknownServer(id) => format!("Unknown server {id}"),
                    other => other.to_string(),
                };
                self.error_reply(ctx, req.session, server, shown, &text);
            }
        }
    }
}

impl Registry {
    /// A server by id or name.
    fn find_server(&self, name: &str) -> Option<u32> {
        let by_id = name
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|id| self.servers.contains_key(id));
        by_id.or_else(|| {
            self.servers
                .iter()
                .find(|(_, s)| s.tag.name.eq_ignore_ascii_case(name.trim()))
                .map(|(id, _)| *id)
        })
    }

    /// "one of: pbx1 (1), pbx2 (2)": the servers `rights` may act on, for error messages.
    fn choices(&self, rights: &Rights) -> String {
        let names: Vec<String> = self
            .servers
            .values()
            .filter(|s| rights.may_see_server(s.tag.id, &s.tag.name))
            .map(|s| format!("{} ({})", s.tag.name, s.tag.id))
            .collect();
        if names.is_empty() {
            "no server is permitted for this user".into()
        } else {
            format!("one of: {}", names.join(", "))
        }
    }
}

impl Handler<Shutdown> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.flush(ctx);
        self.shutting_down = true;
        for (_, s) in self.sessions.map.drain() {
            s.close.do_send(CloseSession {
                code: 1001,
                reason: "amihub shutting down".into(),
            });
        }
        let logoffs: Vec<_> = self
            .servers
            .values()
            .map(|s| s.addr.shutdown.send(PbxShutdown))
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(logoffs).await;
        })
    }
}
