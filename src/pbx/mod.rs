//! The connection actor for one PBX: connect, log in (MD5 or plain), keep alive with `Ping`,
//! forward packets to the registry, and reconnect with backoff under an actix `Supervisor`.
//!
//! It does not know about sessions or JSON clients: it hands parsed packets (with the broadcast
//! JSON pre-rendered) to the registry and writes the actions the registry gives it.

pub mod backoff;
pub mod connect;
mod state_sync;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use bytestring::ByteString;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use openssl::ssl::SslConnector;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::codec::FramedRead;

use crate::ami::{Action, AmiDecoder, Frame, Limits, Packet};
use crate::config::{AuthMode, ReconnectSettings, ServerSettings};
use crate::metrics::{Metrics, SharedMetrics};
use crate::registry::{Inbound, PbxPackets, PbxStatusChanged, Registry};
use crate::ws::protocol::{encode_packet_into, ServerTag};
use backoff::Backoff;
pub use connect::PbxError;
pub(crate) use state_sync::now_ms;
pub use state_sync::{GetQuality, GetState, StateTracker};

/// Actions queued towards one PBX before `SendAction` is refused.
const WRITE_QUEUE: usize = 1024;
/// Packets read before handing them to the registry, at most.
const BATCH: usize = 512;
/// The PBX socket's read buffer to start with: a busy PBX's burst is read in few syscalls
/// (the codec's default, 8 KiB, is about a dozen events per read).
const READ_BUFFER: usize = 64 * 1024;
/// Rendered bytes handed to the registry in one message, about.
const BATCH_BYTES: usize = 64 * 1024;
/// Batches handed to the sink and not yet answered past which the actor stops reading: one
/// being fanned out while the next is read and parsed.
const IN_FLIGHT: usize = 2;
const LOGIN_ID: &str = "amihub-login";
const CHALLENGE_ID: &str = "amihub-challenge";
const LOGOFF_ID: &str = "amihub-logoff";
const PING_PREFIX: &str = "amihub-ping-";

/// A server's connection status as clients see it (type 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    Connecting,
    Connected,
    Disconnected,
    AuthFailed,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Connecting => "Connecting",
            ServerStatus::Connected => "Connected",
            ServerStatus::Disconnected => "Disconnected",
            ServerStatus::AuthFailed => "AuthFailed",
        }
    }
}

/// Where a PBX actor hands its packets and statuses: the registry, or in cluster mode the
/// publisher that writes them to the server's shared stream.
#[derive(Clone)]
pub struct Sink {
    pub packets: Recipient<PbxPackets>,
    pub status: Recipient<PbxStatusChanged>,
    /// Cluster: a shared stream, read by other nodes' state trackers too, so the replies to
    /// their snapshot actions go there instead of being dropped here.
    pub shared: bool,
}

impl From<Addr<Registry>> for Sink {
    fn from(a: Addr<Registry>) -> Sink {
        Sink {
            packets: a.clone().recipient(),
            status: a.recipient(),
            shared: false,
        }
    }
}

/// What the registry holds of a server's actor: a PBX connection, or a cluster mirror.
#[derive(Clone)]
pub struct PbxHandle {
    pub send: Recipient<SendAction>,
    pub shutdown: Recipient<Shutdown>,
    pub state: Recipient<GetState>,
    pub quality: Recipient<GetQuality>,
}

impl From<Addr<PbxConn>> for PbxHandle {
    fn from(a: Addr<PbxConn>) -> PbxHandle {
        PbxHandle {
            send: a.clone().recipient(),
            shutdown: a.clone().recipient(),
            state: a.clone().recipient(),
            quality: a.recipient(),
        }
    }
}

/// Write one action to this PBX (its ActionID already rewritten by the registry).
#[derive(Message)]
#[rtype(result = "Result<(), PbxError>")]
pub struct SendAction {
    pub action: Action,
}

/// Log off and stay down; resolves once the PBX said Goodbye or after a short grace period.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting,
    Greeting,
    Challenge,
    Login,
    Connected,
}

