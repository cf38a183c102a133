//! The registry actor: server_id -> PBX actor, the set of WebSocket sessions, and ActionID routing.
//!
//! It decides who receives each packet: unsolicited events go to every session (the JSON rendered
//! once and shared), responses and list events go only to the session that asked, with that
//! session's own ActionID. It never waits for a session: bytes queued per session are counted and
//! a session past its bound is cut loose with 4008.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytestring::ByteString;
use serde::Serialize;

use crate::ami::Limits;
use crate::ami::{Action, Packet};
use crate::config::{LimitSettings, ReconnectSettings, ServerSettings};
use crate::metrics::{Metrics, SharedMetrics};
use crate::pbx::{PbxConn, SendAction, ServerStatus, Shutdown as PbxShutdown};
use crate::ws::outbound::SessionIo;
use crate::ws::protocol::{encode_packet, encode_prompt, encode_reply, encode_status, ServerTag};
use crate::ws::session::{CloseSession, Deliver};

/// Prefix of the ActionIDs amihub writes for client actions: `amihub.<seq>`.
const ID_PREFIX: &str = "amihub.";
/// How long an async Originate's `OriginateResponse` is awaited.
const ORIGINATE_WAIT: Duration = Duration::from_secs(120);
/// A session cut loose for falling behind gets this long to read its close frame.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// One packet from a PBX; `json` is its broadcast rendering when it carried no ActionID.
pub struct Inbound {
    pub packet: Packet,
    pub json: Option<ByteString>,
}

/// Packets read from one PBX, in wire order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PbxPackets {
    pub server_id: u32,
    pub items: Vec<Inbound>,
}

/// A PBX connection changed state (or greeted us with a banner).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PbxStatusChanged {
    pub server_id: u32,
    pub status: ServerStatus,
    pub reason: String,
    pub banner: Option<String>,
}

/// Start a supervised PBX actor for this server and route for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddServer {
    pub settings: Arc<ServerSettings>,
}

/// A WebSocket session joins: it receives current statuses, then every broadcast.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub session: u64,
    pub out: Recipient<Deliver>,
    pub close: Recipient<CloseSession>,
    pub io: Arc<SessionIo>,
}

/// A session is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: u64,
}

/// An action from a session, for one server or all of them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientRequest {
    pub session: u64,
    pub action: Action,
    pub server: Option<u32>,
    pub client_id: Option<String>,
}

/// The current servers and their status.
#[derive(Message)]
#[rtype(result = "Vec<ServerInfo>")]
pub struct ListServers;

/// Close every session with 1001 and log off every PBX.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A server as `GET /api/v1/servers` and `ListServers` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub id: u32,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub ssl: bool,
    pub status: &'static str,
    pub reason: String,
    pub banner: String,
    pub since_ms: u64,
    pub connects: u64,
}

struct ServerEntry {
    tag: ServerTag,
    host: String,
    port: u16,
    addr: Addr<PbxConn>,
    status: ServerStatus,
    reason: String,
    banner: String,
    since: SystemTime,
    connects: u64,
}

struct SessionEntry {
    out: Recipient<Deliver>,
    close: Recipient<CloseSession>,
    io: Arc<SessionIo>,
    pending: usize,
}

struct Pending {
    session: u64,
    server_id: u32,
    client_id: Option<String>,
    responded: bool,
    /// The response announced a list (`EventList: start`): events follow until `…Complete`.
    list: bool,
    async_originate: bool,
    deadline: Instant,
}

/// The registry actor (one per process).
pub struct Registry {
    limits: LimitSettings,
    ami_limits: Limits,
    reconnect: ReconnectSettings,
    pbx_arbiter: ArbiterHandle,
    metrics: SharedMetrics,
    servers: BTreeMap<u32, ServerEntry>,
    sessions: HashMap<u64, SessionEntry>,
    pending: HashMap<u64, Pending>,
    next_seq: u64,
}

impl Registry {
    /// PBX actors run on `pbx_arbiter`, away from the registry and the HTTP workers.
    pub fn new(
        limits: LimitSettings,
        ami_limits: Limits,
        reconnect: ReconnectSettings,
        pbx_arbiter: ArbiterHandle,
        metrics: SharedMetrics,
    ) -> Registry {
        Registry {
            limits,
            ami_limits,
            reconnect,
            pbx_arbiter,
            metrics,
            servers: BTreeMap::new(),
            sessions: HashMap::new(),
            pending: HashMap::new(),
            next_seq: 1,
        }
    }

