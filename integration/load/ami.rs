//! `--ami`: the AMI listener under load. (1) Action round trip: sequential `Ping`s answered by
//! the simulated PBX, in turn on a direct AMI connection to the simulator, through amihub's AMI
//! listener (`Server: load`) and, with `--peer`, through another AMI proxy (astmanproxy) that
//! was started against the simulator's `--sim-port`; p50/p99 of each and what each proxy adds.
//! (2) Events to N AMI clients: a flood of `rate` events/s for `duration` s, counted per client,
//! through amihub and then through the peer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amihub::sim::FloodSpec;
use anyhow::{bail, Context as _};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hist::Hist;
use amihub::sim::SimPbx;

use crate::hub::{start_sim_at, Hub};

/// A raw AMI connection, logged in.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn login(
        addr: SocketAddr,
        user: &str,
        secret: &str,
        events: &str,
    ) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut c = Conn { s, buf: Vec::new() };
        let login = format!(
            "Action: Login\r\nActionID: l\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: {events}\r\n\r\n"
        );
        c.s.write_all(login.as_bytes()).await?;
        let reply = c.until(b"ActionID: l\r\n").await?;
        if !reply.contains("Success") {
            bail!("login refused: {reply}");
        }
        Ok(c)
    }

    /// Reads until a packet containing `needle` is complete; returns the text read.
    async fn until(&mut self, needle: &[u8]) -> anyhow::Result<String> {
        loop {
            if let Some(at) = memmem::find(&self.buf, needle) {
                if let Some(end) = memmem::find(&self.buf[at..], b"\r\n\r\n") {
                    let text: Vec<u8> = self.buf.drain(..at + end + 4).collect();
                    return Ok(String::from_utf8_lossy(&text).into_owned());
                }
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut chunk))
                .await
                .context("timeout")??;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn ping(&mut self, id: u64, server: Option<&str>) -> anyhow::Result<Duration> {
        let server = server
            .map(|s| format!("Server: {s}\r\n"))
            .unwrap_or_default();
        let t = Instant::now();
        let msg = format!("Action: Ping\r\nActionID: p{id}\r\n{server}\r\n");
        self.s.write_all(msg.as_bytes()).await?;
        let reply = self
            .until(format!("ActionID: p{id}\r\n").as_bytes())
            .await?;
        let took = t.elapsed();
        if !reply.contains("Ping: Pong") || (!server.is_empty() && !reply.contains("\r\nServer: "))
        {
            bail!("not a PBX's Ping reply: {reply:?}");
        }
        Ok(took)
    }
}

fn ms(h: &Hist, q: f64) -> f64 {
    h.quantile(q) as f64 / 1e3
}

/// Another AMI proxy to measure beside amihub (`--peer`), already connected to the simulator.
pub struct Peer {
    pub name: String,
    pub login: Login,
}

/// Where and as whom a client logs in.
pub struct Login {
    pub addr: SocketAddr,
    pub user: String,
    pub secret: String,
}

impl Login {
    async fn connect(&self, events: &str) -> anyhow::Result<Conn> {
        Conn::login(self.addr, &self.user, &self.secret, events).await
    }
}

/// What one run measures.
pub struct Spec {
    pub clients: usize,
    pub rate: u64,
    pub duration: u64,
    /// The simulator's port (0: any; a peer must be configured with a fixed one).
    pub sim_port: u16,
    /// Sequential Pings on each connection.
    pub rounds: u64,
    pub peer: Option<Peer>,
}