/// One supervised AMI connection. The struct survives restarts; each restart is a new connection.
pub struct PbxConn {
    settings: Arc<ServerSettings>,
    /// Set by the registry; tags every message so a replaced actor's late ones are ignored.
    generation: u64,
    tag: ServerTag,
    limits: Limits,
    reconnect: ReconnectSettings,
    backoff: Backoff,
    tls: Option<SslConnector>,
    registry: Sink,
    metrics: SharedMetrics,
    phase: Phase,
    attempt: u32,
    auth_failed: bool,
    shutting_down: bool,
    reason: String,
    connected_at: Option<Instant>,
    writer: Option<mpsc::Sender<Action>>,
    ping_seq: u64,
    ping_outstanding: Option<u64>,
    goodbye: Option<oneshot::Sender<()>>,
    /// Live calls, queues and endpoints, rebuilt after every login.
    tracker: StateTracker,
    /// Batches and statuses on their way to the sink, in order (see [`forward`]).
    outbox: Option<mpsc::UnboundedSender<ToSink>>,
    /// Batches handed over and not yet answered by the sink.
    flow: Arc<Flow>,
}

impl PbxConn {
    pub fn new(
        settings: Arc<ServerSettings>,
        generation: u64,
        limits: Limits,
        reconnect: ReconnectSettings,
        registry: Sink,
        metrics: SharedMetrics,
    ) -> PbxConn {
        let relay = registry.shared;
        let (tls, reason) = match connect::tls_connector(&settings) {
            Ok(tls) => (tls, String::new()),
            Err(e) => (None, e.to_string()),
        };
        PbxConn {
            generation,
            tag: ServerTag::new(settings.id, &settings.name, settings.tls),
            backoff: Backoff::from(&reconnect),
            settings,
            limits,
            reconnect,
            tls,
            registry,
            metrics,
            phase: Phase::Idle,
            attempt: 0,
            auth_failed: false,
            shutting_down: false,
            reason,
            connected_at: None,
            writer: None,
            ping_seq: 0,
            ping_outstanding: None,
            goodbye: None,
            tracker: StateTracker::relaying(relay),
            outbox: None,
            flow: Arc::default(),
        }
    }

    fn status(&mut self, status: ServerStatus, reason: &str, banner: Option<String>) {
        match status {
            ServerStatus::Connected => log::info!(
                "server {} ({}): connected to {}:{}",
                self.settings.id,
                self.settings.name,
                self.settings.host,
                self.settings.port
            ),
            ServerStatus::Connecting => log::debug!(
                "server {} ({}): connecting ({reason})",
                self.settings.id,
                self.settings.name
            ),
            _ => log::warn!(
                "server {} ({}): {} ({reason})",
                self.settings.id,
                self.settings.name,
                status.as_str()
            ),
        }
        self.forward(ToSink::Status(PbxStatusChanged {
            server_id: self.settings.id,
            generation: self.generation,
            status,
            reason: reason.to_string(),
            banner,
            state_version: None,
            at: None,
        }));
    }

