//! Browser tests of the dashboard (`web_root/`): Playwright (npm `playwright-core`) drives
//! Debian's chromium, headless, through `integration/browser/dashboard.mjs`.
//!
//! - `dashboard_follows_simulated_pbx`: the real binary against two simulated PBXs (no demo
//!   traffic, so every change is one the test made), with a token user. Scenarios: a call appears
//!   and disappears; a queue caller arrives and leaves; the PBX goes down (Disconnected, state
//!   marked stale) and comes back (Connected, state refreshed); amihub itself restarts (the page
//!   reconnects by itself and reloads the state); the page's own socket is cut for three seconds
//!   while calls start and end (it resumes without a snapshot, and its calls table equals a
//!   freshly loaded page's); a page with a wrong token is refused and says so.
//! - `dashboard_cut_off_on_one_cluster_node_resumes_on_another`: two cluster nodes on a real
//!   redis-server; the page loaded from node A is cut off and reconnects to node B, which
//!   resumes it (same epoch and offsets on both nodes) with exactly what it missed.
//! - `dashboard_over_tls_with_token`: the same page over HTTPS (self-signed certificate) with a
//!   token: the WebSocket must be wss:// with `?token=`, the fetches Bearer.
//! - `a_foreign_page_cannot_post_actions_with_the_users_credentials` (CSRF) and
//!   `browser_logins_work_for_argon2_and_htdigest_users_alike`: `integration/browser/hostile.mjs`
//!   against the real binary (see that script).
//! - `dashboard_state_model`: `web_root/state.js` (snapshot + live events → calls, queues,
//!   endpoints) and `web_root/quality.js` (grades, a call's worst channel) under node's test
//!   runner.
//! - `demo_dashboard_and_screenshot`: `amihub --demo`; both servers Connected, events, calls and
//!   queues, server selection, a phone-width check (390 px), and the README's screenshot
//!   `docs/dashboard.png` (1280×800; rewritten only when missing or with
//!   `AMIHUB_UPDATE_SCREENSHOT=1`, else written to `target/browser-artifacts/`).
//! - `demo_call_quality_turns_bad_and_the_endpoint_panel_shows_changes`: `amihub --demo` with a
//!   2 s RTCP interval; a call row turns from good to bad within one interval of its first bad
//!   report, the endpoint panel shows PJSIP/117's user-agent change, and the README's screenshot
//!   `integration/browser/quality.png` (same rewrite rule).
//!
//! The node script asks for what a browser cannot do with `STEP <name>` lines on its stdout; this
//! side does it and answers `ok` (or `err …`) on its stdin. Missing node, chromium or
//! node_modules are installed by `integration/browser/setup.sh`; if that fails the tests fail
//! with a message saying what is missing — they never skip.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use support::{server_toml, Amihub, SimConfig, SimPbx};

/// Longest a whole node run may take before it is killed and the test fails.
const NODE_DEADLINE: Duration = Duration::from_secs(240);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn browser_dir() -> PathBuf {
    root().join("integration").join("browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing for the browser tests, if anything.
fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    // playwright-core 1.65 needs node 20 or newer.
    let node_major = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            v.trim_start_matches('v')
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()
        });
    match node_major {
        None => missing.push("node (Debian package nodejs)".to_string()),
        Some(v) if v < 20 => missing.push(format!("node 20 or newer (found {v})")),
        Some(_) => {}
    }
    if !chromium().is_file() {
        missing.push(format!(
            "{} (Debian package chromium)",
            chromium().display()
        ));
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("integration/browser/node_modules (npm ci)".to_string());
    }
    missing
}

/// Makes sure node, chromium and playwright-core are there, running setup.sh once if not.
/// Panics — never skips — when they cannot be had.
fn preflight() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if missing().is_empty() {
            return Ok(());
        }
        eprintln!(
            "browser tests: missing {:?}; running integration/browser/setup.sh",
            missing()
        );
        let status = Command::new("bash")
            .arg(browser_dir().join("setup.sh"))
            .status();
        let still = missing();
        if still.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the browser tests need {still:?}, and integration/browser/setup.sh could not \
             install them (exit: {status:?}). Install node, npm and Debian's chromium, then run \
             `npm ci` in integration/browser."
        ))
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

