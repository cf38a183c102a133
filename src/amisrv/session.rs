//! The AMI session actor: one per AMI client connection. Before login it answers as Asterisk
//! does ([`super::login`]); after login it joins the registry as an AMI-format session, answers
//! `Ping`, `Logoff`, `Events`, `Filter` and ProxyActions itself, checks the user's rights and
//! rate, and hands every other action to the registry with its target server. It owns no
//! routing: the registry decides what it receives, and the writer task owns the socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::mpsc;

use super::local;
use super::login::{self, PreLogin, Step};
use super::render::render_reply;
use super::writer::{Out, WriterEnd};
use crate::ami::{Action, Frame, Limits, Packet};
use crate::auth::hasher::PasswordPool;
use crate::auth::limiter::FailureLimiter;
use crate::auth::{ActionRefused, AmiUser, Authenticator};
use crate::config::{AmiListenerSettings, LimitSettings};
use crate::metrics::{Metrics, SharedMetrics};
use crate::registry::session::{CloseSession, Deliver, Format, SessionIo, TokenBucket};
use crate::registry::{ClientRequest, Join, Leave, Registry, Subscribe, Subscription, Target};

/// How long a failed login waits before its answer and the close (Asterisk waits about 1 s).
pub const LOGIN_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// What every AMI session shares.
pub struct Shared {
    pub registry: Addr<Registry>,
    /// Swapped whole on SIGHUP.
    pub auth: Arc<RwLock<Arc<Authenticator>>>,
    pub settings: AmiListenerSettings,
    pub limits: LimitSettings,
    /// Bounds on what clients send (the AMI codec's, within `max_client_message_bytes`).
    pub codec: Limits,
    pub metrics: SharedMetrics,
    /// Session ids, shared with the WebSocket so they are unique in the registry.
    pub next_session: Arc<AtomicU64>,
    /// The HTTP side's argon2 pool: one bound on password checks for every interface.
    pub passwords: Arc<PasswordPool>,
    /// The HTTP side's failure counts per client address, so AMI and HTTP failures add up.
    pub failures: Arc<FailureLimiter>,
}