    /// Ends this connection; the supervisor restarts the actor, which reconnects after backoff.
    fn drop_connection(&mut self, ctx: &mut Context<Self>, reason: String) {
        if self.reason.is_empty() {
            self.reason = reason;
        }
        ctx.stop();
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.phase = Phase::Connecting;
        let attempt = format!("attempt {}", self.attempt + 1);
        self.status(ServerStatus::Connecting, &attempt, None);
        let fut = connect::open(
            self.settings.host.clone(),
            self.settings.port,
            self.tls.clone(),
            self.settings.tls_verify,
            Duration::from_millis(self.reconnect.connect_timeout_ms),
        );
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(io) => act.attach(io, ctx),
            Err(e) => act.drop_connection(ctx, e.to_string()),
        }));
    }

    fn attach(&mut self, io: Box<dyn connect::AmiIo>, ctx: &mut Context<Self>) {
        let (read, mut write) = tokio::io::split(io);
        ctx.add_stream(
            FramedRead::with_capacity(read, AmiDecoder::new(self.limits, true), READ_BUFFER)
                .ready_chunks(BATCH),
        );
        let (tx, mut rx) = mpsc::channel::<Action>(WRITE_QUEUE);
        self.writer = Some(tx);
        // The writer drains whatever is queued into one buffer per write; it ends when the actor
        // restarts (the sender is dropped) or the socket fails (the reader then sees the end).
        ctx.spawn(
            async move {
                let mut buf = BytesMut::with_capacity(4096);
                while let Some(action) = rx.recv().await {
                    let _ = action.encode(&mut buf);
                    while let Ok(more) = rx.try_recv() {
                        let _ = more.encode(&mut buf);
                    }
                    if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                        break;
                    }
                    buf.clear();
                }
                let _ = write.shutdown().await;
            }
            .into_actor(self),
        );
        self.phase = Phase::Greeting;
        let login_timeout = Duration::from_millis(self.reconnect.login_timeout_ms);
        ctx.run_later(login_timeout, |act, ctx| {
            if act.phase != Phase::Connected {
                act.drop_connection(ctx, "login timed out".into());
            }
        });
    }

    fn write(&mut self, ctx: &mut Context<Self>, action: Action) {
        let sent = match &self.writer {
            Some(w) => w.try_send(action).is_ok(),
            None => false,
        };
        if !sent {
            self.drop_connection(ctx, "write queue full".into());
        }
    }

    fn login(&mut self, ctx: &mut Context<Self>, challenge: Option<&str>) {
        let s = self.settings.clone();
        let mut login = Action::new("Login")
            .header("ActionID", LOGIN_ID)
            .header("Username", s.username.as_str());
        match challenge {
            Some(ch) => {
                let mut md5 = Md5::new();
                md5.update(ch.as_bytes());
                md5.update(s.secret.as_bytes());
                let key: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
                login.push("AuthType", "MD5");
                login.push("Key", key);
            }
            None => login.push("Secret", s.secret.as_str()),
        }
        login.push("Events", s.events.as_str());
        self.phase = Phase::Login;
        self.write(ctx, login);
    }

    fn on_banner(&mut self, ctx: &mut Context<Self>, banner: String) {
        if !banner.starts_with("Asterisk Call Manager/") {
            log::warn!(
                "server {} ({}): unexpected banner {banner:?}, trying to log in anyway",
                self.settings.id,
                self.settings.name
            );
        }
        self.forward(ToSink::Status(PbxStatusChanged::logging_in(
            self.settings.id,
            self.generation,
            banner,
            None,
        )));
        if self.settings.auth == AuthMode::Md5 {
            self.phase = Phase::Challenge;
            let ch = Action::new("Challenge")
                .header("ActionID", CHALLENGE_ID)
                .header("AuthType", "MD5");
            self.write(ctx, ch);
        } else {
            self.login(ctx, None);
        }
    }

    fn on_login_reply(&mut self, ctx: &mut Context<Self>, p: &Packet) {
        let ok = p
            .get("Response")
            .is_some_and(|r| r.eq_ignore_ascii_case("Success"));
        if !ok {
            let msg = p.get("Message").unwrap_or("login refused").to_string();
            self.login_failed(ctx, msg);
            return;
        }
        self.phase = Phase::Connected;
        self.auth_failed = false;
        self.connected_at = Some(Instant::now());
        Metrics::inc(&self.metrics.pbx_connects_total);
        Metrics::inc(&self.metrics.pbx_connected);
        self.status(ServerStatus::Connected, "", None);
        self.start_snapshot(ctx);
        let every = Duration::from_secs(self.settings.ping_interval_s);
        ctx.run_interval(every, |act, ctx| act.ping(ctx));
    }

    /// The PBX refused the login (or answered it in a way that is no login): AuthFailed, then
    /// the longer auth-failure backoff.
    fn login_failed(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.auth_failed = true;
        Metrics::inc(&self.metrics.pbx_auth_failures_total);
        self.status(ServerStatus::AuthFailed, &reason, None);
        self.reason = reason;
        ctx.stop();
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Connected || self.ping_outstanding.is_some() {
            return;
        }
        self.ping_seq += 1;
        let seq = self.ping_seq;
        self.ping_outstanding = Some(seq);
        let ping = Action::new("Ping").header("ActionID", format!("{PING_PREFIX}{seq}"));
        self.write(ctx, ping);
        let timeout = Duration::from_secs(self.settings.ping_timeout_s);
        ctx.run_later(timeout, move |act, ctx| {
            if act.ping_outstanding == Some(seq) {
                let reason = format!("no reply to Ping within {} s", timeout.as_secs());
                act.drop_connection(ctx, reason);
            }
        });
    }

    /// Handles one packet; returns it if it is for the registry.
    fn on_packet(&mut self, ctx: &mut Context<Self>, p: Packet) -> Option<Packet> {
        let id = p.action_id().unwrap_or("");
        match self.phase {
            Phase::Challenge if id == CHALLENGE_ID => {
                let success = p
                    .get("Response")
                    .is_some_and(|r| r.eq_ignore_ascii_case("Success"));
                match p.get("Challenge").map(str::to_string) {
                    Some(ch) => self.login(ctx, Some(&ch)),
                    // A success with nothing to answer is no login: never Connected without one.
                    None if success => self.login_failed(
                        ctx,
                        "the PBX answered Challenge without a Challenge header".into(),
                    ),
                    None => self.on_login_reply(ctx, &p),
                }
                None
            }
            Phase::Login if id == LOGIN_ID => {
                self.on_login_reply(ctx, &p);
                None
            }
            Phase::Connected if id.starts_with(PING_PREFIX) => {
                if id[PING_PREFIX.len()..].parse().ok() == self.ping_outstanding {
                    self.ping_outstanding = None;
                }
                None
            }
            Phase::Connected if id == LOGOFF_ID => {
                if let Some(tx) = self.goodbye.take() {
                    let _ = tx.send(());
                }
                None
            }
            Phase::Connected => {
                let p = self.tracker.track(p);
                if let Some(sample) = self.tracker.take_quality_sample() {
                    self.metrics.rtcp_mos.observe_value(sample.mos);
                    self.metrics.rtcp_loss.observe_value(sample.loss_pct);
                }
                p
            }
            _ => None,
        }
    }
}

