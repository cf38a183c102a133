//! Security scenarios over real sockets (SPEC §6–7): authentication (tokens, argon2 passwords,
//! htdigest Digest), the loopback-only mode without users, Origin checks, per-user rights
//! (actions, servers, events), limits (message size, rate, sessions), HTTPS/WSS, secrets kept
//! out of logs, and SIGHUP revoking credentials. Every refusal is checked on the wire, and the
//! simulated PBX is asked what reached it.

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amihub::ami::Packet;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::X509;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const OPS_TOKEN: &str = "ops-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

/// One server entry without keepalive pings in the way (`Ping`s seen by the PBX are ours).
fn quiet_server(id: u32, name: &str, sim: &SimPbx) -> String {
    server_toml(id, name, sim, "admin", "secret", "ping_interval_s = 3600")
}

fn user_toml(name: &str, token: &str, extra: &str) -> String {
    format!("[[users]]\nname = \"{name}\"\ntoken = \"{token}\"\n{extra}\n")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    h.update(parts.join(":").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// An HTTP response as read off the socket.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    /// Every value of header `name` (case-insensitive).
    fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

fn parse_response(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((text.clone(), String::new()));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
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
    } else {
        body
    };
    Resp { status, head, body }
}

/// One HTTP/1.1 request on `stream` (plain or TLS); reads until the server closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write http");
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf))
        .await
        .expect("http timeout")
        .expect("read http");
    parse_response(&buf)
}

/// A plain HTTP request to `addr`, returning status, headers and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    exchange(&mut s, addr, method, path, headers, body).await
}

/// `GET path` with one `Authorization` value (or none).
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Resp {
    match auth {
        Some(a) => http(addr, "GET", path, &[("Authorization", a)], "").await,
        None => http(addr, "GET", path, &[], "").await,
    }
}

/// A WebSocket upgrade the server refused.
#[derive(Debug)]
struct Refused {
    status: u16,
    www_authenticate: Vec<String>,
    body: String,
}

/// Opens a WebSocket with extra request headers; `Err` carries the HTTP refusal.
async fn ws_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, Refused> {
    use tokio_tungstenite::tungstenite::Error;
    let mut req = url.into_client_request().expect("ws request");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    let res = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .expect("ws connect timeout");
    match res {
        Ok((ws, _)) => Ok(Client {
            ws,
            seen: Vec::new(),
        }),
        Err(Error::Http(resp)) => Err(Refused {
            status: resp.status().as_u16(),
            www_authenticate: resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect(),
            body: resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default(),
        }),
        Err(e) => panic!("ws connect {url}: unexpected error {e}"),
    }
}

async fn ws_ok(url: &str, headers: &[(&str, &str)]) -> Client {
    match ws_with(url, headers).await {
        Ok(c) => c,
        Err(r) => panic!("WebSocket {url} refused: {r:?}"),
    }
}

async fn ws_refused(url: &str, headers: &[(&str, &str)]) -> Refused {
    match ws_with(url, headers).await {
        Ok(_) => panic!("WebSocket {url} with {headers:?} was accepted"),
        Err(r) => r,
    }
}

/// A type-8 error from amihub whose message contains `text`.
fn is_error(v: &Value, text: &str) -> bool {
    v["type"] == 8
        && v["data"]["Response"] == "Error"
        && v["data"]["Message"]
            .as_str()
            .is_some_and(|m| m.contains(text))
}

/// The response (type 4/5) to our action `id`.
fn is_response(v: &Value, id: &str) -> bool {
    (v["type"] == 4 || v["type"] == 5) && v["data"]["ActionID"] == id
}

/// Waits until the client has seen a `Connected` status for every server in `ids`, in any order.
async fn wait_connected(c: &mut Client, ids: &[u64]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = |id: &u64| c.seen.iter().any(|v| is_status(v, *id, "Connected"));
        if ids.iter().all(seen) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if c.next_json(left).await.is_none() {
            panic!("servers {ids:?} never all Connected; seen: {:#?}", c.seen);
        }
    }
}

/// Sends a Ping and waits for its Success: the session is alive and routing.
async fn ping_works(c: &mut Client, id: &str) {
    c.send_json(json!({"Action":"Ping","ActionID":id,"AMIServerID":1}))
        .await;
    let r = c.wait_for("Ping response", |v| is_response(v, id)).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
}

/// Everything the PBX received since `rx` was subscribed (that is already queued).
fn drain(rx: &mut broadcast::Receiver<Packet>) -> Vec<Packet> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(p) => out.push(p),
            Err(broadcast::error::TryRecvError::Lagged(n)) => panic!("lost {n} actions"),
            Err(_) => return out,
        }
    }
}

/// Actions named `name` (case-insensitive) that a WebSocket/HTTP client caused.
fn client_actions<'a>(seen: &'a [Packet], name: &str) -> Vec<&'a Packet> {
    seen.iter()
        .filter(|p| {
            p.get("Action")
                .is_some_and(|a| a.eq_ignore_ascii_case(name))
        })
        .filter(|p| p.get("ActionID").is_some_and(|i| i.starts_with("amihub.")))
        .collect()
}

fn action_names(seen: &[Packet]) -> Vec<String> {
    seen.iter()
        .map(|p| p.get("Action").unwrap_or("?").to_string())
        .collect()
}

async fn wait_metric(addr: SocketAddr, name: &str, auth: Option<&str>, want: u64) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    wait_metric_at(addr, name, &headers, |n| n == want).await;
}

/// Polls `cond` every 20 ms until it holds or `PATIENCE` runs out.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `amihub hash-password` with `password` on stdin.
fn hash_password_cli(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amihub"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hash-password");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write password");
    let out = child.wait_with_output().expect("hash-password");
    assert!(out.status.success(), "hash-password failed: {out:?}");
    let hash = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(hash.starts_with("$argon2"), "{hash}");
    assert!(
        !hash.contains(password),
        "the hash must not contain the password"
    );
    hash
}

/// The parameters of a `Digest …` challenge.
fn digest_params(challenge: &str) -> std::collections::HashMap<String, String> {
    let rest = challenge
        .strip_prefix("Digest ")
        .expect("a Digest challenge");
    let mut out = std::collections::HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.split_once('=') {
            out.insert(
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            );
        }
    }
    out
}

/// An `Authorization: Digest …` answer (qop=auth) to `challenge` for `method uri`.
fn digest_answer(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let p = digest_params(challenge);
    let (realm, nonce) = (&p["realm"], &p["nonce"]);
    assert_eq!(
        p.get("qop").map(String::as_str),
        Some("auth"),
        "{challenge}"
    );
    let ha1 = md5_hex(&[user, realm, password]);
    let ha2 = md5_hex(&[method, uri]);
    let nc = format!("{nc:08x}");
    let cnonce = "0a4f113b";
    let response = md5_hex(&[&ha1, nonce, &nc, cnonce, "auth", &ha2]);
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\""
    )
}