/// Performs the steps the browser asks for.
trait Steps {
    async fn step(&mut self, name: &str, args: &str) -> Result<String, String>;
}

/// No steps (the demo).
struct NoSteps;

impl Steps for NoSteps {
    async fn step(&mut self, name: &str, _args: &str) -> Result<String, String> {
        Err(format!("unknown step {name}"))
    }
}

/// Runs `dashboard.mjs` with `env`, answering its steps; panics with its output if it fails.
async fn run_browser(env: &[(&str, String)], steps: &mut impl Steps) {
    run_node("dashboard.mjs", env, steps).await;
}

/// Runs `script` (in integration/browser) with `env`, answering its steps; panics with its
/// output if it fails.
async fn run_node(script: &str, env: &[(&str, String)], steps: &mut impl Steps) {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .env("CHROMIUM", chromium())
        .env("ARTIFACTS", root().join("target").join("browser-artifacts"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn node");
    let mut stdin = child.stdin.take().expect("node stdin");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("node stdout")).lines();
    let mut transcript = Vec::new();
    let deadline = tokio::time::Instant::now() + NODE_DEADLINE;
    loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "browser run exceeded {NODE_DEADLINE:?}; output so far:\n{}",
                    transcript.join("\n")
                );
            }
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => break,
        };
        eprintln!("[browser {:>5.1}s] {line}", started.elapsed().as_secs_f64());
        transcript.push(line.clone());
        if let Some(rest) = line.strip_prefix("STEP ") {
            let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
            let reply = match steps.step(name, args).await {
                Ok(text) => format!("ok {text}\n"),
                Err(e) => format!("err {}\n", e.replace('\n', " ")),
            };
            eprintln!("[browser] step {name} -> {}", reply.trim_end());
            stdin
                .write_all(reply.as_bytes())
                .await
                .expect("answer the browser step");
        }
    }
    drop(stdin);
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .expect("node did not exit")
        .expect("wait for node");
    eprintln!(
        "[browser] finished in {:.1}s: {status}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success() && transcript.iter().any(|l| l.starts_with("PASS")),
        "browser scenarios failed ({status}); failure screenshots (if any) are in \
         target/browser-artifacts. Output:\n{}",
        transcript.join("\n")
    );
}

fn sim_config(name: &str) -> SimConfig {
    SimConfig {
        name: name.into(),
        username: "admin".into(),
        secret: "secret".into(),
        demo_traffic: false,
        ..SimConfig::default()
    }
}

/// The steps of the simulated-PBX scenarios: PBX 1 down and up again on its address, amihub
/// itself down and up again on its port.
struct Rig {
    sim: SimPbx,
    sim_addr: SocketAddr,
    hub: Option<Amihub>,
    hub_addr: SocketAddr,
    config: String,
}