impl Shared {
    fn auth(&self) -> Arc<Authenticator> {
        match self.auth.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The writer task finished (drained, aborted or failed): the session is over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriterDone(pub WriterEnd);

/// One AMI client connection.
pub struct AmiSession {
    pub(super) id: u64,
    peer: SocketAddr,
    pub(super) shared: Arc<Shared>,
    io: Arc<SessionIo>,
    out: Option<mpsc::UnboundedSender<Out>>,
    pre: PreLogin,
    pub(super) user: Option<AmiUser>,
    subscription: Subscription,
    /// The `Filter` rules added so far, as sent.
    filters: Vec<String>,
    bucket: TokenBucket,
    /// `SetOutputFormat`: how this session's packets are written.
    pub(super) output: super::proxy::OutputFormat,
    /// `SetAutoFilter: on`: only replies to this session's own actions, no events.
    pub(super) auto_filter: bool,
    closing: bool,
}

impl AmiSession {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        shared: Arc<Shared>,
        io: Arc<SessionIo>,
        out: mpsc::UnboundedSender<Out>,
    ) -> AmiSession {
        AmiSession {
            id,
            peer,
            bucket: TokenBucket::new(shared.limits.actions_per_second),
            shared,
            io,
            out: Some(out),
            pre: PreLogin::default(),
            user: None,
            subscription: Subscription::default(),
            filters: Vec::new(),
            output: super::proxy::OutputFormat::Standard,
            auto_filter: false,
            closing: false,
        }
    }

    /// Queues frames for the writer, counted against this session's bound like the registry's.
    fn send(&self, frames: Arc<[ByteString]>, newline: bool) {
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        if let Some(out) = &self.out {
            self.io.add_queued(bytes);
            let _ = out.send(Out { frames, newline });
        }
    }

    /// Writes one reply of amihub's own.
    pub(super) fn write(&self, frame: ByteString) {
        let frame = self.output.convert_own(frame);
        self.send(Arc::from(vec![frame]), self.output.newline());
    }

    /// An error of amihub's own, counted.
    pub(super) fn error(&self, id: Option<&str>, message: &str) {
        Metrics::inc(&self.shared.metrics.ami_client_errors_total);
        self.write(login::error(id, message));
    }

    /// Ends the session after what is queued has been written.
    pub(super) fn close(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        self.out = None;
        ctx.stop();
    }

    fn user_name(&self) -> &str {
        self.user.as_ref().map_or("-", |u| u.identity.name.as_str())
    }

    fn on_packet(&mut self, p: Packet, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if self.user.is_none() {
            let step = self.pre.on_packet(&p, new_challenge);
            return self.on_step(step, p.action_id().map(str::to_string), ctx);
        }
        Metrics::inc(&self.shared.metrics.ami_client_actions_total);
        let id = p.action_id().map(str::to_string);
        let id = id.as_deref();
        let Some(name) = p.get("Action").map(str::to_string) else {
            return self.error(id, "Missing action in request");
        };
        if !self.bucket.take() {
            Metrics::inc(&self.shared.metrics.actions_refused_total);
            let msg = format!(
                "Rate limit exceeded ({} actions per second)",
                self.shared.limits.actions_per_second
            );
            return self.error(id, &msg);
        }
        match name.to_ascii_lowercase().as_str() {
            "logoff" => {
                self.write(login::goodbye(id));
                self.close(ctx);
            }
            "login" | "challenge" => self.relogin(&p, id),
            "events" => {
                let reply = local::events(&mut self.subscription, p.get("EventMask"), id);
                self.resubscribe();
                self.write(reply);
            }
            "filter" => self.add_filter(&p, id),
            "proxy" | "proxyaction" => self.on_proxy(&p, ctx),
            "ping" if p.get("Server").is_none() => self.write(local::pong(id)),
            _ => self.forward(&p, &name, id),
        }
    }

    /// A `Login`/`Challenge` on a connection that is already logged in.
    fn relogin(&mut self, p: &Packet, id: Option<&str>) {
        let same = p.get("Username").is_none_or(|u| u == self.user_name());
        if same {
            self.write(render_reply(
                &[
                    ("Response", "Success"),
                    ("Message", "Already authenticated"),
                ],
                id,
                None,
            ));
        } else {
            Metrics::inc(&self.shared.metrics.actions_refused_total);
            let msg = format!(
                "Already authenticated as {}: log off first",
                self.user_name()
            );
            self.error(id, &msg);
        }
    }

    /// `Action: Filter` (`Operation: Add`, `Filter: [!]Header: regex`), Asterisk's eventfilter.
    fn add_filter(&mut self, p: &Packet, id: Option<&str>) {
        let (operation, filter) = (p.get("Operation"), p.get("Filter"));
        match local::add_filter(
            &mut self.subscription,
            &mut self.filters,
            operation,
            filter,
            id,
        ) {
            Ok(reply) => {
                self.resubscribe();
                self.write(reply);
            }
            Err(message) => self.error(id, &message),
        }
    }

    /// What the registry should send this session, as it stands now.
    fn effective_subscription(&self) -> Subscription {
        let mut s = self.subscription.clone();
        if self.auto_filter {
            s.set_event_mask("off");
        }
        s
    }

    pub(super) fn resubscribe(&self) {
        self.shared.registry.do_send(Subscribe {
            session: self.id,
            subscription: self.effective_subscription(),
        });
    }

    /// An action for a PBX: rights, then the target server, then the registry.
    fn forward(&mut self, p: &Packet, name: &str, id: Option<&str>) {
        let Some(user) = &self.user else { return };
        let mut action = Action::new(name);
        let mut server = None;
        for (header, value) in p.headers() {
            if header.eq_ignore_ascii_case("Server") {
                server = Some(value.to_string());
            } else if !header.eq_ignore_ascii_case("Action")
                && !header.eq_ignore_ascii_case("ActionID")
            {
                action.push(header, value);
            }
        }
        // The same rule as every front end: the action's name, and the Getvar right for headers
        // Asterisk evaluates. A refused name gets Asterisk's own words.
        if let Err(refused) = user.identity.rights.check_action(&action) {
            Metrics::inc(&self.shared.metrics.actions_refused_total);
            log::warn!(
                "ami session {} (user {}): refused action {name} (not permitted): {refused}",
                self.id,
                user.identity.name
            );
            let message = match refused {
                ActionRefused::Action(_) => login::DENIED.to_string(),
                other => other.to_string(),
            };
            return self.error(id, &message);
        }
        let target = match server.or_else(|| user.default_server.clone()) {
            Some(name) => Target::Named(name),
            None => Target::Sole,
        };
        self.shared.registry.do_send(ClientRequest {
            session: self.id,
            action,
            target,
            client_id: id.map(str::to_string),
        });
    }

    fn on_step(&mut self, step: Step, id: Option<String>, ctx: &mut Context<Self>) {
        match step {
            Step::Reply(frame) => self.write(frame),
            Step::Goodbye(frame) => {
                self.write(frame);
                self.close(ctx);
            }
            Step::Fail => self.login_failed(id, "-", ctx),
            Step::Check {
                credentials,
                events,
            } => {
                let auth = self.shared.auth();
                let peer = self.peer.ip();
                let user = credentials.user().to_string();
                if !auth.is_open() {
                    if let Some(wait) = self.shared.failures.blocked(peer, Instant::now()) {
                        log::warn!(
                            "ami session {} ({}): address refused for {}s after too many failed logins",
                            self.id,
                            self.peer,
                            wait.as_secs().max(1)
                        );
                        return self.login_failed(id, &user, ctx);
                    }
                }
                let passwords = self.shared.passwords.clone();
                // argon2 runs on the shared pool; nothing else is read meanwhile.
                let check = async move { auth.ami_login(&credentials, peer, &passwords).await };
                ctx.wait(check.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(user) => act.logged_in(user, events, id, ctx),
                    Err(e) => {
                        if e.is_failure() {
                            act.shared.failures.failed(peer, Instant::now());
                        }
                        act.login_failed(id, &user, ctx)
                    }
                }));
            }
        }
    }

    fn logged_in(
        &mut self,
        user: AmiUser,
        events: Option<String>,
        id: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        Metrics::inc(&self.shared.metrics.ami_logins_total);
        log::info!(
            "ami session {} ({}): logged in as {}",
            self.id,
            self.peer,
            user.identity.name
        );
        self.write(login::accepted(id.as_deref()));
        self.subscription
            .set_event_mask(events.as_deref().unwrap_or("on"));
        self.shared.registry.do_send(Join {
            session: self.id,
            user: user.identity.name.clone(),
            out: Some(ctx.address().recipient()),
            close: ctx.address().recipient(),
            io: self.io.clone(),
            rights: user.identity.rights.clone(),
            format: Format::Ami,
            subscription: Some(self.effective_subscription()),
        });
        self.user = Some(user);
    }

    fn login_failed(&mut self, id: Option<String>, user: &str, ctx: &mut Context<Self>) {
        Metrics::inc(&self.shared.metrics.ami_login_failures_total);
        log::warn!(
            "ami session {} ({}): login failed for user {user:?}",
            self.id,
            self.peer
        );
        self.closing = true;
        ctx.wait(
            actix::clock::sleep(LOGIN_FAILURE_DELAY)
                .into_actor(self)
                .map(move |_, act, ctx| {
                    act.write(login::error(id.as_deref(), login::FAILED));
                    act.close(ctx);
                }),
        );
    }
}