    /// Queues frames to one session, or cuts it loose if that would pass its byte bound.
    fn send_to(
        &mut self,
        ctx: &mut Context<Self>,
        session: u64,
        frames: Arc<[ByteString]>,
        bytes: usize,
    ) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        if entry.io.queued() + bytes > self.limits.session_queue_bytes {
            self.cut_loose(ctx, session);
            return;
        }
        entry.io.add_queued(bytes);
        Metrics::add(&self.metrics.ws_messages_out_total, frames.len() as u64);
        Metrics::add(&self.metrics.ws_bytes_out_total, bytes as u64);
        entry.out.do_send(Deliver { frames });
    }

    fn broadcast(&mut self, ctx: &mut Context<Self>, frames: Vec<ByteString>) {
        if frames.is_empty() || self.sessions.is_empty() {
            return;
        }
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        let frames: Arc<[ByteString]> = frames.into();
        let n = frames.len() as u64;
        let mut slow = Vec::new();
        for (id, entry) in &self.sessions {
            if entry.io.queued() + bytes > self.limits.session_queue_bytes {
                slow.push(*id);
                continue;
            }
            entry.io.add_queued(bytes);
            entry.out.do_send(Deliver {
                frames: frames.clone(),
            });
        }
        let delivered = (self.sessions.len() - slow.len()) as u64;
        Metrics::add(&self.metrics.ws_messages_out_total, n * delivered);
        Metrics::add(&self.metrics.ws_bytes_out_total, bytes as u64 * delivered);
        for id in slow {
            self.cut_loose(ctx, id);
        }
    }

    fn reply(&mut self, ctx: &mut Context<Self>, session: u64, frame: ByteString) {
        let len = frame.len();
        self.send_to(ctx, session, Arc::from(vec![frame]), len);
    }

    fn error_reply(
        &mut self,
        ctx: &mut Context<Self>,
        session: u64,
        server: Option<u32>,
        id: Option<&str>,
        message: &str,
    ) {
        let tag = server
            .and_then(|s| self.servers.get(&s))
            .map(|e| e.tag.clone());
        let mut fields = vec![("Response", "Error"), ("Message", message)];
        if let Some(id) = id {
            fields.push(("ActionID", id));
        }
        let frame = encode_reply(tag.as_ref(), &fields);
        self.reply(ctx, session, frame);
    }

    /// Closes a session that fell behind with 4008; it never slows anyone else.
    fn cut_loose(&mut self, ctx: &mut Context<Self>, session: u64) {
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        self.pending.retain(|_, p| p.session != session);
        Metrics::inc(&self.metrics.ws_slow_consumer_closes_total);
        log::warn!("session {session}: slow consumer, closing with 4008");
        entry.io.abort(4008, "slow consumer");
        let io = entry.io;
        ctx.run_later(SLOW_CLOSE_GRACE, move |_, _| io.kill());
    }

    fn route_targeted(&mut self, ctx: &mut Context<Self>, seq: u64, packet: &Packet) -> bool {
        let Some(p) = self.pending.get_mut(&seq) else {
            return false;
        };
        let is_response = packet.get("Response").is_some();
        let event = packet.event().unwrap_or("");
        let targeted = is_response || p.list || (p.async_originate && event == "OriginateResponse");
        if !targeted {
            // An event that merely carries the id (UserEvent) is a broadcast.
            return false;
        }
        let mut done = false;
        if is_response {
            p.responded = true;
            let msg = packet.get("Message").unwrap_or("");
            p.list = packet
                .get("EventList")
                .is_some_and(|v| v.eq_ignore_ascii_case("start"))
                || msg.ends_with("will follow");
            let success = packet
                .get("Response")
                .is_some_and(|r| r.eq_ignore_ascii_case("Success"));
            if p.async_originate && success {
                p.deadline = Instant::now() + ORIGINATE_WAIT;
            }
            let awaits_more = p.list || (p.async_originate && success);
            done = !awaits_more;
        } else if packet
            .get("EventList")
            .is_some_and(|v| v.eq_ignore_ascii_case("Complete"))
            || (event.ends_with("Complete") && p.list)
            || event == "OriginateResponse"
        {
            done = true;
        }
        let (session, server_id) = (p.session, p.server_id);
        let client_id = p.client_id.clone();
        if done {
            self.finish_pending(seq);
        }
        let Some(server) = self.servers.get(&server_id) else {
            return true;
        };
        let id_text;
        let id = match &client_id {
            Some(id) => Some(id.as_str()),
            None => {
                id_text = format!("{ID_PREFIX}{seq}");
                Some(id_text.as_str())
            }
        };
        let frame = encode_packet(&server.tag, packet, id);
        self.reply(ctx, session, frame);
        true
    }

    fn finish_pending(&mut self, seq: u64) {
        if let Some(p) = self.pending.remove(&seq) {
            if let Some(s) = self.sessions.get_mut(&p.session) {
                s.pending = s.pending.saturating_sub(1);
            }
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            let Some(p) = self.pending.get(&seq) else {
                continue;
            };
            let (session, server, responded) = (p.session, p.server_id, p.responded);
            let id = p
                .client_id
                .clone()
                .unwrap_or_else(|| format!("{ID_PREFIX}{seq}"));
            self.finish_pending(seq);
            if !responded {
                self.error_reply(
                    ctx,
                    session,
                    Some(server),
                    Some(&id),
                    "Timeout waiting for the PBX to respond",
                );
            }
        }
    }

    fn send_action(&mut self, ctx: &mut Context<Self>, req: &ClientRequest, server_id: u32) {
        let shown_id = req.client_id.as_deref();
        let Some(server) = self.servers.get(&server_id) else {
            self.error_reply(
                ctx,
                req.session,
                None,
                shown_id,
                &format!("Unknown server {server_id}"),
            );
            return;
        };
        if server.status != ServerStatus::Connected {
            let msg = format!(
                "Server {server_id} is not connected ({})",
                server.status.as_str()
            );
            self.error_reply(ctx, req.session, Some(server_id), shown_id, &msg);
            return;
        }
        let addr = server.addr.clone();
        let Some(session) = self.sessions.get_mut(&req.session) else {
            return;
        };
        if session.pending >= self.limits.max_pending_actions_per_session {
            self.error_reply(
                ctx,
                req.session,
                Some(server_id),
                shown_id,
                "Too many outstanding actions",
            );
            return;
        }
        session.pending += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut action = req.action.clone();
        action.set("ActionID", format!("{ID_PREFIX}{seq}"));
        let async_originate = action.name().eq_ignore_ascii_case("Originate")
            && action
                .get("Async")
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1"));
        self.pending.insert(
            seq,
            Pending {
                session: req.session,
                server_id,
                client_id: req.client_id.clone(),
                responded: false,
                list: false,
                async_originate,
                deadline: Instant::now() + Duration::from_secs(self.limits.action_timeout_s),
            },
        );
        let session_id = req.session;
        let shown = req
            .client_id
            .clone()
            .unwrap_or_else(|| format!("{ID_PREFIX}{seq}"));
        ctx.spawn(
            addr.send(SendAction { action })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let err = match res {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    act.finish_pending(seq);
                    act.error_reply(ctx, session_id, Some(server_id), Some(&shown), &err);
                }),
        );
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        ctx.run_interval(Duration::from_millis(500), |act, ctx| act.sweep(ctx));
    }
}