/// The Digest challenge of a 401.
fn digest_challenge(r: &Resp) -> String {
    assert_eq!(r.status, 401, "{r:?}");
    r.headers("WWW-Authenticate")
        .into_iter()
        .find(|c| c.starts_with("Digest "))
        .unwrap_or_else(|| panic!("no Digest challenge in {}", r.head))
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_credentials_protected_routes_answer_401_with_challenges() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}{}",
        quiet_server(1, "pbx1", &pbx),
        user_toml("ops", OPS_TOKEN, "")
    ));
    let mut rx = pbx.actions();
    for path in ["/api/v1/servers", "/metrics"] {
        let r = get(hub.addr, path, None).await;
        assert_eq!(r.status, 401, "GET {path}: {r:?}");
        let challenges = r.headers("WWW-Authenticate");
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic ")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer ")),
            "{challenges:?}"
        );
        assert!(!r.body.contains("pbx1"), "nothing about servers leaks");
    }
    let r = http(
        hub.addr,
        "POST",
        "/api/v1/servers/1/actions",
        &[("Content-Type", "application/json")],
        r#"{"Action":"Ping"}"#,
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    for path in ["/ws", "/"] {
        let refused = ws_refused(&hub.ws_url(path), &[]).await;
        assert_eq!(refused.status, 401, "upgrade on {path}: {refused:?}");
        assert!(
            refused
                .www_authenticate
                .iter()
                .any(|c| c.starts_with("Bearer ")),
            "{refused:?}"
        );
    }
    // Public: the dashboard and the probes.
    let r = get(hub.addr, "/", None).await;
    assert_eq!(r.status, 200, "static / stays public");
    assert!(r.body.to_ascii_lowercase().contains("<html"), "{}", r.body);
    let r = get(hub.addr, "/livez", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    eventually("refused GET /api/v1/servers", || {
        hub.log_contains("refused GET /api/v1/servers")
    })
    .await;
    let seen = drain(&mut rx);
    assert!(
        client_actions(&seen, "Ping").is_empty(),
        "nothing reached the PBX: {:?}",
        action_names(&seen)
    );
}

#[tokio::test]
async fn percent_encoded_paths_do_not_bypass_the_gate() {
    // The gate decides "protected" from the raw path; the router matches the decoded one.
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}{}",
        quiet_server(1, "pbx1", &pbx),
        user_toml("ops", OPS_TOKEN, "")
    ));
    let mut leaks = Vec::new();
    for path in [
        "/%61pi/v1/servers",
        "/%61pi/v1/servers/1/state",
        "/api%2Fv1/servers",
        "/%6detrics",
        "/metric%73",
        "/%77s",
    ] {
        let r = get(hub.addr, path, None).await;
        if r.status < 400 || r.body.contains("pbx1") || r.body.contains("amihub_") {
            leaks.push(format!("GET {path} → {} {}", r.status, r.body));
        }
    }
    assert!(
        leaks.is_empty(),
        "protected routes answered without credentials:\n{}",
        leaks.join("\n")
    );
}

