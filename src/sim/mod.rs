//! A simulated Asterisk PBX speaking AMI over TCP, for `amihub --demo`, integration tests and
//! the load tool. It answers the actions a dashboard uses in the shapes recorded from Asterisk 22
//! (`integration/captures`, copied from a real Asterisk 22), runs plain and Challenge/MD5 logins, generates realistic calls, queues
//! and agents when `demo_traffic` is on, and gives tests fine control: failing logins, a black
//! hole, refused or killed connections, injected events and bytes, floods, counters.
//!
//! Layout: `session` (one connection: login state machine, answers, the writer), `answers`
//! (list actions and CLI output from the state), `world` (channels, bridges, queues, devices —
//! every change writes its event), `traffic` (the timer task, demo call flows, Hangup),
//! `originate` (the Originate call), `flood` (the flood formatter), `wire` (packet text).
//!
//! Invariants: the simulator knows `crate::ami` only to parse actions, never actix or serde;
//! one `SimPbx` has one state shared by all its connections, and events are published under the
//! state's lock so every connection sees them in the same order; nothing queued for a
//! connection is unbounded.

mod answers;
mod flood;
mod media;
mod model;
mod originate;
mod queue;
mod session;
mod traffic;
mod wire;
mod world;
mod writer;

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc::error::TrySendError, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::ami::Packet;
use session::ConnHandle;
use world::World;
use writer::Out;

/// How a simulated PBX presents itself and behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Used in logs and as `SystemName`, e.g. "demo-pbx1".
    pub name: String,
    pub username: String,
    pub secret: String,
    /// First line sent on every connection.
    pub banner: String,
    /// Generate calls, queue callers and agent activity continuously.
    pub demo_traffic: bool,
    /// Mean gap between new demo calls.
    pub demo_interval_ms: u64,
    /// Seed of the state's random numbers (agents per queue, call timings).
    pub seed: u64,
    /// Gap between the RTCP reports of each connected call (Asterisk's default: 5 s).
    pub rtcp_interval_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            name: "sim-pbx".to_string(),
            username: "admin".to_string(),
            secret: "amp111".to_string(),
            banner: "Asterisk Call Manager/11.0.0".to_string(),
            demo_traffic: false,
            demo_interval_ms: 1500,
            seed: 1,
            rtcp_interval_ms: 5_000,
        }
    }
}

/// Counters of one simulated PBX (a snapshot).
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub connections: u64,
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub logoffs: u64,
    pub actions: u64,
    pub pings: u64,
    pub events_sent: u64,
    pub live_connections: u64,
    pub logged_in: u64,
    /// The most connections ever logged in at the same time.
    pub max_logged_in: u64,
}

/// A flood of `UserEvent: Flood` events on each logged-in connection.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// Events per second per connection; `None` = as fast as the socket takes them.
    pub rate_per_s: Option<u64>,
    /// Events per connection; `None` = until `stop_flood`.
    pub count: Option<u64>,
    /// Approximate size of one event in bytes (about 600 is realistic).
    pub event_bytes: usize,
}

/// Handle to a running simulated PBX; clones share it.
#[derive(Clone)]
pub struct SimPbx {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    logoffs: AtomicU64,
    actions: AtomicU64,
    pings: AtomicU64,
    events_sent: AtomicU64,
    live_connections: AtomicU64,
    logged_in: AtomicU64,
    max_logged_in: AtomicU64,
}

pub(crate) struct Inner {
    cfg: SimConfig,
    addr: SocketAddr,
    fail_auth: AtomicBool,
    /// Black-hole mode; a watch so held-back banners go out when it ends.
    silent: watch::Sender<bool>,
    refuse: AtomicBool,
    stats: Counters,
    conns: Mutex<HashMap<u64, ConnHandle>>,
    next_conn: AtomicU64,
    actions_tx: broadcast::Sender<Packet>,
    world: Mutex<World>,
    /// Wakes the timer task after a connection scheduled a step.
    world_wake: Notify,
    /// Cancelled by `stop`; every connection's token is a child of it.
    shutdown: CancellationToken,
    /// Taken and dropped by `stop`, which releases the port at once.
    listener: Mutex<Option<TcpListener>>,
}