impl Handler<AddServer> for Registry {
    type Result = ();

    fn handle(&mut self, msg: AddServer, ctx: &mut Context<Self>) {
        let s = msg.settings;
        let (limits, reconnect) = (self.ami_limits, self.reconnect.clone());
        let (registry, metrics, settings) = (ctx.address(), self.metrics.clone(), s.clone());
        let addr = Supervisor::start_in_arbiter(&self.pbx_arbiter, move |_| {
            PbxConn::new(settings, limits, reconnect, registry, metrics)
        });
        self.servers.insert(
            s.id,
            ServerEntry {
                tag: ServerTag::new(s.id, &s.name, s.tls),
                host: s.host.clone(),
                port: s.port,
                addr,
                status: ServerStatus::Connecting,
                reason: String::new(),
                banner: String::new(),
                since: SystemTime::now(),
                connects: 0,
            },
        );
    }
}

impl Handler<PbxPackets> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PbxPackets, ctx: &mut Context<Self>) {
        let Some(tag) = self.servers.get(&msg.server_id).map(|s| s.tag.clone()) else {
            return;
        };
        let mut segment: Vec<ByteString> = Vec::with_capacity(msg.items.len());
        for item in msg.items {
            if let Some(json) = item.json {
                segment.push(json);
                continue;
            }
            let id = item.packet.action_id().unwrap_or("");
            let seq = id
                .strip_prefix(ID_PREFIX)
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(seq) = seq.filter(|s| self.pending.contains_key(s)) {
                // Keep wire order for everyone: flush what came before this reply first.
                let before = std::mem::take(&mut segment);
                self.broadcast(ctx, before);
                if self.route_targeted(ctx, seq, &item.packet) {
                    continue;
                }
                let client = self.pending.get(&seq).and_then(|p| p.client_id.clone());
                segment.push(encode_packet(&tag, &item.packet, client.as_deref()));
                continue;
            }
            segment.push(encode_packet(&tag, &item.packet, None));
        }
        self.broadcast(ctx, segment);
    }
}

