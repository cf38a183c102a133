//! The system under test: a fresh simulated PBX and a fresh `amihub` process per scenario,
//! both on loopback. amihub is killed when its handle drops (and by the watchdog, which knows
//! every child's pid).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amihub::sim::{SimConfig, SimPbx};
use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Pids of running amihub children, for the watchdog.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

const USER: &str = "admin";
const SECRET: &str = "secret";

/// A simulator on an ephemeral loopback port, on its own thread.
pub fn start_sim(name: &str) -> anyhow::Result<SimPbx> {
    start_sim_at(name, 0)
}

/// A simulator on 127.0.0.1:`port` (0: any free port).
pub fn start_sim_at(name: &str, port: u16) -> anyhow::Result<SimPbx> {
    let cfg = SimConfig {
        name: name.into(),
        username: USER.into(),
        secret: SECRET.into(),
        demo_traffic: false,
        ..SimConfig::default()
    };
    SimPbx::start_in_thread(&format!("127.0.0.1:{port}"), cfg).context("start simulator")
}

/// A running amihub process.
pub struct Hub {
    child: Child,
    pub addr: SocketAddr,
    /// The AMI listener (`--ami`).
    pub ami_addr: Option<SocketAddr>,
    /// "slow consumer" lines logged so far.
    pub cuts: Arc<AtomicU64>,
    tail: Arc<Mutex<VecDeque<String>>>,
    dir: PathBuf,
}

impl Hub {
    /// Starts `exe` with a config pointing at `sim`; returns once it is listening.
    pub fn start(exe: &Path, sim: SocketAddr, queue_bytes: Option<u64>) -> anyhow::Result<Hub> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "amihub-load-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        std::fs::create_dir_all(dir.join("web_root"))?;
        let queue = queue_bytes
            .map(|q| format!("session_queue_bytes = {q}\n"))
            .unwrap_or_default();
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\nweb_root = \"{}\"\n\n[ami_listener]\nlisten = \"127.0.0.1:0\"\n\n[limits]\nmax_sessions = 20000\nactions_per_second = 100000\n{queue}\n\
             [[servers]]\nid = 1\nname = \"load\"\nhost = \"{}\"\nport = {}\nusername = \"{USER}\"\n\
             secret = \"{SECRET}\"\nauth = \"plain\"\n",
            dir.join("web_root").display(),
            sim.ip(),
            sim.port()
        );
        let path = dir.join("amihub.toml");
        std::fs::write(&path, config)?;
        let mut child = Command::new(exe)
            .arg("--config")
            .arg(&path)
            .env(
                "RUST_LOG",
                "warn,amihub::service=info,amihub::registry=warn",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", exe.display()))?;
        lock(&CHILDREN).push(child.id());
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let cuts = Arc::new(AtomicU64::new(0));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ami_tx, ami_rx) = std::sync::mpsc::channel();
        let (c, t) = (cuts.clone(), tail.clone());
        let echo = std::env::var_os("AMIHUB_LOAD_LOG").is_some();
        std::thread::Builder::new()
            .name("amihub-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http").nth(1) {
                        let addr = rest.trim_start_matches('s').trim_start_matches("://");
                        let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                    if let Some(rest) = line.split("AMI listener on ami://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = ami_tx.send(addr);
                    }
                    if line.contains("slow consumer") {
                        c.fetch_add(1, Relaxed);
                    }
                    if echo {
                        eprintln!("[amihub] {line}");
                    }
                    let mut t = lock(&t);
                    if t.len() >= 50 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })?;
        let mut hub = Hub {
            child,
            addr: "127.0.0.1:0".parse()?,
            ami_addr: None,
            cuts,
            tail,
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => {
                hub.addr = a
                    .trim_end_matches('/')
                    .parse()
                    .with_context(|| format!("listen address {a:?}"))?
            }
            Err(_) => bail!("amihub did not start; log: {:?}", hub.tail()),
        }
        hub.ami_addr = ami_rx
            .recv_timeout(Duration::from_secs(5))
            .ok()
            .and_then(|a| a.parse().ok());
        Ok(hub)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tail(&self) -> Vec<String> {
        lock(&self.tail).iter().cloned().collect()
    }

    /// Polls `GET /api/v1/servers` until server 1 is Connected.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let body = http_get(self.addr, "/api/v1/servers")
                .await
                .unwrap_or_default();
            if body.contains("\"status\":\"Connected\"") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("PBX never Connected: {body}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        lock(&CHILDREN).retain(|p| *p != pid);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`; the body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        Ok::<_, anyhow::Error>(
            text.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default(),
        )
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await?
}

/// Kills every amihub child (used by the watchdog before exiting).
pub fn kill_children() {
    for pid in lock(&CHILDREN).iter() {
        // SAFETY: plain kill(2) of a pid we spawned.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