/// An unpredictable MD5 challenge: 128 bits from the OS generator, as hex.
fn new_challenge() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Actor for AmiSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Metrics::inc(&self.shared.metrics.ami_sessions_total);
        let timeout = Duration::from_secs(self.shared.settings.auth_timeout_s);
        ctx.run_later(timeout, move |act, ctx| {
            if act.user.is_none() && !act.closing {
                Metrics::inc(&act.shared.metrics.ami_refused_sessions_total);
                log::info!(
                    "ami session {} ({}): not logged in after {} s, closing",
                    act.id,
                    act.peer,
                    timeout.as_secs()
                );
                act.close(ctx);
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.out = None;
        if self.user.is_some() {
            self.shared.registry.do_send(Leave { session: self.id });
        }
        Running::Stop
    }
}

impl Handler<Deliver> for AmiSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        // The registry counted these bytes already; the writer counts them off.
        if let Some(out) = &self.out {
            let newline = self.output.newline();
            let frames = self.output.convert(msg.take(&self.io));
            let _ = out.send(Out { frames, newline });
        }
    }
}

impl Handler<CloseSession> for AmiSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        log::info!(
            "ami session {} ({}): closing ({} {})",
            self.id,
            self.user_name(),
            msg.code,
            msg.reason
        );
        if msg.code == 1001 {
            // amihub is stopping: tell the client as Asterisk does when it shuts down.
            self.write(render_reply(
                &[
                    ("Event", "Shutdown"),
                    ("Privilege", "system,all"),
                    ("Shutdown", "Cleanly"),
                    ("Restart", "False"),
                ],
                None,
                None,
            ));
        }
        self.close(ctx);
    }
}

impl Handler<WriterDone> for AmiSession {
    type Result = ();

    fn handle(&mut self, msg: WriterDone, ctx: &mut Context<Self>) {
        if msg.0 != WriterEnd::Drained {
            log::info!(
                "ami session {} ({}): writer ended ({:?}), closing",
                self.id,
                self.user_name(),
                msg.0
            );
        }
        self.closing = true;
        ctx.stop();
    }
}

impl StreamHandler<Result<Frame, std::io::Error>> for AmiSession {
    fn handle(&mut self, item: Result<Frame, std::io::Error>, ctx: &mut Context<Self>) {
        match item {
            Ok(Frame::Packet(p)) => self.on_packet(p, ctx),
            Ok(Frame::Discarded(why)) => {
                let msg = format!("Message discarded ({why:?}): over the listener's limits");
                self.error(None, &msg);
            }
            Ok(Frame::Banner(_)) => {}
            Err(e) => {
                log::debug!("ami session {}: read error: {e}", self.id);
                self.closing = true;
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // EOF: anything still queued is flushed by the writer, then the socket closes.
        self.close(ctx);
    }
}

/// Counts a freshly accepted session's id.
pub fn next_id(shared: &Shared) -> u64 {
    shared.next_session.fetch_add(1, Relaxed)
}