/// Actions kept for `actions()` receivers that fall behind.
const ACTIONS_BACKLOG: usize = 8192;

impl SimPbx {
    /// Binds `addr` (use "127.0.0.1:0" for ephemeral) and serves with tokio::spawn on the
    /// current runtime.
    pub async fn start(addr: &str, cfg: SimConfig) -> std::io::Result<SimPbx> {
        let listener = TcpListener::bind(addr).await?;
        let inner = Arc::new(Inner {
            addr: listener.local_addr()?,
            world: Mutex::new(World::new(
                &cfg.name,
                cfg.seed,
                Duration::from_millis(cfg.rtcp_interval_ms.max(10)),
            )),
            cfg,
            fail_auth: AtomicBool::new(false),
            silent: watch::Sender::new(false),
            refuse: AtomicBool::new(false),
            stats: Counters::default(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            actions_tx: broadcast::channel(ACTIONS_BACKLOG).0,
            world_wake: Notify::new(),
            shutdown: CancellationToken::new(),
            listener: Mutex::new(Some(listener)),
        });
        log::info!(
            "{}: simulated PBX listening on {}",
            inner.cfg.name,
            inner.addr
        );
        tokio::spawn(accept_loop(inner.clone()));
        tokio::spawn(traffic::run(inner.clone()));
        Ok(SimPbx { inner })
    }

    /// Starts on a dedicated std thread with its own current-thread tokio runtime (used by demo
    /// mode and tests that are not inside tokio). Returns once bound.
    pub fn start_in_thread(addr: &str, cfg: SimConfig) -> std::io::Result<SimPbx> {
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = addr.to_string();
        std::thread::Builder::new()
            .name(format!("sim-{}", cfg.name))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match SimPbx::start(&addr, cfg).await {
                        Ok(pbx) => {
                            let stopped = pbx.inner.shutdown.clone();
                            let _ = tx.send(Ok(pbx));
                            stopped.cancelled().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        rx.recv()
            .map_err(|_| std::io::Error::other("simulator thread ended before binding"))?
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Logins are answered "Authentication failed", then the connection is closed.
    pub fn set_fail_auth(&self, on: bool) {
        self.inner.fail_auth.store(on, Relaxed);
    }

    /// Black hole: sockets stay open, nothing is answered (not even Ping), no events or floods
    /// are sent, and new connections get their banner only once it is turned off.
    pub fn set_silent(&self, on: bool) {
        self.inner.silent.send_replace(on);
    }

    /// New connections are accepted, then closed at once.
    pub fn set_refuse(&self, on: bool) {
        self.inner.refuse.store(on, Relaxed);
    }

    /// Drops every current connection abruptly (closes the socket).
    pub fn kill_connections(&self) {
        for c in lock(&self.inner.conns).values() {
            c.shared.token.cancel();
        }
    }

    /// Stops listening (the port is released before this returns) and drops all connections.
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
        drop(lock(&self.inner.listener).take());
        self.kill_connections();
        log::info!("{}: simulated PBX stopped", self.inner.cfg.name);
    }

    /// Sends one event (these headers, in this order) to every logged-in connection whose
    /// event mask takes its `Privilege` class (any connection with events on if it has none).
    pub fn emit(&self, headers: &[(&str, &str)]) {
        let mut buf = BytesMut::new();
        for (n, v) in headers {
            buf.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let privilege = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Privilege"));
        let bits = privilege.map_or(wire::ALL, |(_, v)| wire::class_bits(v));
        let _w = lock(&self.inner.world);
        self.inner.broadcast(bits, &buf.freeze());
    }

    /// Writes raw bytes verbatim, in one write, to every logged-in connection.
    pub fn inject_raw(&self, bytes: &[u8]) {
        let bytes = Bytes::copy_from_slice(bytes);
        self.inner.each_logged_in(0, || Out::Inject(bytes.clone()));
    }

    /// Starts a flood on every logged-in connection taking `user` events (replacing a running one).
    pub fn flood(&self, spec: FloodSpec) {
        self.inner
            .each_logged_in(wire::USER, || Out::Flood(Some(spec.clone())));
    }

    /// Asks every connection to stop its flood. It takes effect behind what a connection is
    /// writing: a batch already being written still goes out and is counted in `events_sent`
    /// afterwards, so a test that needs a final count lets the flood end by its `count`.
    pub fn stop_flood(&self) {
        self.inner.each_logged_in(0, || Out::Flood(None));
    }

    /// Every action received (after parse), for asserting what reached the PBX.
    pub fn actions(&self) -> broadcast::Receiver<Packet> {
        self.inner.actions_tx.subscribe()
    }

    pub fn stats(&self) -> SimStats {
        let c = &self.inner.stats;
        SimStats {
            connections: c.connections.load(Relaxed),
            logins_ok: c.logins_ok.load(Relaxed),
            logins_failed: c.logins_failed.load(Relaxed),
            logoffs: c.logoffs.load(Relaxed),
            actions: c.actions.load(Relaxed),
            pings: c.pings.load(Relaxed),
            events_sent: c.events_sent.load(Relaxed),
            live_connections: c.live_connections.load(Relaxed),
            logged_in: c.logged_in.load(Relaxed),
            max_logged_in: c.max_logged_in.load(Relaxed),
        }
    }

    /// Waits (polling every 10 ms up to `timeout`) until `pred(stats)` holds; returns whether
    /// it did.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&SimStats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stats()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Names of the simulated channels now up, e.g. to hang one up from a test.
    pub fn channels(&self) -> Vec<String> {
        lock(&self.inner.world).chans.keys().cloned().collect()
    }
}

impl Inner {
    /// Sends the events written into the state to the connections taking them. Called with the
    /// state locked, so all connections get events in one order.
    fn publish(&self, w: &mut World) {
        for (bits, bytes) in std::mem::take(&mut w.out) {
            self.broadcast(bits, &bytes);
        }
    }

    fn broadcast(&self, bits: u32, bytes: &Bytes) {
        if !*self.silent.borrow() {
            self.each_logged_in(bits, || Out::Event(bytes.clone()));
        }
    }

    /// Queues `make()` for every logged-in connection whose mask shares a bit with `bits`
    /// (`0` = all of them). A connection whose queue is full is not reading: it is closed.
    fn each_logged_in(&self, bits: u32, make: impl Fn() -> Out) {
        for c in lock(&self.conns).values() {
            let s = &c.shared;
            if !s.logged_in.load(Relaxed) || (bits != 0 && s.mask.load(Relaxed) & bits == 0) {
                continue;
            }
            if let Err(TrySendError::Full(_)) = c.tx.try_send(make()) {
                log::warn!(
                    "{}: a connection stopped reading ({} messages queued); closing it",
                    self.cfg.name,
                    writer::QUEUE_MESSAGES
                );
                s.token.cancel();
            }
        }
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    loop {
        let accepted = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = poll_fn(|cx| match lock(&inner.listener).as_ref() {
                Some(l) => l.poll_accept(cx).map(Some),
                None => Poll::Ready(None),
            }) => r,
        };
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                inner.stats.connections.fetch_add(1, Relaxed);
                if inner.refuse.load(Relaxed) {
                    drop(stream);
                    continue;
                }
                tokio::spawn(session::serve(inner.clone(), stream, peer));
            }
            Some(Err(e)) => {
                log::warn!("{}: accept failed: {e}", inner.cfg.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Locks a mutex, taking the data of one poisoned by a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