impl Actor for PbxConn {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.connection_ended();
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            self.phase = Phase::Idle;
            return;
        }
        let delay = if self.auth_failed {
            self.backoff.auth_failed_delay()
        } else if self.attempt == 0 {
            Duration::ZERO
        } else {
            self.backoff.delay(self.attempt, rand::random::<f64>())
        };
        if !delay.is_zero() {
            log::info!(
                "server {} ({}): reconnecting in {} ms",
                self.settings.id,
                self.settings.name,
                delay.as_millis()
            );
        }
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }
}

/// Every stop ends a connection: `stopped` runs both before a supervised restart and when the
/// actor is finally dropped (DropServer, shutdown), so the accounting lives there.
impl Supervised for PbxConn {}

impl PbxConn {
    fn connection_ended(&mut self) {
        if self.shutting_down && self.phase == Phase::Idle {
            // The final stop after a shutdown already reported: nothing new to say.
            return;
        }
        let was_connected = self.phase == Phase::Connected;
        let stayed_up = self
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(self.reconnect.reset_after_s));
        self.attempt = if stayed_up {
            1
        } else {
            self.attempt.saturating_add(1)
        };
        self.writer = None;
        self.ping_outstanding = None;
        if was_connected {
            self.metrics
                .pbx_connected
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            Metrics::inc(&self.metrics.pbx_disconnects_total);
        }
        if let Some(tx) = self.goodbye.take() {
            let _ = tx.send(());
        }
        let reason = std::mem::take(&mut self.reason);
        if !self.auth_failed {
            let reason = if reason.is_empty() {
                "connection lost".into()
            } else {
                reason
            };
            self.status(ServerStatus::Disconnected, &reason, None);
        }
        self.phase = Phase::Idle;
    }
}