#[tokio::test]
async fn tokens_wrong_are_refused_right_ones_work_by_header_and_query() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}{}",
        quiet_server(1, "pbx1", &pbx),
        user_toml("ops", OPS_TOKEN, "")
    ));
    let wrong = "ops-token-0123456789abcdeX";
    // Wrong token: header, query, one character short, other scheme.
    for auth in [
        bearer(wrong),
        bearer(&OPS_TOKEN[..OPS_TOKEN.len() - 1]),
        bearer(""),
        format!("Token {OPS_TOKEN}"),
    ] {
        let r = get(hub.addr, "/api/v1/servers", Some(&auth)).await;
        assert_eq!(r.status, 401, "{auth}: {r:?}");
        assert!(!r.headers("WWW-Authenticate").is_empty());
    }
    let r = get(hub.addr, &format!("/api/v1/servers?token={wrong}"), None).await;
    assert_eq!(r.status, 401, "{r:?}");
    let refused = ws_refused(&hub.ws_url(&format!("/ws?token={wrong}")), &[]).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    let refused = ws_refused(&hub.ws_url("/ws"), &[("Authorization", &bearer(wrong))]).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    // A wrong query token is not rescued by a right header.
    let r = get(
        hub.addr,
        &format!("/api/v1/servers?token={wrong}"),
        Some(&bearer(OPS_TOKEN)),
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");

    // Right token.
    let r = get(hub.addr, "/api/v1/servers", Some(&bearer(OPS_TOKEN))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["servers"][0]["id"], 1);
    let r = get(hub.addr, &format!("/metrics?token={OPS_TOKEN}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut by_query = ws_ok(&hub.ws_url(&format!("/ws?token={OPS_TOKEN}")), &[]).await;
    by_query
        .wait_for("Connected via ?token=", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut by_query, "q1").await;
    let mut by_header = ws_ok(&hub.ws_url("/ws"), &[("Authorization", &bearer(OPS_TOKEN))]).await;
    by_header
        .wait_for("Connected via Bearer", |v| is_status(v, 1, "Connected"))
        .await;
    // The amiws upgrade on `/` takes the same credentials.
    let mut on_root = ws_ok(&hub.ws_url(&format!("/?token={OPS_TOKEN}")), &[]).await;
    on_root
        .wait_for("Connected on /", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut on_root, "r1").await;
}

#[tokio::test]
async fn basic_passwords_are_checked_against_argon2_hashes() {
    let pbx = sim("pbx1").await;
    let hash = hash_password_cli("correct horse battery");
    let hub = Amihub::start(&format!(
        "{}[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n",
        quiet_server(1, "pbx1", &pbx)
    ));
    for (user, pw) in [
        ("alice", "correct horse batterY"),
        ("alice", ""),
        ("bob", "correct horse battery"),
        ("alice", "correct horse battery "),
    ] {
        let r = get(hub.addr, "/api/v1/servers", Some(&basic(user, pw))).await;
        assert_eq!(r.status, 401, "{user}:{pw:?}: {r:?}");
    }
    let r = get(hub.addr, "/api/v1/servers", Some("Basic !!notbase64")).await;
    assert_eq!(r.status, 401, "{r:?}");
    let refused = ws_refused(
        &hub.ws_url("/ws"),
        &[("Authorization", &basic("alice", "nope"))],
    )
    .await;
    assert_eq!(refused.status, 401);

    let good = basic("alice", "correct horse battery");
    let r = get(hub.addr, "/api/v1/servers", Some(&good)).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Twice (the second check is served from the verified cache) and a wrong one after it.
    assert_eq!(
        get(hub.addr, "/api/v1/servers", Some(&good)).await.status,
        200
    );
    assert_eq!(
        get(
            hub.addr,
            "/api/v1/servers",
            Some(&basic("alice", "correct horse batteryy"))
        )
        .await
        .status,
        401
    );
    let mut c = ws_ok(&hub.ws_url("/ws"), &[("Authorization", &good)]).await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut c, "b1").await;
}

fn htdigest_config(dir: &Path, lines: &str, realm: &str) -> String {
    let file = dir.join("htdigest");
    std::fs::write(&file, lines).expect("write htdigest");
    format!(
        "auth_file = \"{}\"\nauth_domain = \"{realm}\"\n",
        file.display()
    )
}

#[tokio::test]
async fn htdigest_users_complete_a_real_digest_exchange() {
    let pbx = sim("pbx1").await;
    let dir = tempfile::tempdir().expect("tmp");
    let realm = "amiws";
    let lines = format!(
        "dana:{realm}:{}\neve:elsewhere:{}\n",
        md5_hex(&["dana", realm, "d4na-pass"]),
        md5_hex(&["eve", "elsewhere", "eve-pass"])
    );
    let hub = Amihub::start(&format!(
        "{}{}",
        htdigest_config(dir.path(), &lines, realm),
        quiet_server(1, "pbx1", &pbx)
    ));
    let path = "/api/v1/servers";
    let r = get(hub.addr, path, None).await;
    let challenge = digest_challenge(&r);
    let p = digest_params(&challenge);
    assert_eq!(p["realm"], realm);
    assert!(!p["nonce"].is_empty());

    let ok = digest_answer(&challenge, "dana", "d4na-pass", "GET", path, 1);
    let r = get(hub.addr, path, Some(&ok)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["servers"][0]["id"], 1);

    // Wrong password, another realm's user, a forged nonce, the answer for another method.
    let wrong = digest_answer(&challenge, "dana", "d4na-pasS", "GET", path, 2);
    assert_eq!(get(hub.addr, path, Some(&wrong)).await.status, 401);
    let other_realm = digest_answer(&challenge, "eve", "eve-pass", "GET", path, 1);
    assert_eq!(get(hub.addr, path, Some(&other_realm)).await.status, 401);
    let forged = ok.replace(&p["nonce"], "5f00aa00-0123456789abcdef");
    assert_eq!(get(hub.addr, path, Some(&forged)).await.status, 401);
    let r = http(
        hub.addr,
        "POST",
        "/api/v1/servers/1/actions",
        &[("Authorization", &ok), ("Content-Type", "application/json")],
        r#"{"Action":"Ping"}"#,
    )
    .await;
    assert_eq!(r.status, 401, "a GET answer is not a POST answer: {r:?}");

    // The WebSocket upgrade takes Digest too; htdigest users get the read-only default.
    let ws_auth = digest_answer(&challenge, "dana", "d4na-pass", "GET", "/ws", 3);
    let mut c = ws_ok(&hub.ws_url("/ws"), &[("Authorization", &ws_auth)]).await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut c, "d1").await;
    c.send_json(json!({"Action":"Originate","ActionID":"o1","Channel":"Local/1@x"}))
        .await;
    c.wait_for("refusal", |v| is_error(v, "not permitted"))
        .await;
    let wrong_ws = digest_answer(&challenge, "dana", "nope", "GET", "/ws", 4);
    let refused = ws_refused(&hub.ws_url("/ws"), &[("Authorization", &wrong_ws)]).await;
    assert_eq!(refused.status, 401);
    // htdigest users may also use Basic with the same password.
    assert_eq!(
        get(hub.addr, path, Some(&basic("dana", "d4na-pass")))
            .await
            .status,
        200
    );
    assert_eq!(
        get(hub.addr, path, Some(&basic("dana", "wrong")))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn digest_answers_are_bound_to_the_request_uri() {
    // RFC 7616 §3.4.6: the server checks that `uri` names the request target; an answer
    // captured for a harmless URI must not open the API.
    let dir = tempfile::tempdir().expect("tmp");
    let lines = format!("dana:amiws:{}\n", md5_hex(&["dana", "amiws", "d4na-pass"]));
    let hub = Amihub::start(&htdigest_config(dir.path(), &lines, "amiws"));
    let challenge = digest_challenge(&get(hub.addr, "/api/v1/servers", None).await);
    let for_livez = digest_answer(&challenge, "dana", "d4na-pass", "GET", "/livez", 1);
    let r = get(hub.addr, "/api/v1/servers", Some(&for_livez)).await;
    assert_eq!(
        r.status, 401,
        "a Digest answer computed for uri=/livez was accepted on /api/v1/servers"
    );
}

// ---------------------------------------------------------------------------------------------
// No users: loopback only
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_users_only_loopback_clients_are_served() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&quiet_server(1, "pbx1", &pbx));
    eventually("the start says only loopback clients are served", || {
        hub.log_contains("only loopback clients are served")
    })
    .await;
    // A loopback client needs no credentials.
    let r = get(hub.addr, "/api/v1/servers", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut c, "l1").await;
    // A local reverse proxy forwarding a loopback client is still local.
    let r = http(
        hub.addr,
        "GET",
        "/api/v1/servers",
        &[("X-Forwarded-For", "127.0.0.1")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    let mut rx = pbx.actions();
    // Remote clients behind a local reverse proxy are refused everywhere, credentials or not.
    let remote: [(&str, &str); 6] = [
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Forwarded-For", "127.0.0.1, 203.0.113.5"),
        ("X-Real-IP", "203.0.113.5"),
        ("Forwarded", "for=203.0.113.5;proto=http"),
        ("Forwarded", "for=\"[2001:db8::1]:4711\""),
        ("Forwarded", "for=unknown"),
    ];
    for (k, v) in remote {
        for (method, path, body) in [
            ("GET", "/api/v1/servers", ""),
            ("GET", "/metrics", ""),
            ("GET", "/", ""),
            ("GET", "/livez", ""),
            ("POST", "/api/v1/servers/1/actions", r#"{"Action":"Ping"}"#),
        ] {
            let r = http(hub.addr, method, path, &[(k, v)], body).await;
            assert_eq!(r.status, 403, "{method} {path} with {k}: {v} → {r:?}");
            assert!(
                r.body.contains("only loopback clients are served"),
                "{}",
                r.body
            );
        }
        let refused = ws_refused(&hub.ws_url("/ws"), &[(k, v)]).await;
        assert_eq!(refused.status, 403, "{k}: {v} → {refused:?}");
        let refused = ws_refused(&hub.ws_url("/"), &[(k, v), ("Authorization", "Bearer x")]).await;
        assert_eq!(refused.status, 403, "{k}: {v} → {refused:?}");
    }
    eventually(
        "no users are configured: only loopback clients are served",
        || hub.log_contains("no users are configured: only loopback clients are served"),
    )
    .await;
    // The earlier session is untouched; none of the refused requests reached the PBX.
    ping_works(&mut c, "l2").await;
    let seen = drain(&mut rx);
    assert_eq!(
        client_actions(&seen, "Ping").len(),
        1,
        "{:?}",
        action_names(&seen)
    );
}

// ---------------------------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn foreign_origins_are_refused_same_origin_and_allowed_ones_accepted() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start_with(
        &format!(
            "{}{}",
            quiet_server(1, "pbx1", &pbx),
            user_toml("ops", OPS_TOKEN, "")
        ),
        &[(
            "AMIHUB__HTTP__ALLOWED_ORIGINS",
            "https://ok.example,https://also.example",
        )],
    );
    let auth = bearer(OPS_TOKEN);
    let auth = ("Authorization", auth.as_str());
    for origin in [
        "https://evil.example".to_string(),
        "null".to_string(),
        "https://ok.example.evil.example".to_string(),
        format!("http://{}.evil.example", hub.addr),
        format!("http://evil.example/{}", hub.addr),
    ] {
        for path in ["/ws", "/"] {
            let refused = ws_refused(&hub.ws_url(path), &[auth, ("Origin", &origin)]).await;
            assert_eq!(
                refused.status, 403,
                "Origin {origin} on {path}: {refused:?}"
            );
            assert!(refused.body.contains("origin not allowed"), "{refused:?}");
        }
    }
    wait_metric(
        hub.addr,
        "amihub_ws_refused_sessions_total",
        Some(auth.1),
        10,
    )
    .await;
    let same = format!("http://{}", hub.addr);
    for origin in [same.as_str(), "https://ok.example", "https://also.example"] {
        let mut c = ws_ok(&hub.ws_url("/ws"), &[auth, ("Origin", origin)]).await;
        c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
            .await;
        ping_works(&mut c, "o1").await;
    }
    // An allowed origin does not stand in for credentials.
    let refused = ws_refused(&hub.ws_url("/ws"), &[("Origin", "https://ok.example")]).await;
    assert_eq!(refused.status, 401, "{refused:?}");
}

// ---------------------------------------------------------------------------------------------
// Rights
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_viewer_cannot_send_actions_with_side_effects() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}{}{}",
        quiet_server(1, "pbx1", &pbx),
        user_toml("viewer", VIEWER_TOKEN, ""),
        user_toml("ops", OPS_TOKEN, "actions = [\"*\"]\nadmin = true")
    ));
    let ops = bearer(OPS_TOKEN);
    let mut c = ws_ok(&hub.ws_url(&format!("/ws?token={VIEWER_TOKEN}")), &[]).await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut rx = pbx.actions();
    let forbidden = [
        json!({"Action":"Originate","ActionID":"x1","AMIServerID":1,"Channel":"Local/100@demo","Exten":"100","Context":"demo","Priority":1}),
        json!({"Action":"Command","ActionID":"x2","AMIServerID":1,"Command":"core restart now"}),
        json!({"Action":"setvar","ActionID":"x3","Variable":"X","Value":"1"}),
    ];
    for (i, a) in forbidden.iter().enumerate() {
        c.send_json(a.clone()).await;
        let id = format!("x{}", i + 1);
        let v = c
            .wait_for("refusal", |v| is_error(v, "not permitted"))
            .await;
        assert_eq!(v["data"]["ActionID"], id.as_str(), "{v}");
        assert!(
            v["data"]["Message"]
                .as_str()
                .unwrap_or("")
                .contains("viewer"),
            "{v}"
        );
    }
    // Admin-only ProxyActions are refused too; the server list is unchanged.
    c.send_json(json!({"ProxyAction":"AddServer","Server":{"id":9,"name":"rogue","host":"127.0.0.1","port":1,"username":"u","secret":"s"}}))
        .await;
    c.wait_for("admin refusal", |v| is_error(v, "requires an admin user"))
        .await;
    // The session lives on and read-only actions still work.
    ping_works(&mut c, "p1").await;
    c.send_json(json!({"Action":"CoreStatus","ActionID":"cs1","AMIServerID":1}))
        .await;
    c.wait_for("CoreStatus", |v| is_response(v, "cs1")).await;

    // Over HTTP: 403 for the viewer, documented codes for the rest.
    let viewer = bearer(VIEWER_TOKEN);
    for body in [
        r#"{"Action":"Originate","Channel":"Local/100@demo","Exten":"100"}"#,
        r#"{"Action":"COMMAND","Command":"core stop now"}"#,
    ] {
        let r = http(
            hub.addr,
            "POST",
            "/api/v1/servers/1/actions",
            &[
                ("Authorization", &viewer),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 403, "{body}: {r:?}");
        assert!(r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("not permitted"));
    }
    let post = |auth: String, path: &'static str, body: &'static str| {
        let addr = hub.addr;
        async move {
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ];
            http(addr, "POST", path, &headers, body).await
        }
    };
    let r = post(
        viewer.clone(),
        "/api/v1/servers/1/actions",
        r#"{"Action":"Ping"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["response"]["Response"], "Success");
    let r = post(viewer.clone(), "/api/v1/servers/1/actions", "{not json").await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = post(
        viewer.clone(),
        "/api/v1/servers/1/actions",
        r#"{"Action":"Login","Username":"admin","Secret":"secret"}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = post(
        viewer.clone(),
        "/api/v1/servers/9/actions",
        r#"{"Action":"Ping"}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = post(
        bearer("viewer-token-0123456789abcdeX"),
        "/api/v1/servers/1/actions",
        r#"{"Action":"Ping"}"#,
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");

    // Nothing forbidden reached the PBX: only the two Pings and the CoreStatus.
    let seen = drain(&mut rx);
    let names = action_names(&seen);
    for bad in ["Originate", "Command", "Setvar", "Login"] {
        assert!(
            !names.iter().any(|n| n.eq_ignore_ascii_case(bad)),
            "{bad} reached the PBX: {names:?}"
        );
    }
    assert_eq!(client_actions(&seen, "Ping").len(), 2, "{names:?}");
    assert_eq!(client_actions(&seen, "CoreStatus").len(), 1, "{names:?}");
    // 3 over WebSocket + AddServer + 2 over HTTP.
    wait_metric(hub.addr, "amihub_actions_refused_total", Some(&ops), 6).await;
    // /metrics needs credentials, and any user's do.
    assert_eq!(get(hub.addr, "/metrics", Some(&viewer)).await.status, 200);
    let r = get(hub.addr, "/api/v1/servers", Some(&ops)).await;
    assert_eq!(r.json()["servers"].as_array().map(Vec::len), Some(1));
    eventually("refused action Originate (not permitted)", || {
        hub.log_contains("refused action Originate (not permitted)")
    })
    .await;
}

#[tokio::test]
async fn crlf_in_keys_or_values_cannot_smuggle_a_forbidden_action() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}{}",
        quiet_server(1, "pbx1", &pbx),
        user_toml("viewer", VIEWER_TOKEN, "")
    ));
    let mut c = ws_ok(&hub.ws_url(&format!("/ws?token={VIEWER_TOKEN}")), &[]).await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut rx = pbx.actions();
    let smuggle = "1\r\n\r\nAction: Originate\r\nChannel: Local/100@demo\r\nExten: 100";
    let attempts = [
        json!({"Action":"Ping","ActionID":"s1","X":smuggle}),
        json!({"Action":"Ping","ActionID":"s2","X\r\n\r\nAction: Originate\r\nY":"1"}),
        json!({"Action":"Ping\r\n\r\nAction: Originate","ActionID":"s3"}),
        json!({"Action":"Ping","ActionID":"s4","Variable":["a=1", smuggle]}),
        json!({"Action":"Ping","ActionID":"s5\r\n\r\nAction: Originate"}),
        json!({"Action":"Ping","ActionID":"s6","X":"1\nAction: Originate"}),
        json!({"Action":"Ping","ActionID":"s7","X":"1\rAction: Originate"}),
        json!({"Action":"Ping","ActionID":"s8","Action: Originate":"x"}),
    ];
    for a in &attempts {
        c.send_json(a.clone()).await;
        let v = c
            .wait_for("a refusal", |v| {
                v["type"] == 8 && v["data"]["Response"] == "Error"
            })
            .await;
        let m = v["data"]["Message"].as_str().unwrap_or("");
        assert!(
            m.contains("CR or LF is not allowed") || m.contains("invalid header name"),
            "{a} → {v}"
        );
    }
    ping_works(&mut c, "clean").await;
    let r = http(
        hub.addr,
        "POST",
        "/api/v1/servers/1/actions",
        &[
            ("Authorization", &bearer(VIEWER_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        &json!({"Action":"Ping","X":smuggle}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let seen = drain(&mut rx);
    let names = action_names(&seen);
    assert!(
        !names
            .iter()
            .any(|n| n.to_ascii_lowercase().contains("originate")),
        "{names:?}"
    );
    assert!(
        seen.iter().all(|p| p
            .headers()
            .all(|(k, v)| !k.contains("Originate") && !v.contains("Originate"))),
        "a smuggled header reached the PBX"
    );
    assert_eq!(client_actions(&seen, "Ping").len(), 1, "{names:?}");
}

#[tokio::test]
async fn a_user_restricted_to_one_server_never_sees_or_reaches_the_other() {
    let pbx1 = sim("pbx1").await;
    let pbx2 = sim("pbx2").await;
    let hub = Amihub::start(&format!(
        "{}{}{}{}",
        quiet_server(1, "pbx1", &pbx1),
        quiet_server(2, "pbx2", &pbx2),
        user_toml("east", VIEWER_TOKEN, "servers = [\"1\"]"),
        user_toml("ops", OPS_TOKEN, "")
    ));
    let mut all = ws_ok(&hub.ws_url(&format!("/ws?token={OPS_TOKEN}")), &[]).await;
    wait_connected(&mut all, &[1, 2]).await;
    let mut east = ws_ok(&hub.ws_url(&format!("/ws?token={VIEWER_TOKEN}")), &[]).await;
    east.wait_for("1 Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut rx1 = pbx1.actions();
    let mut rx2 = pbx2.actions();

    // Acting on server 2: refused, nothing reaches pbx2.
    east.send_json(json!({"Action":"Ping","AMIServerID":2,"ActionID":"to2"}))
        .await;
    let v = east
        .wait_for("refusal", |v| is_error(v, "not permitted"))
        .await;
    assert_eq!(v["data"]["ActionID"], "to2");
    // Without AMIServerID the action goes only to the servers the user may act on.
    east.send_json(json!({"Action":"Ping","ActionID":"any"}))
        .await;
    let r = east.wait_for("Ping reply", |v| is_response(v, "any")).await;
    assert_eq!(r["server_id"], 1, "{r}");
    ping_works(&mut east, "to1").await;

    // Events and statuses of server 2 stay invisible, even when asked for by Subscribe.
    pbx2.emit(&[("Event", "SecretOf2"), ("Channel", "PJSIP/200-1")]);
    all.wait_for("SecretOf2", |v| is_event(v, 2, "SecretOf2"))
        .await;
    pbx1.emit(&[("Event", "MarkerOf1")]);
    east.wait_for("MarkerOf1", |v| is_event(v, 1, "MarkerOf1"))
        .await;
    east.send_json(json!({"ProxyAction":"Subscribe","Servers":["1","2","pbx2"]}))
        .await;
    east.wait_for("Subscribe ok", |v| {
        v["type"] == 8 && v["data"]["ProxyAction"] == "Subscribe"
    })
    .await;
    pbx2.kill_connections();
    all.wait_for("2 Disconnected", |v| is_status(v, 2, "Disconnected"))
        .await;
    all.wait_for("2 Connected again", |v| is_status(v, 2, "Connected"))
        .await;
    pbx2.emit(&[("Event", "SecretOf2b")]);
    all.wait_for("SecretOf2b", |v| is_event(v, 2, "SecretOf2b"))
        .await;
    pbx1.emit(&[("Event", "MarkerOf1b")]);
    east.wait_for("MarkerOf1b", |v| is_event(v, 1, "MarkerOf1b"))
        .await;
    east.send_json(json!({"ProxyAction":"ListServers"})).await;
    let list = east
        .wait_for("ListServers", |v| {
            v["type"] == 8 && v["data"]["ProxyAction"] == "ListServers"
        })
        .await;
    let ids: Vec<&Value> = list["data"]["Servers"]
        .as_array()
        .map(|a| a.iter().map(|s| &s["id"]).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![&json!(1)], "{list}");
    let leaked: Vec<&Value> = east
        .seen
        .iter()
        .filter(|v| v["server_id"] == 2 || v.to_string().contains("pbx2"))
        .collect();
    assert!(leaked.is_empty(), "server 2 leaked to east: {leaked:#?}");

    // HTTP: the list shows server 1 only; acting on server 2 is 403.
    let east_auth = bearer(VIEWER_TOKEN);
    let r = get(hub.addr, "/api/v1/servers", Some(&east_auth)).await;
    assert_eq!(r.status, 200);
    let ids: Vec<Value> = r.json()["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(1)], "{}", r.body);
    let r = http(
        hub.addr,
        "POST",
        "/api/v1/servers/2/actions",
        &[
            ("Authorization", &east_auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"Action":"Ping"}"#,
    )
    .await;
    assert_eq!(
        r.status, 404,
        "a hidden server answers like an unknown one: {r:?}"
    );
    let r = http(
        hub.addr,
        "POST",
        "/api/v1/servers/1/actions",
        &[
            ("Authorization", &east_auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"Action":"Ping"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(hub.addr, "/api/v1/servers", Some(&bearer(OPS_TOKEN))).await;
    assert_eq!(r.json()["servers"].as_array().map(Vec::len), Some(2));

    let seen2 = drain(&mut rx2);
    assert!(
        client_actions(&seen2, "Ping").is_empty(),
        "east reached pbx2: {:?}",
        action_names(&seen2)
    );
    let seen1 = drain(&mut rx1);
    assert_eq!(
        client_actions(&seen1, "Ping").len(),
        3,
        "{:?}",
        action_names(&seen1)
    );
}

#[tokio::test]
async fn an_events_allowlist_delivers_only_those_events() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}{}",
        quiet_server(1, "pbx1", &pbx),
        user_toml("hangups", VIEWER_TOKEN, "events = [\"Hangup\"]")
    ));
    let mut c = ws_ok(&hub.ws_url(&format!("/ws?token={VIEWER_TOKEN}")), &[]).await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.emit(&[("Event", "Newchannel"), ("Uniqueid", "1.1")]);
    pbx.emit(&[("Event", "Hangup"), ("Uniqueid", "1.1")]);
    pbx.emit(&[("Event", "newchannel"), ("Uniqueid", "1.2")]);
    pbx.emit(&[("Event", "VarSet"), ("Uniqueid", "1.2")]);
    pbx.emit(&[("Event", "HANGUP"), ("Uniqueid", "marker")]);
    c.wait_for("marker Hangup", |v| {
        v["type"] == 3 && v["data"]["Uniqueid"] == "marker"
    })
    .await;
    let events: Vec<(String, String)> = c
        .seen
        .iter()
        .filter(|v| v["type"] == 3)
        .map(|v| {
            (
                v["data"]["Event"].as_str().unwrap_or("").to_string(),
                v["data"]["Uniqueid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("Hangup".to_string(), "1.1".to_string()),
            ("HANGUP".to_string(), "marker".to_string())
        ]
    );
    // Statuses are not events: they still arrive.
    assert!(c.seen.iter().any(|v| is_status(v, 1, "Connected")));
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_client_messages_are_refused_and_far_oversized_ones_close_1009() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[limits]\nmax_client_message_bytes = 1024\n",
        quiet_server(1, "pbx1", &pbx)
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut rx = pbx.actions();
    let big = |n: usize| {
        let mut v = json!({"Action":"UserEvent","UserEvent":"Big","ActionID":"big","Pad":""});
        let pad = n - v.to_string().len();
        v["Pad"] = json!("x".repeat(pad));
        let s = v.to_string();
        assert_eq!(s.len(), n);
        s
    };
    // At the limit: accepted.
    c.send_text(&big(1024)).await;
    c.wait_for("UserEvent at the limit", |v| is_response(v, "big"))
        .await;
    // Over the limit: a type-8 error, the session lives on.
    c.send_text(&big(1025)).await;
    c.wait_for("size refusal", |v| {
        is_error(v, "exceeds max_client_message_bytes")
    })
    .await;
    c.send_text(&big(4000)).await;
    c.wait_for("size refusal", |v| {
        is_error(v, "exceeds max_client_message_bytes (1024)")
    })
    .await;
    ping_works(&mut c, "alive").await;
    let seen = drain(&mut rx);
    assert_eq!(
        client_actions(&seen, "UserEvent").len(),
        1,
        "only the message within the limit reached the PBX: {:?}",
        action_names(&seen)
    );
    // Far past the limit (> 4×): the connection is closed with 1009.
    c.ws.send(Message::Text(big(5000)))
        .await
        .expect("send big frame");
    match c.closed(PATIENCE).await {
        Closed::Code(code, _) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert!(drain(&mut rx).is_empty(), "nothing more reached the PBX");
    // Other sessions are unaffected.
    let mut d = hub.ws().await;
    d.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut d, "other").await;
}

#[tokio::test]
async fn a_flood_of_actions_is_rate_limited_per_session() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[limits]\nactions_per_second = 5\n",
        quiet_server(1, "pbx1", &pbx)
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut other = hub.ws().await;
    other
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut rx = pbx.actions();
    let started = Instant::now();
    for i in 0..50 {
        c.ws.feed(Message::Text(
            json!({"Action":"Ping","ActionID":format!("f{i}"),"AMIServerID":1}).to_string(),
        ))
        .await
        .expect("feed");
    }
    c.ws.flush().await.expect("flush");
    let sent_in = started.elapsed();
    let (mut ok, mut limited) = (0, 0);
    while ok + limited < 50 {
        let v = c
            .wait_for("a reply to each Ping", |v| {
                v["data"]["ActionID"]
                    .as_str()
                    .is_some_and(|id| id.starts_with('f'))
            })
            .await;
        if is_error(&v, "Rate limit exceeded (5 actions per second)") {
            limited += 1;
        } else {
            assert_eq!(v["data"]["Response"], "Success", "{v}");
            ok += 1;
        }
    }
    eprintln!("flood: 50 Pings sent in {sent_in:?}: {ok} passed, {limited} rate-limited");
    assert!((5..=7).contains(&ok), "{ok} passed, {limited} limited");
    let seen = drain(&mut rx);
    let pings = client_actions(&seen, "Ping").len();
    assert_eq!(pings, ok, "the PBX got exactly the Pings that passed");
    // Another session has its own bucket; this one recovers after a second.
    ping_works(&mut other, "other").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ping_works(&mut c, "later").await;
    let r = get(hub.addr, "/metrics", None).await;
    let refused: u64 = r
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix("amihub_actions_refused_total ")?
                .parse()
                .ok()
        })
        .expect("metric");
    assert_eq!(refused, limited as u64);
}

#[tokio::test]
async fn max_sessions_refuses_the_next_upgrade_with_503() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[limits]\nmax_sessions = 3\n",
        quiet_server(1, "pbx1", &pbx)
    ));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = hub.ws().await;
        c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
            .await;
        open.push(c);
    }
    for path in ["/ws", "/"] {
        let refused = ws_refused(&hub.ws_url(path), &[]).await;
        assert_eq!(refused.status, 503, "{refused:?}");
        assert!(refused.body.contains("max_sessions"), "{refused:?}");
    }
    // The open sessions are unaffected.
    for (i, c) in open.iter_mut().enumerate() {
        ping_works(c, &format!("s{i}")).await;
    }
    // A closed session frees its slot.
    let mut gone = open.pop().expect("one");
    gone.ws.close(None).await.expect("close");
    let _ = gone.closed(PATIENCE).await;
    drop(gone);
    let deadline = Instant::now() + PATIENCE;
    let mut again = loop {
        match ws_with(&hub.ws_url("/ws"), &[]).await {
            Ok(c) => break c,
            Err(r) => {
                assert_eq!(r.status, 503);
                assert!(Instant::now() < deadline, "the slot was never released");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    again
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let r = get(hub.addr, "/metrics", None).await;
    assert!(
        r.body.contains("amihub_ws_refused_sessions_total "),
        "{}",
        r.body
    );
    assert!(!r.body.contains("amihub_ws_refused_sessions_total 0\n"));
}

// ---------------------------------------------------------------------------------------------
// HTTPS / WSS
// ---------------------------------------------------------------------------------------------

type TlsStream = tokio_openssl::SslStream<TcpStream>;

/// A TLS connection to `addr` that verifies the server against `ca` (and its IP SAN).
async fn tls_connect(addr: SocketAddr, ca: &X509) -> TlsStream {
    tls_connect_offering(addr, ca, None).await
}

/// A TLS connection that offers `alpn` (wire format) when given.
async fn tls_connect_offering(addr: SocketAddr, ca: &X509, alpn: Option<&[u8]>) -> TlsStream {
    let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
    b.cert_store_mut()
        .add_cert(ca.clone())
        .expect("trust the test CA");
    if let Some(protos) = alpn {
        b.set_alpn_protos(protos).expect("alpn");
    }
    let ssl = b
        .build()
        .configure()
        .expect("configure")
        .into_ssl(&addr.ip().to_string())
        .expect("ssl");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
    tokio::time::timeout(PATIENCE, Pin::new(&mut tls).connect())
        .await
        .expect("TLS handshake timeout")
        .expect("TLS handshake");
    tls
}

async fn next_json_of<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        let msg = match next {
            Err(_) => panic!("never saw {what}"),
            Ok(None) => panic!("closed before {what}"),
            Ok(Some(Err(e))) => panic!("ws read before {what}: {e}"),
            Ok(Some(Ok(msg))) => msg,
        };
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            if pred(&v) {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn https_and_wss_with_a_trusted_certificate() {
    let pbx = sim("pbx1").await;
    let ca_key = PKey::ec_gen("prime256v1").expect("ca key");
    let ca = support::pki::cert("amihub test CA", &ca_key, None, true);
    let key = PKey::ec_gen("prime256v1").expect("key");
    let cert = support::pki::cert("127.0.0.1", &key, Some((&ca, &ca_key)), false);
    let dir = tempfile::tempdir().expect("tmp");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.to_pem().expect("pem")).expect("write cert");
    std::fs::write(&key_file, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
    let hub = Amihub::start(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n{}{}",
        cert_file.display(),
        key_file.display(),
        quiet_server(1, "pbx1", &pbx),
        user_toml("ops", OPS_TOKEN, "")
    ));
    let listening = format!("listening on https://{}", hub.addr);
    eventually("the hub logs its https address", || {
        hub.log_contains(&listening)
    })
    .await;

    // HTTPS: credentials still required; with them the API answers.
    let mut tls = tls_connect(hub.addr, &ca).await;
    let r = exchange(&mut tls, hub.addr, "GET", "/api/v1/servers", &[], "").await;
    assert_eq!(r.status, 401, "{r:?}");
    let mut tls = tls_connect(hub.addr, &ca).await;
    let auth = bearer(OPS_TOKEN);
    let r = exchange(
        &mut tls,
        hub.addr,
        "GET",
        "/api/v1/servers",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    // ALPN: a client offering HTTP/2 first is answered with HTTP/1.1, the only one served.
    let tls = tls_connect_offering(hub.addr, &ca, Some(b"\x02h2\x08http/1.1")).await;
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"http/1.1"[..]));

    // WSS: statuses and events arrive; actions round-trip.
    let tls = tls_connect(hub.addr, &ca).await;
    let url = format!("wss://{}/ws?token={OPS_TOKEN}", hub.addr);
    let (mut ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("wss timeout")
        .expect("wss handshake");
    next_json_of(&mut ws, "Connected over WSS", |v| {
        is_status(v, 1, "Connected")
    })
    .await;
    pbx.emit(&[("Event", "OverWss")]);
    next_json_of(&mut ws, "event over WSS", |v| is_event(v, 1, "OverWss")).await;
    ws.send(Message::Text(
        json!({"Action":"Ping","ActionID":"w1"}).to_string(),
    ))
    .await
    .expect("send");
    next_json_of(&mut ws, "Ping over WSS", |v| is_response(v, "w1")).await;

    // WSS without credentials is still refused.
    let tls = tls_connect(hub.addr, &ca).await;
    let url = format!("wss://{}/ws", hub.addr);
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("wss timeout")
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("unauthenticated WSS: {:?}", other.map(|_| ())),
    }

    // Plain HTTP and plain WebSocket to the TLS port get no service.
    let mut plain = TcpStream::connect(hub.addr).await.expect("connect");
    let req = format!(
        "GET /livez HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    let _ = plain.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("ok\n") && !buf.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served on the TLS port: {:?}",
        String::from_utf8_lossy(&buf)
    );
    let plain_ws = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(hub.ws_url(&format!("/ws?token={OPS_TOKEN}"))),
    )
    .await
    .expect("plain ws timeout");
    assert!(plain_ws.is_err(), "plain ws:// worked on the TLS port");
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_never_reach_the_log_even_at_debug() {
    const PBX_SECRET: &str = "pbx-s3cret-value";
    const TOKEN: &str = "tok-s3cret-0123456789abcdef";
    const WRONG_TOKEN: &str = "tok-wr0ng-0123456789abcdef";
    const PASSWORD: &str = "pw-s3cret-basic";
    const WRONG_PASSWORD: &str = "pw-wr0ng-basic";
    let cfg = |name: &str| SimConfig {
        name: name.into(),
        username: "admin".into(),
        secret: PBX_SECRET.into(),
        demo_traffic: false,
        ..SimConfig::default()
    };
    let md5 = SimPbx::start("127.0.0.1:0", cfg("md5pbx"))
        .await
        .expect("sim");
    let plain = SimPbx::start("127.0.0.1:0", cfg("plainpbx"))
        .await
        .expect("sim");
    let hash = amihub::auth::hash_password(PASSWORD).expect("hash");
    let hub = Amihub::start_with(
        &format!(
            "{}{}[[users]]\nname = \"ops\"\ntoken = \"{TOKEN}\"\npassword_hash = \"{hash}\"\nactions = [\"*\"]\n",
            server_toml(1, "md5pbx", &md5, "admin", PBX_SECRET, ""),
            server_toml(2, "plainpbx", &plain, "admin", PBX_SECRET, "auth = \"plain\""),
        ),
        &[("RUST_LOG", "debug")],
    );
    // Logins with every credential kind, both PBX login modes, and failures.
    let mut c = ws_ok(&hub.ws_url(&format!("/ws?token={TOKEN}")), &[]).await;
    wait_connected(&mut c, &[1, 2]).await;
    c.send_json(json!({"Action":"Login","Username":"admin","Secret":PBX_SECRET,"ActionID":"l"}))
        .await;
    c.wait_for("Login answered by amihub", |v| v["data"]["ActionID"] == "l")
        .await;
    c.send_json(json!({"Action":"Command","Command":"core show version","ActionID":"cmd"}))
        .await;
    c.wait_for("Command", |v| is_response(v, "cmd")).await;
    assert_eq!(
        get(hub.addr, "/api/v1/servers", Some(&basic("ops", PASSWORD)))
            .await
            .status,
        200
    );
    assert_eq!(
        get(hub.addr, "/api/v1/servers", Some(&bearer(TOKEN)))
            .await
            .status,
        200
    );
    let refused = ws_refused(&hub.ws_url(&format!("/ws?token={WRONG_TOKEN}")), &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        get(hub.addr, "/api/v1/servers", Some(&bearer(WRONG_TOKEN)))
            .await
            .status,
        401
    );
    // The last refusal goes to a path of its own: once it is logged, everything before it
    // has been read from the hub's stderr.
    let last = get(
        hub.addr,
        "/api/v1/last-request",
        Some(&basic("ops", WRONG_PASSWORD)),
    )
    .await;
    assert_eq!(last.status, 401);
    eventually("the last refusal is logged", || {
        hub.log_contains("refused GET /api/v1/last-request")
    })
    .await;
    assert!(
        hub.log_contains(" DEBUG "),
        "the hub really logged at debug level"
    );
    let basic_b64 = basic("ops", PASSWORD);
    let basic_b64 = basic_b64.trim_start_matches("Basic ");
    for secret in [
        PBX_SECRET,
        TOKEN,
        WRONG_TOKEN,
        PASSWORD,
        WRONG_PASSWORD,
        basic_b64,
        &hash,
    ] {
        assert!(!hub.log_contains(secret), "{secret:?} appears in the log");
    }
}

// ---------------------------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sighup_with_a_changed_token_revokes_the_old_one() {
    const OLD: &str = "old-token-0123456789abcdef";
    const NEW: &str = "new-token-0123456789abcdef";
    const KEEP: &str = "keep-token-0123456789abcdef";
    let pbx = sim("pbx1").await;
    let body = |ops: &str| {
        format!(
            "{}{}{}",
            quiet_server(1, "pbx1", &pbx),
            user_toml("ops", ops, ""),
            user_toml("keep", KEEP, "")
        )
    };
    let hub = Amihub::start_in(&body(OLD), tempfile::tempdir().expect("tmp"));
    let mut old = ws_ok(&hub.ws_url(&format!("/ws?token={OLD}")), &[]).await;
    old.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut kept = ws_ok(&hub.ws_url(&format!("/ws?token={KEEP}")), &[]).await;
    kept.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    assert_eq!(
        get(hub.addr, "/api/v1/servers", Some(&bearer(OLD)))
            .await
            .status,
        200
    );

    hub.rewrite_config(&body(NEW));
    hub.reload().await;
    match old.closed(PATIENCE).await {
        Closed::Code(code, reason) => {
            assert_eq!(code, 4001, "{reason}");
        }
        other => panic!("old session: expected 4001, got {other:?}"),
    }
    assert_eq!(
        get(hub.addr, "/api/v1/servers", Some(&bearer(OLD)))
            .await
            .status,
        401
    );
    let refused = ws_refused(&hub.ws_url(&format!("/ws?token={OLD}")), &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        get(hub.addr, "/api/v1/servers", Some(&bearer(NEW)))
            .await
            .status,
        200
    );
    let mut new = ws_ok(&hub.ws_url(&format!("/ws?token={NEW}")), &[]).await;
    new.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut new, "n1").await;
    // The unchanged user's session stayed up.
    ping_works(&mut kept, "k1").await;
    assert_eq!(hub.log_count("1 session(s) of changed users closed"), 1);
}

#[tokio::test]
async fn sighup_revokes_sessions_of_users_removed_from_the_htdigest_file() {
    let pbx = sim("pbx1").await;
    let dir = tempfile::tempdir().expect("tmp");
    let dana = format!("dana:amiws:{}\n", md5_hex(&["dana", "amiws", "d4na-pass"]));
    let fred = format!("fred:amiws:{}\n", md5_hex(&["fred", "amiws", "fr3d-pass"]));
    let body = format!(
        "{}{}",
        htdigest_config(dir.path(), &format!("{dana}{fred}"), "amiws"),
        quiet_server(1, "pbx1", &pbx)
    );
    let hub = Amihub::start_in(&body, tempfile::tempdir().expect("tmp"));
    let challenge = digest_challenge(&get(hub.addr, "/api/v1/servers", None).await);
    let auth = digest_answer(&challenge, "dana", "d4na-pass", "GET", "/ws", 1);
    let mut c = ws_ok(&hub.ws_url("/ws"), &[("Authorization", &auth)]).await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    ping_works(&mut c, "d1").await;

    // dana leaves the htdigest file; fred stays.
    std::fs::write(dir.path().join("htdigest"), &fred).expect("rewrite htdigest");
    hub.reload().await;
    assert_eq!(
        get(
            hub.addr,
            "/api/v1/servers",
            Some(&basic("dana", "d4na-pass"))
        )
        .await
        .status,
        401,
        "new requests with dana's password are refused"
    );
    assert_eq!(
        get(
            hub.addr,
            "/api/v1/servers",
            Some(&basic("fred", "fr3d-pass"))
        )
        .await
        .status,
        200
    );
    match tokio::time::timeout(Duration::from_secs(3), c.closed(PATIENCE)).await {
        Ok(Closed::Code(code, _)) => assert_eq!(code, 4001),
        Ok(other) => panic!("expected 4001, got {other:?}"),
        Err(_) => {
            c.send_json(json!({"Action":"Ping","ActionID":"after"}))
                .await;
            let still = c.next_json(Duration::from_secs(2)).await;
            panic!("dana's session outlived her removal from the htdigest file: {still:?}");
        }
    }
}