/// Waits until `addr` can be bound again (a stopped listener's port is free).
async fn port_free(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                drop(l);
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => return Err(format!("{addr} stays busy: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Steps for Rig {
    async fn step(&mut self, name: &str, _args: &str) -> Result<String, String> {
        match name {
            "pbx-down" => {
                self.sim.stop();
                Ok(String::new())
            }
            "pbx-up" => {
                port_free(self.sim_addr).await?;
                let sim = SimPbx::start(&self.sim_addr.to_string(), sim_config("pbx-one"))
                    .await
                    .map_err(|e| format!("restart simulator on {}: {e}", self.sim_addr))?;
                self.sim = sim;
                Ok(String::new())
            }
            "hub-down" => {
                drop(self.hub.take());
                Ok(String::new())
            }
            "hub-up" => {
                port_free(self.hub_addr).await?;
                let listen = self.hub_addr.to_string();
                let hub = Amihub::start_with(&self.config, &[("AMIHUB__HTTP__LISTEN", &listen)]);
                if hub.addr != self.hub_addr {
                    return Err(format!("amihub came back on {}, not {listen}", hub.addr));
                }
                self.hub = Some(hub);
                Ok(String::new())
            }
            other => Err(format!("unknown step {other}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_simulated_pbx() {
    preflight();
    let one = SimPbx::start("127.0.0.1:0", sim_config("pbx-one"))
        .await
        .expect("start simulator 1");
    let two = SimPbx::start("127.0.0.1:0", sim_config("pbx-two"))
        .await
        .expect("start simulator 2");
    let token = format!("browser-{:016x}", rand_u64());
    let config = format!(
        "[reconnect]\ninitial_ms = 100\nmax_ms = 1000\n\n\
         [[users]]\nname = \"browser\"\ntoken = \"{token}\"\nactions = [\"*\"]\n\n{}{}",
        server_toml(1, "pbx-one", &one, "admin", "secret", ""),
        server_toml(2, "pbx-two", &two, "admin", "secret", ""),
    );
    let hub = Amihub::start(&config);
    let url = format!("http://{}/", hub.addr);
    let mut rig = Rig {
        sim_addr: one.addr(),
        sim: one,
        hub_addr: hub.addr,
        hub: Some(hub),
        config,
    };
    run_browser(
        &[
            ("AMIHUB_URL", url),
            ("AMIHUB_TOKEN", token),
            (
                "SCENARIOS",
                "bad-token,calls,queue,resume,hub-restart,outage".to_string(),
            ),
        ],
        &mut rig,
    )
    .await;
    drop(two);
}

/// Cluster (SPEC §10/§11): the page is served by node A; its socket is cut, and when it comes
/// back it lands on node B (the node script carries the page's reconnect there, as a load
/// balancer may), which must replay exactly what the page missed from the shared positions:
/// no snapshot, and a calls table equal to a freshly loaded page's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_cut_off_on_one_cluster_node_resumes_on_another() {
    preflight();
    let redis = support::redis::Redis::start()
        .await
        .expect("redis-server (integration/test.sh installs Debian's redis-server)");
    let sim = SimPbx::start("127.0.0.1:0", sim_config("pbx-one"))
        .await
        .expect("start simulator");
    let token = format!("browser-{:016x}", rand_u64());
    let node = |id: &str| {
        format!(
            "[cluster]\nredis_url = \"{}\"\nnode_id = \"{id}\"\nlease_ms = 2000\n\n\
             [reconnect]\ninitial_ms = 100\nmax_ms = 1000\n\n\
             [[users]]\nname = \"browser\"\ntoken = \"{token}\"\nactions = [\"*\"]\n\n{}",
            redis.url(),
            server_toml(1, "pbx-one", &sim, "admin", "secret", ""),
        )
    };
    let a = Amihub::start(&node("a"));
    let b = Amihub::start(&node("b"));
    run_browser(
        &[
            ("AMIHUB_URL", format!("http://{}/", a.addr)),
            ("AMIHUB_TOKEN", token),
            ("RESUME_ON", format!("http://{}/", b.addr)),
            ("NODE_OPTIONS", "--experimental-websocket".to_string()),
            ("SCENARIOS", "resume".to_string()),
        ],
        &mut NoSteps,
    )
    .await;
}

/// A self-signed certificate for 127.0.0.1 (PEM cert, PEM key).
fn self_signed() -> (Vec<u8>, Vec<u8>) {
    let key = openssl::pkey::PKey::ec_gen("prime256v1").expect("key");
    let cert = support::pki::cert("127.0.0.1", &key, None, false);
    (
        cert.to_pem().expect("cert pem"),
        key.private_key_to_pem_pkcs8().expect("key pem"),
    )
}

/// The dashboard served over HTTPS with a token: the page must use wss:// and Bearer fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_over_tls_with_token() {
    preflight();
    let one = SimPbx::start("127.0.0.1:0", sim_config("pbx-one"))
        .await
        .expect("start simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert).expect("write cert");
    std::fs::write(&key_path, key).expect("write key");
    let token = format!("tls-{:016x}", rand_u64());
    let config = format!(
        "[[users]]\nname = \"browser\"\ntoken = \"{token}\"\nactions = [\"*\"]\n\n{}",
        server_toml(1, "pbx-one", &one, "admin", "secret", ""),
    );
    let (cert_env, key_env) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let hub = Amihub::start_with(
        &config,
        &[
            ("AMIHUB__HTTP__TLS_CERT", cert_env.as_str()),
            ("AMIHUB__HTTP__TLS_KEY", key_env.as_str()),
        ],
    );
    run_browser(
        &[
            ("AMIHUB_URL", format!("https://{}/", hub.addr)),
            ("AMIHUB_TOKEN", token),
            ("SCENARIOS", "tls".to_string()),
        ],
        &mut NoSteps,
    )
    .await;
}

/// `amihub --demo` on an ephemeral port; killed on drop.
struct Demo {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    start_demo_with(&[])
}

/// `amihub --demo` with extra environment (`AMIHUB__…` overrides).
fn start_demo_with(env: &[(&str, &str)]) -> Demo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amihub"))
        .arg("--demo")
        .envs(env.iter().copied())
        .current_dir(root())
        .env("AMIHUB__HTTP__LISTEN", "127.0.0.1:0")
        .env("AMIHUB__HTTP__WEB_ROOT", root().join("web_root"))
        .env("RUST_LOG", "info,actix_server=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn amihub --demo");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            if std::env::var("AMIHUB_TEST_LOG").is_ok() {
                eprintln!("[amihub --demo] {line}");
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => addr.parse().expect("demo listen address"),
        Err(_) => {
            let _ = child.kill();
            panic!("amihub --demo did not say where it listens within 20 s");
        }
    };
    Demo { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_dashboard_and_screenshot() {
    preflight();
    let demo = start_demo();
    // docs/dashboard.png (the README's) is written when it is missing or when
    // AMIHUB_UPDATE_SCREENSHOT is set, so that test runs leave the tracked file alone otherwise;
    // every run writes target/browser-artifacts/dashboard.png.
    let artifacts = root().join("target").join("browser-artifacts");
    let screenshot = screenshot_path(root().join("docs").join("dashboard.png"));
    let phone = artifacts.join("dashboard-phone.png");
    let env = [
        ("SCREENSHOT", screenshot.display().to_string()),
        ("PHONE_SCREENSHOT", phone.display().to_string()),
    ];
    demo_scenario(&demo, "demo", &env, &screenshot).await;
}

/// Runs `scenario` of dashboard.mjs against `demo` with `env`; it must leave a PNG at `screenshot`.
async fn demo_scenario(demo: &Demo, scenario: &str, env: &[(&str, String)], screenshot: &Path) {
    let mut all = vec![
        ("AMIHUB_URL", format!("http://{}/", demo.addr)),
        ("SCENARIOS", scenario.to_string()),
    ];
    all.extend(env.iter().cloned());
    run_browser(&all, &mut NoSteps).await;
    assert!(
        is_png(screenshot),
        "no PNG screenshot at {}",
        screenshot.display()
    );
}

/// Where a README screenshot goes: the tracked file when it is missing or
/// `AMIHUB_UPDATE_SCREENSHOT` is set, else `target/browser-artifacts/` (same file name).
fn screenshot_path(tracked: PathBuf) -> PathBuf {
    if !tracked.exists() || std::env::var_os("AMIHUB_UPDATE_SCREENSHOT").is_some() {
        return tracked;
    }
    let name = tracked.file_name().map(PathBuf::from).unwrap_or_default();
    root().join("target").join("browser-artifacts").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_call_quality_turns_bad_and_the_endpoint_panel_shows_changes() {
    preflight();
    const INTERVAL_MS: &str = "2000";
    let demo = start_demo_with(&[("AMIHUB__DEMO__RTCP_INTERVAL_MS", INTERVAL_MS)]);
    let screenshot = screenshot_path(browser_dir().join("quality.png"));
    let env = [
        ("RTCP_INTERVAL_MS", INTERVAL_MS.to_string()),
        ("QUALITY_SCREENSHOT", screenshot.display().to_string()),
    ];
    demo_scenario(&demo, "quality", &env, &screenshot).await;
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// CSRF: a page on another origin, in a browser that holds the user's Basic credentials, tries a
/// `no-cors` fetch with a text/plain Originate and a text/plain form POST (`hostile.mjs`).
/// Only the user's own same-origin JSON Ping may reach the PBX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_page_cannot_post_actions_with_the_users_credentials() {
    preflight();
    let pbx = SimPbx::start("127.0.0.1:0", sim_config("pbx-one"))
        .await
        .expect("start simulator");
    let hash = amihub::auth::hash_password("alice-pass").expect("hash");
    let hub = Amihub::start(&format!(
        "[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nactions = [\"*\"]\n\n{}",
        server_toml(
            1,
            "pbx-one",
            &pbx,
            "admin",
            "secret",
            "ping_interval_s = 3600"
        ),
    ));
    support::wait_connected_as(hub.addr, &basic("alice", "alice-pass")).await;
    let mut rx = pbx.actions();
    run_node(
        "hostile.mjs",
        &[
            ("AMIHUB_URL", format!("http://{}/", hub.addr)),
            ("AMIHUB_USER", "alice".to_string()),
            ("AMIHUB_PASS", "alice-pass".to_string()),
            ("SCENARIO", "csrf".to_string()),
        ],
        &mut NoSteps,
    )
    .await;
    let mut reached = Vec::new();
    while let Ok(p) = rx.try_recv() {
        if p.get("ActionID").is_some_and(|i| i.starts_with("amihub.")) {
            reached.push(p.get("Action").unwrap_or("?").to_string());
        }
    }
    assert_eq!(
        reached,
        vec!["Ping".to_string()],
        "the foreign page's requests reached the PBX"
    );
}

/// With an htdigest file beside argon2 users, Chromium answering amihub's own challenge logs in
/// users of either source (it picks Digest whenever Digest is offered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_logins_work_for_argon2_and_htdigest_users_alike() {
    preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let htdigest = dir.path().join("htdigest");
    let ha1 = {
        use md5::{Digest, Md5};
        let h = Md5::digest(b"dana:amiws:d4na-pass");
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    std::fs::write(&htdigest, format!("dana:amiws:{ha1}\n")).expect("write htdigest");
    let hash = amihub::auth::hash_password("argon-pass").expect("hash");
    let hub = Amihub::start(&format!(
        "auth_file = \"{}\"\nauth_domain = \"amiws\"\n\n\
         [[users]]\nname = \"ari\"\npassword_hash = \"{hash}\"\n",
        htdigest.display()
    ));
    for (user, pass) in [("ari", "argon-pass"), ("dana", "d4na-pass")] {
        run_node(
            "hostile.mjs",
            &[
                ("AMIHUB_URL", format!("http://{}/", hub.addr)),
                ("AMIHUB_USER", user.to_string()),
                ("AMIHUB_PASS", pass.to_string()),
                ("SCENARIO", "login".to_string()),
            ],
            &mut NoSteps,
        )
        .await;
    }
}

/// The dashboard's state model (`web_root/state.js`) under node's test runner.
#[test]
fn dashboard_state_model() {
    preflight();
    let out = Command::new("node")
        .arg("--test")
        .arg(browser_dir().join("state.test.mjs"))
        .arg(browser_dir().join("quality.test.mjs"))
        .current_dir(root())
        .output()
        .expect("run node --test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test state.test.mjs failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = text
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed > 0, "node --test ran no test:\n{text}");
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.len() > 1000 && b.starts_with(b"\x89PNG"))
        .unwrap_or(false)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