impl StreamHandler<Vec<Result<Frame, std::io::Error>>> for PbxConn {
    fn handle(&mut self, frames: Vec<Result<Frame, std::io::Error>>, ctx: &mut Context<Self>) {
        // Packets with an ActionID may be routed to one session with its own id; the registry
        // renders those. Everything else is rendered here, once, into one buffer per handover
        // (each frame a slice of it), sized from the packets so a quiet PBX's small batches
        // hold no more than they need.
        let mut left: usize = frames
            .iter()
            .map(|f| match f {
                Ok(Frame::Packet(p)) => render_estimate(p),
                _ => 0,
            })
            .sum();
        let mut batch = Rendered::with_capacity(left.min(BATCH_BYTES + BATCH_BYTES / 8));
        let (mut packets, mut bytes) = (0, 0);
        for frame in frames {
            if self.phase == Phase::Idle {
                break;
            }
            match frame {
                Ok(Frame::Banner(banner)) => self.on_banner(ctx, banner),
                Ok(Frame::Packet(p)) => {
                    packets += 1;
                    bytes += p.heap_bytes() as u64;
                    left = left.saturating_sub(render_estimate(&p));
                    if let Some(p) = self.on_packet(ctx, p) {
                        batch.push(&self.tag, p);
                    }
                    // Hand over in slices of at most BATCH_BYTES, so one message is a small
                    // share of any session's queue bound.
                    if batch.bytes() >= BATCH_BYTES {
                        let next = Rendered::with_capacity(left.min(BATCH_BYTES + BATCH_BYTES / 8));
                        let full = std::mem::replace(&mut batch, next);
                        self.hand_over(ctx, full.into_items(), None);
                    }
                }
                Ok(Frame::Discarded(why)) => {
                    Metrics::inc(&self.metrics.ami_malformed_total);
                    log::warn!(
                        "server {} ({}): discarded a malformed packet ({why:?})",
                        self.settings.id,
                        self.settings.name
                    );
                }
                Err(e) => {
                    self.drop_connection(ctx, format!("read error: {e}"));
                    break;
                }
            }
        }
        Metrics::add(&self.metrics.ami_packets_in_total, packets);
        Metrics::add(&self.metrics.ami_bytes_in_total, bytes);
        let ready = self.tracker.take_ready();
        if !batch.is_empty() || ready.is_some() {
            self.hand_over(ctx, batch.into_items(), ready);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.drop_connection(ctx, "connection closed by PBX".into());
    }
}

/// About what a packet's JSON rendering takes (what `encode_packet_into` reserves).
fn render_estimate(p: &Packet) -> usize {
    96 + p.text_len() * 5 / 4
}

/// Packets on their way to the registry, the broadcast ones rendered into one shared buffer.
struct Rendered {
    text: String,
    /// Each packet and, when rendered here, the range of its frame in `text`.
    packets: Vec<(Packet, Option<(usize, usize)>)>,
    /// Bytes of the packets the registry renders itself.
    unrendered: usize,
}

impl Rendered {
    fn with_capacity(bytes: usize) -> Rendered {
        Rendered {
            text: String::with_capacity(bytes),
            packets: Vec::new(),
            unrendered: 0,
        }
    }

    fn push(&mut self, tag: &ServerTag, p: Packet) {
        if p.action_id().is_some() {
            self.unrendered += p.heap_bytes();
            self.packets.push((p, None));
            return;
        }
        let start = self.text.len();
        encode_packet_into(&mut self.text, tag, &p, None);
        self.packets.push((p, Some((start, self.text.len()))));
    }

    fn bytes(&self) -> usize {
        self.text.len() + self.unrendered
    }

    fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    fn into_items(self) -> Vec<Inbound> {
        let text = ByteString::from(self.text);
        self.packets
            .into_iter()
            .map(|(packet, span)| Inbound {
                packet,
                json: span
                    .and_then(|(start, end)| text.get(start..end))
                    .map(|frame| text.slice_ref(frame)),
                at: None,
            })
            .collect()
    }
}

impl PbxConn {
    fn hand_over(
        &mut self,
        ctx: &mut Context<Self>,
        items: Vec<Inbound>,
        state_version: Option<u64>,
    ) {
        let msg = PbxPackets {
            server_id: self.settings.id,
            generation: self.generation,
            items,
            state_version,
        };
        // Queued at once, so nothing is ever reordered or lost when the actor stops. While a
        // batch is at the sink, this PBX is read and parsed on; with a second one queued
        // behind it, the actor waits (reads nothing) until the sink answered one: the
        // registry's answer is the backpressure, as before, one batch deeper.
        self.flow.queued.fetch_add(1, Relaxed);
        self.forward(ToSink::Packets(msg));
        if self.flow.queued.load(Relaxed) >= IN_FLIGHT {
            let flow = self.flow.clone();
            ctx.wait(async move { flow.below(IN_FLIGHT).await }.into_actor(self));
        }
    }

    /// Queues a message for the sink behind everything queued before it.
    fn forward(&mut self, item: ToSink) {
        let _ = self.outbox().send(item);
    }

    /// The queue towards the sink, and the task that empties it, made on first use; both last
    /// as long as this struct (across reconnects), so nothing queued is ever reordered.
    fn outbox(&mut self) -> &mpsc::UnboundedSender<ToSink> {
        let (sink, flow) = (&self.registry, &self.flow);
        self.outbox.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            actix::spawn(forward(sink.clone(), flow.clone(), rx));
            tx
        })
    }
}

/// What a PBX actor hands its sink, in order.
enum ToSink {
    Packets(PbxPackets),
    Status(PbxStatusChanged),
}

/// Batches queued towards the sink and not yet answered by it.
#[derive(Default)]
struct Flow {
    queued: AtomicUsize,
    answered: Notify,
}

impl Flow {
    /// Resolves once fewer than `n` batches are outstanding.
    async fn below(&self, n: usize) {
        loop {
            // Created before the check: an answer in between still wakes it.
            let answered = self.answered.notified();
            if self.queued.load(Relaxed) < n {
                return;
            }
            answered.await;
        }
    }
}

/// Delivers a PBX actor's batches and statuses to its sink in the order they were queued,
/// waiting for the sink's answer to each batch. Ends when the actor is dropped.
async fn forward(sink: Sink, flow: Arc<Flow>, mut rx: mpsc::UnboundedReceiver<ToSink>) {
    while let Some(item) = rx.recv().await {
        match item {
            ToSink::Packets(msg) => {
                let _ = sink.packets.send(msg).await;
                flow.queued.fetch_sub(1, Relaxed);
                flow.answered.notify_waiters();
            }
            ToSink::Status(msg) => sink.status.do_send(msg),
        }
    }
}

impl Handler<SendAction> for PbxConn {
    type Result = Result<(), PbxError>;

    fn handle(&mut self, msg: SendAction, _ctx: &mut Context<Self>) -> Self::Result {
        let server_id = self.settings.id;
        if self.phase != Phase::Connected {
            return Err(PbxError::NotConnected { server_id });
        }
        msg.action.to_bytes()?;
        let writer = self
            .writer
            .as_ref()
            .ok_or(PbxError::NotConnected { server_id })?;
        writer.try_send(msg.action).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PbxError::QueueFull { server_id },
            mpsc::error::TrySendError::Closed(_) => PbxError::NotConnected { server_id },
        })?;
        Metrics::inc(&self.metrics.ami_actions_out_total);
        Ok(())
    }
}

impl Handler<Shutdown> for PbxConn {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        if self.phase != Phase::Connected {
            ctx.stop();
            return Box::pin(actix::fut::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        self.goodbye = Some(tx);
        self.reason = "amihub shutting down".into();
        self.write(ctx, Action::new("Logoff").header("ActionID", LOGOFF_ID));
        // Goodbye or not, the connection ends here: a PBX that ignores Logoff is not kept.
        let wait = async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        };
        Box::pin(wait.into_actor(self).map(|_, _, ctx| ctx.stop()))
    }
}