impl Handler<PbxStatusChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PbxStatusChanged, ctx: &mut Context<Self>) {
        let Some(server) = self.servers.get_mut(&msg.server_id) else {
            return;
        };
        let tag = server.tag.clone();
        if let Some(banner) = msg.banner {
            let frame = encode_prompt(&tag, &banner);
            server.banner = banner;
            self.broadcast(ctx, vec![frame]);
            return;
        }
        if server.status == msg.status && server.reason == msg.reason {
            return;
        }
        let was_connected = server.status == ServerStatus::Connected;
        server.status = msg.status;
        server.reason = msg.reason.clone();
        server.since = SystemTime::now();
        if msg.status == ServerStatus::Connected {
            server.connects += 1;
        }
        let frame = encode_status(&tag, msg.status.as_str(), &msg.reason);
        self.broadcast(ctx, vec![frame]);
        if was_connected && msg.status != ServerStatus::Connected {
            let lost: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.server_id == msg.server_id)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in lost {
                let Some(p) = self.pending.get(&seq) else {
                    continue;
                };
                let session = p.session;
                let id = p
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("{ID_PREFIX}{seq}"));
                self.finish_pending(seq);
                let text = format!("Server {} disconnected: {}", msg.server_id, msg.reason);
                self.error_reply(ctx, session, Some(msg.server_id), Some(&id), &text);
            }
        }
    }
}

impl Handler<Join> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let statuses: Vec<ByteString> = self
            .servers
            .values()
            .map(|s| encode_status(&s.tag, s.status.as_str(), &s.reason))
            .collect();
        self.sessions.insert(
            msg.session,
            SessionEntry {
                out: msg.out,
                close: msg.close,
                io: msg.io,
                pending: 0,
            },
        );
        let bytes = statuses.iter().map(|f| f.len()).sum();
        if !statuses.is_empty() {
            self.send_to(ctx, msg.session, statuses.into(), bytes);
        }
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        self.sessions.remove(&msg.session);
        self.pending.retain(|_, p| p.session != msg.session);
    }
}

impl Handler<ClientRequest> for Registry {
    type Result = ();

    fn handle(&mut self, req: ClientRequest, ctx: &mut Context<Self>) {
        let targets: Vec<u32> = match req.server {
            Some(id) => vec![id],
            None => self.servers.keys().copied().collect(),
        };
        if targets.is_empty() {
            self.error_reply(
                ctx,
                req.session,
                None,
                req.client_id.as_deref(),
                "No servers configured",
            );
        }
        for id in targets {
            self.send_action(ctx, &req, id);
        }
    }
}

impl Handler<ListServers> for Registry {
    type Result = MessageResult<ListServers>;

    fn handle(&mut self, _: ListServers, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.servers
                .values()
                .map(|s| ServerInfo {
                    id: s.tag.id,
                    name: s.tag.name.clone(),
                    host: s.host.clone(),
                    port: s.port,
                    ssl: s.tag.ssl,
                    status: s.status.as_str(),
                    reason: s.reason.clone(),
                    banner: s.banner.clone(),
                    since_ms: s
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    connects: s.connects,
                })
                .collect(),
        )
    }
}

impl Handler<Shutdown> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        for (_, s) in self.sessions.drain() {
            s.close.do_send(CloseSession {
                code: 1001,
                reason: "amihub shutting down".into(),
            });
        }
        let logoffs: Vec<_> = self
            .servers
            .values()
            .map(|s| s.addr.send(PbxShutdown))
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(logoffs).await;
        })
    }
}