/// Runs both measurements and prints them.
pub async fn run(exe: &std::path::Path, spec: Spec) -> anyhow::Result<()> {
    let sim = start_sim_at("load", spec.sim_port)?;
    let hub = Hub::start(exe, sim.addr(), None)?;
    hub.wait_connected(Duration::from_secs(10)).await?;
    let ami = hub.ami_addr.context("no AMI listener")?;

    let mut direct = Conn::login(sim.addr(), "admin", "secret", "off").await?;
    let amihub = Login {
        addr: ami,
        user: "anyone".into(),
        secret: "x".into(),
    };
    let mut proxied = amihub.connect("off").await?;
    let mut peer = match &spec.peer {
        Some(p) => Some(peer_ready(p).await?),
        None => None,
    };
    let (mut hd, mut hp, mut hq) = (Hist::default(), Hist::default(), Hist::default());
    let rounds = spec.rounds;
    for i in 0..rounds {
        hd.record(direct.ping(i, None).await?.as_micros() as u64);
        hp.record(proxied.ping(i, Some("load")).await?.as_micros() as u64);
        if let Some(peer) = peer.as_mut() {
            hq.record(peer.ping(i, None).await?.as_micros() as u64);
        }
    }
    println!("AMI action round trip, {rounds} sequential Pings answered by the simulated PBX, interleaved:");
    let line = |what: &str, h: &Hist| {
        println!(
            "  {what:<28} p50 {:.3} ms  p99 {:.3} ms",
            ms(h, 0.5),
            ms(h, 0.99)
        );
    };
    let added = |what: &str, h: &Hist| {
        println!(
            "  {what:<28} p50 {:.3} ms  p99 {:.3} ms",
            ms(h, 0.5) - ms(&hd, 0.5),
            ms(h, 0.99) - ms(&hd, 0.99)
        );
    };
    line("direct to the simulator:", &hd);
    line("through amihub's listener:", &hp);
    if let Some(p) = &spec.peer {
        line(&format!("through {}:", p.name), &hq);
    }
    added("added by amihub:", &hp);
    if let Some(p) = &spec.peer {
        added(&format!("added by {}:", p.name), &hq);
    }
    drop((direct, proxied, peer));

    events(&sim, "amihub", &amihub, &spec, Some(&hub.cuts)).await?;
    if let Some(p) = &spec.peer {
        events(&sim, &p.name, &p.login, &spec, None).await?;
    }
    Ok(())
}

/// A logged-in connection to the peer once it answers a Ping from the simulator (a proxy
/// started before the simulator connects to it on its own retry timer).
async fn peer_ready(p: &Peer) -> anyhow::Result<Conn> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        match p.login.connect("off").await {
            Ok(mut c) => match c.ping(u64::MAX, None).await {
                Ok(_) => return Ok(c),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer")))
        .with_context(|| format!("{} at {} never answered a Ping", p.name, p.login.addr))
}

/// Floods `rate` events/s for `duration` s and counts what each of `clients` AMI clients of
/// `via` receives; prints one line (with the slow-consumer cuts `cuts` counts, when known).
async fn events(
    sim: &SimPbx,
    name: &str,
    via: &Login,
    spec: &Spec,
    cuts: Option<&AtomicU64>,
) -> anyhow::Result<()> {
    let clients = spec.clients;
    let counts: Vec<Arc<AtomicU64>> = (0..clients).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut tasks = Vec::new();
    for count in &counts {
        let mut c = via.connect("on").await?;
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let finder = memmem::Finder::new(b"UserEvent: Flood\r\n");
            let mut carry: Vec<u8> = std::mem::take(&mut c.buf);
            let mut chunk = vec![0u8; 65536];
            loop {
                let Ok(n) = c.s.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                carry.extend_from_slice(&chunk[..n]);
                let found = finder.find_iter(&carry).count() as u64;
                count.fetch_add(found, Relaxed);
                let keep = carry.len().saturating_sub(17);
                carry.drain(..keep);
            }
        }));
    }
    let total = spec.rate * spec.duration;
    let started = Instant::now();
    sim.flood(FloodSpec {
        rate_per_s: Some(spec.rate),
        count: Some(total),
        event_bytes: 600,
    });
    let deadline = started + Duration::from_secs(spec.duration + 20);
    while counts.iter().any(|c| c.load(Relaxed) < total) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let got: Vec<u64> = counts.iter().map(|c| c.load(Relaxed)).collect();
    let sum: u64 = got.iter().sum();
    let min = got.iter().copied().min().unwrap_or(0);
    println!(
        "events to {clients} AMI clients of {name}: {total} events at {}/s each; delivered {sum} in {took:.1} s = {:.0} events/s in all; slowest client got {min} of {total}{}",
        spec.rate,
        sum as f64 / took,
        cuts.map_or(String::new(), |c| format!("; cut: {}", c.load(Relaxed)))
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
