//! The WebSocket session actor: one per browser. It writes the frames the registry shares with
//! it, answers keepalive, rate-limits and parses client messages, and hands actions to the
//! registry. It owns no routing: the registry decides what it receives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use bytestring::ByteString;

use crate::auth::Identity;
use crate::config::LimitSettings;
use crate::metrics::{Metrics, SharedMetrics};
use crate::registry::history::Position;
use crate::registry::session::{CloseSession, Deliver, Format, SessionIo, TokenBucket};
use crate::registry::{ClientRequest, Join, Leave, Registry, Resume, Target};
use crate::ws::protocol::{encode_reply, parse_client, ClientMessage};

/// One browser connection.
pub struct WsSession {
    pub(super) id: u64,
    pub(super) identity: Identity,
    pub(super) registry: Addr<Registry>,
    io: Arc<SessionIo>,
    limits: LimitSettings,
    pub(super) metrics: SharedMetrics,
    last_heard: Instant,
    /// The ActionID of the ProxyAction being answered.
    pub(super) proxy_id: Option<String>,
    bucket: TokenBucket,
    /// Subscribes compile regexes on this worker: at most SUBSCRIBES_PER_SECOND.
    pub(super) subscribe_bucket: TokenBucket,
    /// `?resume=` of the upgrade: replayed as the session joins.
    resume: std::collections::BTreeMap<u32, Position>,
}

/// Subscribes one session may make per second, after a burst of SUBSCRIBE_BURST.
pub const SUBSCRIBES_PER_SECOND: u32 = 2;
const SUBSCRIBE_BURST: u32 = 10;

impl WsSession {
    pub fn new(
        id: u64,
        identity: Identity,
        registry: Addr<Registry>,
        io: Arc<SessionIo>,
        limits: LimitSettings,
        metrics: SharedMetrics,
    ) -> WsSession {
        WsSession {
            id,
            identity,
            registry,
            io,
            bucket: TokenBucket::new(limits.actions_per_second),
            subscribe_bucket: TokenBucket::with_burst(SUBSCRIBES_PER_SECOND, SUBSCRIBE_BURST),
            limits,
            metrics,
            last_heard: Instant::now(),
            proxy_id: None,
            resume: Default::default(),
        }
    }

    /// Joins resuming from these positions (`?resume=` on the WebSocket URL).
    pub fn resuming(mut self, since: std::collections::BTreeMap<u32, Position>) -> WsSession {
        self.resume = since;
        self
    }

    /// Writes a reply of amihub's own, counted against this session's queue like any frame.
    pub(super) fn reply(&self, ctx: &mut ws::WebsocketContext<Self>, frame: ByteString) {
        self.io.add_queued(frame.len());
        ctx.text(frame);
    }

    pub(super) fn error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        message: &str,
        id: Option<&str>,
    ) {
        Metrics::inc(&self.metrics.ws_client_errors_total);
        let mut fields = vec![("Response", "Error"), ("Message", message)];
        if let Some(id) = id {
            fields.push(("ActionID", id));
        }
        self.reply(ctx, encode_reply(None, &fields));
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        Metrics::inc(&self.metrics.ws_client_messages_total);
        if text.len() > self.limits.max_client_message_bytes {
            let msg = format!(
                "Message of {} bytes exceeds max_client_message_bytes ({})",
                text.len(),
                self.limits.max_client_message_bytes
            );
            return self.error(ctx, &msg, None);
        }
        let message = match parse_client(text) {
            Ok(m) => m,
            Err(e) => return self.error(ctx, &e.to_string(), None),
        };
        if !self.bucket.take() {
            Metrics::inc(&self.metrics.actions_refused_total);
            let id = match &message {
                ClientMessage::Action { client_id, .. } => client_id.clone(),
                ClientMessage::Proxy { .. } => None,
            };
            let msg = format!(
                "Rate limit exceeded ({} actions per second)",
                self.limits.actions_per_second
            );
            return self.error(ctx, &msg, id.as_deref());
        }
        match message {
            ClientMessage::Action {
                action,
                server,
                client_id,
            } => self.on_action(action, server, client_id, ctx),
            ClientMessage::Proxy { name, body } => self.on_proxy(&name, body, ctx),
        }
    }

    fn on_action(
        &mut self,
        action: crate::ami::Action,
        server: Option<u32>,
        client_id: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let id = client_id.as_deref();
        // The PBX login belongs to amihub: clients' Login/Challenge/Logoff never reach a PBX.
        match action.name().to_ascii_lowercase().as_str() {
            "login" => {
                let mut fields = vec![
                    ("Response", "Success"),
                    (
                        "Message",
                        "Authentication accepted (amihub holds the PBX logins)",
                    ),
                ];
                fields.extend(id.map(|id| ("ActionID", id)));
                self.reply(ctx, encode_reply(None, &fields));
            }
            "challenge" => {
                let challenge = format!("{:09}", rand::random::<u32>() % 1_000_000_000);
                let mut fields = vec![("Response", "Success"), ("Challenge", challenge.as_str())];
                fields.extend(id.map(|id| ("ActionID", id)));
                self.reply(ctx, encode_reply(None, &fields));
            }
            "logoff" => {
                let mut fields = vec![
                    ("Response", "Goodbye"),
                    ("Message", "Thanks for all the fish."),
                ];
                fields.extend(id.map(|id| ("ActionID", id)));
                self.reply(ctx, encode_reply(None, &fields));
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Normal,
                    description: Some("Logoff".into()),
                }));
                ctx.stop();
            }
            _ => match self.identity.rights.check_action(&action) {
                Err(refused) => {
                    Metrics::inc(&self.metrics.actions_refused_total);
                    log::warn!(
                        "session {} (user {}): refused action {} (not permitted): {refused}",
                        self.id,
                        self.identity.name,
                        action.name()
                    );
                    let msg = format!("{refused} for user {}", self.identity.name);
                    self.error(ctx, &msg, id);
                }
                Ok(()) => self.registry.do_send(ClientRequest {
                    session: self.id,
                    action,
                    target: server.map_or(Target::Every, Target::Id),
                    client_id,
                }),
            },
        }
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        Metrics::inc(&self.metrics.ws_sessions_total);
        let join = Join {
            session: self.id,
            user: self.identity.name.clone(),
            rights: self.identity.rights.clone(),
            out: ctx.address().recipient(),
            close: ctx.address().recipient(),
            io: self.io.clone(),
            format: Format::Json,
            subscription: None,
        };
        if self.resume.is_empty() {
            self.registry.do_send(join);
        } else {
            self.registry.do_send(Resume {
                session: self.id,
                since: std::mem::take(&mut self.resume),
                action_id: None,
                join: Some(join),
            });
        }
        let every = Duration::from_secs(self.limits.ws_ping_interval_s);
        let idle = Duration::from_secs(self.limits.ws_idle_timeout_s);
        ctx.run_interval(every, move |act, ctx| {
            if act.last_heard.elapsed() > idle {
                log::info!(
                    "session {}: no sign of life for {} s, closing",
                    act.id,
                    idle.as_secs()
                );
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("idle timeout".into()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.registry.do_send(Leave { session: self.id });
        Running::Stop
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        for frame in msg.frames.iter() {
            ctx.text(frame.clone());
        }
    }
}

impl Handler<CloseSession> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Self::Context) {
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(msg.code),
            description: Some(msg.reason),
        }));
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                self.error(ctx, "Only text frames with JSON are accepted", None)
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(e) => {
                log::info!("session {}: protocol error: {e}", self.id);
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}
