//! Test support: start the real `amihub` binary on an ephemeral port against simulated PBXs,
//! and talk to it with real WebSocket and HTTP clients. Waiting is always for an event, with a
//! deadline, never a fixed sleep.
#![allow(dead_code)]

pub mod ami;
pub mod pki;
pub mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub use amihub::sim::{SimConfig, SimPbx};

/// Default patience for anything a test awaits.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running amihub process; killed on drop.
pub struct Amihub {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The config file, which a test may rewrite before a SIGHUP.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

/// A `[[servers]]` entry pointing at a simulator.
pub fn server_toml(
    id: u32,
    name: &str,
    sim: &SimPbx,
    user: &str,
    secret: &str,
    extra: &str,
) -> String {
    format!(
        "[[servers]]\nid = {id}\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nusername = \"{user}\"\nsecret = \"{secret}\"\n{extra}\n",
        sim.addr().ip(),
        sim.addr().port()
    )
}

/// A simulator with the credentials `server_toml(.., "admin", "secret", ..)` expects.
pub async fn sim(name: &str) -> SimPbx {
    let cfg = SimConfig {
        name: name.into(),
        username: "admin".into(),
        secret: "secret".into(),
        demo_traffic: false,
        ..SimConfig::default()
    };
    SimPbx::start("127.0.0.1:0", cfg)
        .await
        .expect("start simulator")
}

impl Amihub {
    /// Starts the binary with `config` (TOML, without `[http] listen`, which is added) and waits
    /// until it is listening.
    pub fn start(config: &str) -> Amihub {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Amihub {
        Self::spawn(config, env, tempfile::tempdir().expect("tempdir"))
    }

    /// Starts with the config file in `dir` (which may hold files the config names).
    pub fn start_in(config: &str, dir: tempfile::TempDir) -> Amihub {
        Self::spawn(config, &[], dir)
    }

    fn full_config(body: &str) -> String {
        let web_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web_root");
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\nweb_root = \"{}\"\n{body}",
            web_root.display()
        )
    }

    fn spawn(config: &str, env: &[(&str, &str)], dir: tempfile::TempDir) -> Amihub {
        let path = dir.path().join("amihub.toml");
        std::fs::write(&path, Self::full_config(config)).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amihub"));
        cmd.arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info,actix_server=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn amihub");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http").nth(1) {
                    let addr = rest.trim_start_matches('s').trim_start_matches("://");
                    let addr: String = addr
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(addr);
                }
                if std::env::var("AMIHUB_TEST_LOG").is_ok() {
                    eprintln!("[amihub] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("amihub did not start: {:?}", log.lock().unwrap());
            }
        };
        Amihub {
            child,
            addr,
            log,
            config: path,
            _dir: dir,
        }
    }

    /// Replaces the config file (written to a sibling and renamed: a reload never sees half).
    pub fn rewrite_config(&self, body: &str) {
        let tmp = self.config.with_extension("toml.new");
        std::fs::write(&tmp, Self::full_config(body)).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("replace config");
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until a log line contains `needle`; returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needle:?}: {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by number.
    pub fn signal_num(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of the child this harness spawned and still owns.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// SIGHUP, then waits until the reload is logged.
    pub async fn reload(&self) {
        let before = self.log_count("reloaded:");
        self.signal_num(libc::SIGHUP);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.log_count("reloaded:") <= before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reload not logged: {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (without blocking the runtime) for the process to exit within `timeout`.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens a WebSocket at `/ws`.
    pub async fn ws(&self) -> Client {
        Client::connect(&self.ws_url("/ws")).await
    }

    /// A plain HTTP/1.1 request; returns status and body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        http_to(self.addr, method, path, headers, body).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.http("GET", path, &[], "").await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("json body")
    }

    /// Polls `GET /api/v1/servers` until server `id` has `status`.
    pub async fn wait_status(&self, id: u64, status: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let v = self.get_json("/api/v1/servers").await;
            let found = v["servers"].as_array().and_then(|a| {
                a.iter()
                    .find(|s| s["id"] == id)
                    .map(|s| s["status"] == status)
            });
            if found == Some(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server {id} never became {status}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory of the process in KiB (Linux /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Amihub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 request to `addr`; returns status and (de-chunked) body.
pub async fn http_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let (status, _, body) = http_raw(addr, req.as_bytes()).await;
    (status, body)
}

/// Writes `request` (any bytes, e.g. headers that are not UTF-8) to `addr` and reads until the
/// server closes; returns status, head and (de-chunked) body.
pub async fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let s = TcpStream::connect(addr).await.expect("connect http");
    http_exchange(s, request).await
}

/// Writes `request` on an already connected stream (e.g. one bound to a chosen source address)
/// and reads until the server closes; returns status, head and (de-chunked) body.
pub async fn http_exchange(mut s: TcpStream, request: &[u8]) -> (u16, String, String) {
    s.write_all(request).await.expect("write http");
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("http timeout")
        .expect("read http");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((text.clone(), String::new()));
    let body = decode_chunked(&head, body);
    (status, head, body)
}

/// Polls `GET /api/v1/servers` with `auth` until every server is Connected.
pub async fn wait_connected_as(addr: SocketAddr, auth: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = http_to(
            addr,
            "GET",
            "/api/v1/servers",
            &[("Authorization", auth)],
            "",
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let all = v["servers"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|s| s["status"] == "Connected"));
        if status == 200 && all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "servers never all Connected: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of metric `name` in `GET /metrics` (with `headers`, e.g. credentials).
pub async fn metric_at(addr: SocketAddr, name: &str, headers: &[(&str, &str)]) -> u64 {
    let (status, body) = http_to(addr, "GET", "/metrics", headers, "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}

/// Polls metric `name` until `pred` holds; returns that value.
pub async fn wait_metric_at(
    addr: SocketAddr,
    name: &str,
    headers: &[(&str, &str)],
    pred: impl Fn(u64) -> bool,
) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = metric_at(addr, name, headers).await;
        if pred(got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stuck at {got}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn decode_chunked(head: &str, body: String) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body;
    }
    let mut out = String::new();
    let mut rest = body.as_str();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A real WebSocket client.
pub struct Client {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    /// Every JSON message seen so far, in order.
    pub seen: Vec<Value>,
}

/// How a client's stream ended.
#[derive(Debug, PartialEq)]
pub enum Closed {
    Code(u16, String),
    NoCloseFrame,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
            .await
            .expect("ws connect timeout")
            .expect("ws connect");
        Client {
            ws,
            seen: Vec::new(),
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string()))
            .await
            .expect("ws send");
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_string()))
            .await
            .expect("ws send");
    }

    /// The next JSON message, or None on close/timeout.
    pub async fn next_json(&mut self, timeout: Duration) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).expect("server sent invalid JSON");
                self.seen.push(v.clone());
                return Some(v);
            }
            if let Message::Close(_) = msg {
                return None;
            }
        }
    }

    /// Reads until a message matches `pred`; panics with what was seen on timeout.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_json(left).await {
                Some(v) if pred(&v) => return v,
                Some(_) => {}
                None => {
                    let tail: Vec<&Value> = self.seen.iter().rev().take(10).collect();
                    panic!("never saw {what}; last messages: {tail:#?}");
                }
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self, timeout: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => panic!("connection not closed within {timeout:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Closed::NoCloseFrame,
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return Closed::Code(u16::from(frame.code), frame.reason.to_string())
                }
                Ok(Some(Ok(Message::Close(None)))) => return Closed::Code(1005, String::new()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// True if `v` is an event named `name` from server `sid`.
pub fn is_event(v: &Value, sid: u64, name: &str) -> bool {
    v["type"] == 3 && v["server_id"] == sid && v["data"]["Event"] == name
}

/// True if `v` is a type-7 status `status` for server `sid`.
pub fn is_status(v: &Value, sid: u64, status: &str) -> bool {
    v["type"] == 7 && v["server_id"] == sid && v["data"]["Status"] == status
}

/// The history position (SPEC §10) of a broadcast frame of server `sid`.
pub fn position(v: &Value, sid: u64) -> Option<(String, u64)> {
    if v["server_id"] != sid {
        return None;
    }
    Some((v["epoch"].as_str()?.to_string(), v["offset"].as_u64()?))
}

/// The newest position of server `sid` among what `c` has seen.
pub fn last_position(c: &Client, sid: u64) -> (String, u64) {
    c.seen
        .iter()
        .rev()
        .find_map(|v| position(v, sid))
        .expect("a broadcast frame with epoch and offset")
}

/// The type-8 reply to a Resume.
pub fn is_resume_reply(v: &Value) -> bool {
    v["type"] == 8 && v["data"]["ProxyAction"] == "Resume"
}

/// The type 7 a resume that history no longer covers gets for server `sid`.
pub fn is_gap(v: &Value, sid: u64) -> bool {
    v["type"] == 7 && v["server_id"] == sid && v["data"]["Reason"] == "resume gap"
}

/// From the frame at `offset` on, the positions of server `sid` in `frames` run on without a
/// hole, all in `epoch`. (The statuses a session gets on joining repeat the newest position: a
/// type 7 with the same offset.)
pub fn assert_offsets_run_on(frames: &[&Value], sid: u64, epoch: &str, offset: u64) {
    let positioned: Vec<(&Value, String, u64)> = frames
        .iter()
        .filter_map(|v| position(v, sid).map(|(e, o)| (*v, e, o)))
        .collect();
    assert!(
        positioned.iter().all(|(_, e, _)| e == epoch),
        "more than one epoch"
    );
    let at = positioned
        .iter()
        .position(|(_, _, o)| *o == offset)
        .expect("resume point");
    for w in positioned[at..].windows(2) {
        let ((_, _, a), (next, _, b)) = (&w[0], &w[1]);
        let repeat = *b == *a && next["type"] == 7;
        assert!(*b == *a + 1 || repeat, "offset {a} then {b}: {next}");
    }
}

/// Reads flood events until `Seq` `count`; panics on a gap, a close or a stall. Other
/// messages (statuses) are skipped.
pub async fn read_flood(mut c: Client, count: u64, within: Duration) -> Client {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = 0;
    while last < count {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(v) = c.next_json(left).await else {
            panic!("a plain session stopped at Seq {last} of {count} (closed or stalled)");
        };
        if v["type"] != 3 || v["data"]["UserEvent"] != "Flood" {
            continue;
        }
        let seq: u64 = v["data"]["Seq"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("flood event without a numeric Seq: {v}"));
        assert_eq!(seq, last + 1, "a plain session lost events");
        last = seq;
    }
    c
}
