//! Regression tests for the HTTP/auth findings of the adversarial review (issue 9), over real
//! sockets against the real binary and a simulated PBX that is asked what reached it:
//! forwarding headers that cannot be parsed, DNS rebinding in loopback-only mode, CSRF on the
//! HTTP API, HEAD on the probes, IPv4-mapped loopback peers, unknown vs forbidden servers,
//! Digest replays and unsupported variants, and heavy Subscribe filters during a flood.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amihub::ami::Packet;
use amihub::sim::FloodSpec;
use md5::{Digest, Md5};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

const OPS_TOKEN: &str = "ops-token-0123456789abcdef";

fn quiet_server(id: u32, name: &str, sim: &SimPbx) -> String {
    server_toml(id, name, sim, "admin", "secret", "ping_interval_s = 3600")
}

/// A raw request: `Host: {host}`, `Connection: close`, the body's length, then `extra` header
/// lines exactly as given (bytes), then the body.
fn request(method: &str, path: &str, host: &str, extra: &[&[u8]], body: &str) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for line in extra {
        r.extend_from_slice(line);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body.as_bytes());
    r
}

/// The status of a WebSocket upgrade on `/ws` with `Host: host` and `extra` headers (101 when
/// accepted; the head is read, the connection dropped).
async fn upgrade_status(addr: SocketAddr, host: &str, extra: &[&str]) -> u16 {
    let mut req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut byte))
            .await
            .expect("upgrade answer timeout")
            .expect("read upgrade answer");
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Actions named `name` a client caused (amihub's rewritten ids) among what the PBX got so far.
fn reached(rx: &mut broadcast::Receiver<Packet>, name: &str) -> usize {
    let mut n = 0;
    while let Ok(p) = rx.try_recv() {
        let ours = p.get("ActionID").is_some_and(|i| i.starts_with("amihub."));
        if ours
            && p.get("Action")
                .is_some_and(|a| a.eq_ignore_ascii_case(name))
        {
            n += 1;
        }
    }
    n
}

/// Waits (on the PBX's own record) until `want` actions named `name` arrived in total.
async fn wait_reached(rx: &mut broadcast::Receiver<Packet>, name: &str, want: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut got = 0;
    while got < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(p)) => {
                let ours = p.get("ActionID").is_some_and(|i| i.starts_with("amihub."));
                if ours
                    && p.get("Action")
                        .is_some_and(|a| a.eq_ignore_ascii_case(name))
                {
                    got += 1;
                }
            }
            _ => panic!("only {got} of {want} {name} reached the PBX"),
        }
    }
}

const ORIGINATE: &str =
    r#"{"Action":"Originate","Channel":"Local/100@default","Application":"Wait","Data":"1"}"#;

// ---------------------------------------------------------------------------------------------
// High 2: forwarding headers that cannot be parsed
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forwarding_headers_that_cannot_be_parsed_count_as_remote() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&quiet_server(1, "pbx1", &pbx));
    hub.wait_status(1, "Connected").await;
    let host = hub.addr.to_string();
    let mut rx = pbx.actions();
    // What nginx/Apache make of a remote client's own header: its bytes, then the real client.
    let hostile: [&[u8]; 7] = [
        b"X-Forwarded-For: \xff, 203.0.113.5",
        b"X-Forwarded-For: \xff",
        "X-Forwarded-For: café, 203.0.113.5".as_bytes(),
        b"X-Real-IP: \xfe\xff",
        b"Forwarded: for=\"\xff\", for=203.0.113.5",
        b"Forwarded: for=127.0.0.1;x=\xe9, for=203.0.113.5",
        b"X-Forwarded-For: 127.0.0.1 203.0.113.5",
    ];
    for line in hostile {
        let req = request(
            "POST",
            "/api/v1/servers/1/actions",
            &host,
            &[line, b"Content-Type: application/json"],
            ORIGINATE,
        );
        let (status, _, body) = http_raw(hub.addr, &req).await;
        assert_eq!(
            status,
            403,
            "{:?} was served as loopback: {body}",
            String::from_utf8_lossy(line)
        );
        assert!(body.contains("only loopback clients"), "{body}");
    }
    // A loopback chain is still served, so the check above is about the bytes, not the header.
    let req = request(
        "POST",
        "/api/v1/servers/1/actions",
        &host,
        &[
            b"X-Forwarded-For: 127.0.0.1, ::1",
            b"Content-Type: application/json",
        ],
        r#"{"Action":"Ping"}"#,
    );
    let (status, _, body) = http_raw(hub.addr, &req).await;
    assert_eq!(status, 200, "{body}");
    wait_reached(&mut rx, "Ping", 1).await;
    assert_eq!(reached(&mut rx, "Originate"), 0, "an Originate got through");
}

// ---------------------------------------------------------------------------------------------
// High 3: DNS rebinding
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_users_only_loopback_hosts_are_served_so_dns_rebinding_fails() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start_with(
        &quiet_server(1, "pbx1", &pbx),
        &[("AMIHUB__HTTP__ALLOWED_ORIGINS", "http://hub.example.test")],
    );
    hub.wait_status(1, "Connected").await;
    let port = hub.addr.port();
    let evil = format!("evil.example:{port}");
    let mut rx = pbx.actions();
    // The rebinding page: its own name in Host and Origin, everywhere.
    for (method, path, body) in [
        ("GET", "/api/v1/servers", ""),
        ("GET", "/", ""),
        ("GET", "/livez", ""),
        ("POST", "/api/v1/servers/1/actions", ORIGINATE),
    ] {
        let origin = format!("Origin: http://{evil}");
        let req = request(
            method,
            path,
            &evil,
            &[origin.as_bytes(), b"Content-Type: application/json"],
            body,
        );
        let (status, _, text) = http_raw(hub.addr, &req).await;
        assert_eq!(status, 403, "{method} {path} with Host {evil}: {text}");
    }
    let origin = format!("Origin: http://{evil}");
    assert_eq!(upgrade_status(hub.addr, &evil, &[&origin]).await, 403);
    // X-Forwarded-Host cannot make a foreign Origin same-origin either.
    let loopback = format!("127.0.0.1:{port}");
    let fwd = format!("X-Forwarded-Host: {evil}");
    assert_eq!(
        upgrade_status(hub.addr, &loopback, &[&origin, &fwd]).await,
        403
    );
    // Loopback names with the listen port, and a declared public name, are served.
    for host in [
        loopback.clone(),
        format!("localhost:{port}"),
        format!("127.0.0.2:{port}"),
        "hub.example.test".to_string(),
    ] {
        let req = request("GET", "/api/v1/servers", &host, &[], "");
        let (status, _, text) = http_raw(hub.addr, &req).await;
        assert_eq!(status, 200, "Host {host}: {text}");
    }
    let req = request(
        "GET",
        "/api/v1/servers",
        &format!("localhost:{}", port + 1),
        &[],
        "",
    );
    assert_eq!(http_raw(hub.addr, &req).await.0, 403, "another port");
    let own = format!("Origin: http://localhost:{port}");
    assert_eq!(
        upgrade_status(hub.addr, &format!("localhost:{port}"), &[&own]).await,
        101
    );
    assert_eq!(reached(&mut rx, "Originate"), 0);
}

#[tokio::test]
async fn with_users_same_origin_is_judged_by_the_listen_address_not_host() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[[users]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\n",
        quiet_server(1, "pbx1", &pbx)
    ));
    let auth = format!("Authorization: Bearer {OPS_TOKEN}");
    let evil = format!("evil.example:{}", hub.addr.port());
    let origin = format!("Origin: http://{evil}");
    assert_eq!(
        upgrade_status(hub.addr, &evil, &[&auth, &origin]).await,
        403,
        "Origin equal to an attacker-set Host passed as same-origin"
    );
    let own = format!("Origin: http://{}", hub.addr);
    assert_eq!(
        upgrade_status(hub.addr, &hub.addr.to_string(), &[&auth, &own]).await,
        101
    );
}

// ---------------------------------------------------------------------------------------------
// High 4: CSRF on the HTTP API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn state_changing_requests_need_json_and_an_allowed_origin() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start_with(
        &format!(
            "{}[[users]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\nactions = [\"*\"]\n",
            quiet_server(1, "pbx1", &pbx)
        ),
        &[("AMIHUB__HTTP__ALLOWED_ORIGINS", "https://crm.example.test")],
    );
    wait_connected_as(hub.addr, &format!("Bearer {OPS_TOKEN}")).await;
    let host = hub.addr.to_string();
    let auth = format!("Authorization: Bearer {OPS_TOKEN}");
    let post = |extra: Vec<String>| {
        let mut lines: Vec<Vec<u8>> = vec![auth.clone().into_bytes()];
        lines.extend(extra.into_iter().map(String::into_bytes));
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        request(
            "POST",
            "/api/v1/servers/1/actions",
            &host,
            &refs,
            r#"{"Action":"Ping"}"#,
        )
    };
    let mut rx = pbx.actions();
    let json = "Content-Type: application/json".to_string();
    let refused: Vec<(Vec<String>, u16)> = vec![
        (vec![], 415),
        (vec!["Content-Type: text/plain".into()], 415),
        (
            vec!["Content-Type: application/x-www-form-urlencoded".into()],
            415,
        ),
        (
            vec!["Content-Type: multipart/form-data; boundary=x".into()],
            415,
        ),
        (
            vec![json.clone(), "Origin: http://evil.example".into()],
            403,
        ),
        (vec![json.clone(), "Origin: null".into()], 403),
        (
            vec![
                json.clone(),
                format!("Origin: http://127.0.0.1:{}", hub.addr.port() + 1),
            ],
            403,
        ),
        (vec![json.clone(), "Sec-Fetch-Site: cross-site".into()], 403),
        (vec![json.clone(), "Sec-Fetch-Site: same-site".into()], 403),
    ];
    for (extra, want) in refused {
        let (status, _, body) = http_raw(hub.addr, &post(extra.clone())).await;
        assert_eq!(status, want, "{extra:?}: {body}");
    }
    let accepted: Vec<Vec<String>> = vec![
        vec![json.clone()],
        vec!["Content-Type: application/json; charset=utf-8".into()],
        vec![json.clone(), format!("Origin: http://{}", hub.addr)],
        vec![json.clone(), "Origin: https://crm.example.test".into()],
        vec![json.clone(), "Sec-Fetch-Site: same-origin".into()],
    ];
    let n = accepted.len();
    for extra in accepted {
        let (status, _, body) = http_raw(hub.addr, &post(extra.clone())).await;
        assert_eq!(status, 200, "{extra:?}: {body}");
    }
    wait_reached(&mut rx, "Ping", n).await;
    assert_eq!(
        reached(&mut rx, "Ping"),
        0,
        "a refused request reached the PBX"
    );
}

// ---------------------------------------------------------------------------------------------
// Low: HEAD probes, IPv4-mapped loopback, unknown vs forbidden servers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn probes_answer_head() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&quiet_server(1, "pbx1", &pbx));
    hub.wait_status(1, "Connected").await;
    let host = hub.addr.to_string();
    for path in ["/livez", "/readyz", "/metrics"] {
        let (status, head, body) = http_raw(hub.addr, &request("HEAD", path, &host, &[], "")).await;
        assert_eq!(status, 200, "HEAD {path}: {head}");
        assert!(body.is_empty(), "HEAD {path} sent a body: {body:?}");
    }
}

#[tokio::test]
async fn ipv4_mapped_loopback_peers_are_loopback() {
    let pbx = sim("pbx1").await;
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
    let hub = Amihub::start_with(
        &quiet_server(1, "pbx1", &pbx),
        &[("AMIHUB__HTTP__LISTEN", "[::]:0")],
    );
    let v4: SocketAddr = format!("127.0.0.1:{}", hub.addr.port())
        .parse()
        .expect("addr");
    let (status, body) = http_to(v4, "GET", "/api/v1/servers", &[], "").await;
    assert_eq!(status, 200, "::ffff:127.0.0.1 was refused: {body}");
}

#[tokio::test]
async fn a_forbidden_server_answers_like_an_unknown_one() {
    let one = sim("pbx1").await;
    let two = sim("pbx2").await;
    let hub = Amihub::start(&format!(
        "{}{}[[users]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\nservers = [\"1\"]\n",
        quiet_server(1, "pbx1", &one),
        quiet_server(2, "pbx2", &two)
    ));
    let auth = format!("Bearer {OPS_TOKEN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let mut rx = two.actions();
    let addr = hub.addr;
    let answer = |path: String, method: &'static str| async move {
        let body = if method == "POST" {
            r#"{"Action":"Ping"}"#
        } else {
            ""
        };
        http_to(addr, method, &path, &headers, body).await
    };
    for (method, tail) in [("POST", "actions"), ("GET", "state")] {
        let (forbidden, fb) = answer(format!("/api/v1/servers/2/{tail}"), method).await;
        let (unknown, ub) = answer(format!("/api/v1/servers/3/{tail}"), method).await;
        assert_eq!(
            (forbidden, fb.replace('2', "N")),
            (unknown, ub.replace('3', "N")),
            "{method} {tail}: a forbidden server is told apart from an unknown one"
        );
        assert_eq!(forbidden, 404);
    }
    assert_eq!(reached(&mut rx, "Ping"), 0);
}

// ---------------------------------------------------------------------------------------------
// Low: Digest
// ---------------------------------------------------------------------------------------------

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    h.update(parts.join(":").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `key` in a Digest challenge.
fn param(challenge: &str, key: &str) -> String {
    challenge
        .split(',')
        .filter_map(|p| p.trim().trim_start_matches("Digest ").split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no {key} in {challenge}"))
}

/// Every `WWW-Authenticate` value of a response head.
fn challenges(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

async fn digest_hub(extra: &str) -> (Amihub, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("htdigest");
    std::fs::write(
        &file,
        format!("dana:amiws:{}\n", md5_hex(&["dana", "amiws", "d4na-pass"])),
    )
    .expect("htdigest");
    let hub = Amihub::start(&format!(
        "auth_file = \"{}\"\nauth_domain = \"amiws\"\n{extra}",
        file.display()
    ));
    (hub, dir)
}

#[tokio::test]
async fn digest_replays_and_unsupported_variants_are_refused() {
    let (hub, _dir) = digest_hub("").await;
    let path = "/api/v1/servers";
    let (addr, host) = (hub.addr, hub.addr.to_string());
    let get = |auth: String| {
        let host = host.clone();
        async move {
            let line = format!("Authorization: {auth}");
            http_raw(addr, &request("GET", path, &host, &[line.as_bytes()], "")).await
        }
    };
    let (status, head, _) = get("Basic x".into()).await;
    assert_eq!(status, 401);
    let challenge = challenges(&head)
        .into_iter()
        .find(|c| c.starts_with("Digest "))
        .expect("a Digest challenge");
    let nonce = param(&challenge, "nonce");
    let ha1 = md5_hex(&["dana", "amiws", "d4na-pass"]);
    let ha2 = md5_hex(&["GET", path]);
    let answer = |nc: &str, extra: &str| {
        let response = md5_hex(&[&ha1, &nonce, nc, "c0ffee", "auth", &ha2]);
        format!(
            "Digest username=\"dana\", realm=\"amiws\", nonce=\"{nonce}\", uri=\"{path}\", \
             qop=auth, nc={nc}, cnonce=\"c0ffee\", response=\"{response}\"{extra}"
        )
    };
    let first = answer("00000001", "");
    assert_eq!(get(first.clone()).await.0, 200, "a fresh answer works");
    let (status, _, body) = get(first).await;
    assert_eq!(status, 401, "a captured answer replayed: {body}");
    assert_eq!(
        get(answer("00000002", "")).await.0,
        200,
        "the next count works"
    );
    for alg in ["SHA-256", "MD5-sess", "SHA-512-256"] {
        let (status, _, body) = get(answer("00000003", &format!(", algorithm={alg}"))).await;
        assert_eq!(status, 401, "algorithm={alg}: {body}");
        assert!(body.contains("not supported"), "{body}");
    }
    // RFC 2069: no qop, response = MD5(HA1:nonce:HA2).
    let old = format!(
        "Digest username=\"dana\", realm=\"amiws\", nonce=\"{nonce}\", uri=\"{path}\", \
         response=\"{}\"",
        md5_hex(&[&ha1, &nonce, &ha2])
    );
    let (status, _, body) = get(old).await;
    assert_eq!(status, 401, "RFC 2069 answer: {body}");
    assert!(body.contains("not supported"), "{body}");
}

#[tokio::test]
async fn with_argon2_users_beside_an_htdigest_file_browsers_are_offered_basic() {
    // A browser answers Digest whenever it is offered; an argon2 user cannot.
    let hash = amihub::auth::hash_password("argon-pass").expect("hash");
    let (hub, _dir) = digest_hub(&format!(
        "\n[[users]]\nname = \"ari\"\npassword_hash = \"{hash}\"\n"
    ))
    .await;
    let host = hub.addr.to_string();
    let (status, head, _) =
        http_raw(hub.addr, &request("GET", "/api/v1/servers", &host, &[], "")).await;
    assert_eq!(status, 401);
    let offered = challenges(&head);
    assert!(
        offered.iter().any(|c| c.starts_with("Basic "))
            && !offered.iter().any(|c| c.starts_with("Digest ")),
        "{offered:?}"
    );
    // Both kinds of user log in with Basic.
    use base64::Engine;
    for (user, pw) in [("ari", "argon-pass"), ("dana", "d4na-pass")] {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        let line = format!("Authorization: Basic {b}");
        let (status, _, body) = http_raw(
            hub.addr,
            &request("GET", "/api/v1/servers", &host, &[line.as_bytes()], ""),
        )
        .await;
        assert_eq!(status, 200, "{user}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Medium 9: the HTTP in-flight budget is shared per user, and abandoned requests free their slot
// ---------------------------------------------------------------------------------------------

const ALICE_TOKEN: &str = "alice-token-0123456789abcdef";
const BOB_TOKEN: &str = "bob-token-0123456789abcdef";

/// Starts `POST /api/v1/servers/1/actions?timeout_s=60` (a Ping) on its own connection, and
/// keeps the connection open without reading.
async fn hold_action(addr: SocketAddr, token: &str) -> TcpStream {
    let auth = format!("Authorization: Bearer {token}");
    let req = request(
        "POST",
        "/api/v1/servers/1/actions?timeout_s=60",
        &addr.to_string(),
        &[auth.as_bytes(), b"Content-Type: application/json"],
        r#"{"Action":"Ping"}"#,
    );
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&req).await.expect("write");
    s
}

async fn ping_status(addr: SocketAddr, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    http_to(
        addr,
        "POST",
        "/api/v1/servers/1/actions?timeout_s=1",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"Action":"Ping"}"#,
    )
    .await
}

#[tokio::test]
async fn one_user_gets_a_share_of_http_actions_and_abandoned_ones_are_freed() {
    let pbx = sim("slow").await;
    let users = format!(
        "[[users]]\nname = \"alice\"\ntoken = \"{ALICE_TOKEN}\"\nactions = [\"*\"]\n\
         [[users]]\nname = \"bob\"\ntoken = \"{BOB_TOKEN}\"\nactions = [\"*\"]\n"
    );
    // The default share (limits.max_http_actions_per_user) is 32.
    const SHARE: usize = 32;
    let hub = Amihub::start(&format!("{}{users}", quiet_server(1, "slow", &pbx)));
    wait_connected_as(hub.addr, &format!("Bearer {ALICE_TOKEN}")).await;
    pbx.set_silent(true); // a PBX that never answers: every action waits for its timeout
    let mut rx = pbx.actions();
    let mut held = Vec::new();
    for _ in 0..SHARE {
        held.push(hold_action(hub.addr, ALICE_TOKEN).await);
    }
    wait_reached(&mut rx, "Ping", SHARE).await;
    let (status, body) = ping_status(hub.addr, ALICE_TOKEN).await;
    assert_eq!(status, 429, "alice beyond her share: {body}");
    assert!(body.contains("share"), "{body}");
    // Bob still has his share: his action reaches the PBX (and times out there).
    let (status, body) = ping_status(hub.addr, BOB_TOKEN).await;
    assert_eq!(status, 504, "bob was starved by alice: {body}");
    wait_reached(&mut rx, "Ping", 1).await;
    // Alice's clients go away: their slots come back long before their 60 s timeout.
    drop(held);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = ping_status(hub.addr, ALICE_TOKEN).await;
        if status != 429 {
            assert_eq!(status, 504, "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slots of alice's abandoned requests never came back"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Medium 8: a password flood
// ---------------------------------------------------------------------------------------------

/// One raw request from source address `from` (any 127.0.0.0/8 address); status and head.
async fn http_from(from: &str, addr: SocketAddr, req: &[u8]) -> (u16, String) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{from}:0").parse().expect("source"))
        .expect("bind source");
    let s = sock.connect(addr).await.expect("connect");
    let (status, head, _) = http_exchange(s, req).await;
    (status, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_flood_is_rate_limited_and_does_not_lock_out_others() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let hash = amihub::auth::hash_password("alice-pass").expect("hash");
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[users]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\n",
        quiet_server(1, "pbx1", &pbx)
    ));
    let addr = hub.addr;
    let host = addr.to_string();
    let probe = |path: &'static str, auth: Option<String>| {
        let host = host.clone();
        async move {
            let line = auth.map(|a| format!("Authorization: {a}"));
            let lines: Vec<&[u8]> = line.iter().map(|l| l.as_bytes()).collect();
            let started = std::time::Instant::now();
            let (status, _, _) = http_raw(addr, &request("GET", path, &host, &lines, "")).await;
            (status, started.elapsed())
        }
    };
    let mut quiet = Vec::new();
    for _ in 0..20 {
        let (status, took) = probe("/livez", None).await;
        assert_eq!(status, 200);
        quiet.push(took);
    }
    // 16 connections of wrong passwords from 127.0.0.2, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limited_seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut flooders = Vec::new();
    for i in 0..16 {
        let (stop, host, seen) = (stop.clone(), host.clone(), limited_seen.clone());
        let wrong = format!("Authorization: Basic {}", b64(&format!("alice:guess-{i}")));
        flooders.push(tokio::spawn(async move {
            let req = request("GET", "/api/v1/servers", &host, &[wrong.as_bytes()], "");
            let (mut refused, mut limited, mut retry_after) = (0u32, 0u32, true);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, head) = http_from("127.0.0.2", addr, &req).await;
                match status {
                    401 => refused += 1,
                    429 => {
                        limited += 1;
                        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        retry_after &= head.to_ascii_lowercase().contains("retry-after:");
                    }
                    other => panic!("flooder got {other}: {head}"),
                }
            }
            (refused, limited, retry_after)
        }));
    }
    // While the flood runs: probes, the token user and alice herself (another address).
    let mut flooded = Vec::new();
    let alice = format!("Basic {}", b64("alice:alice-pass"));
    let deadline = std::time::Instant::now() + PATIENCE;
    // Until the flooder has been refused a good many times, and at least 20 rounds.
    while flooded.len() < 20 || limited_seen.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        if std::time::Instant::now() > deadline {
            break; // asserted below, after the figures are printed
        }
        let (status, took) = probe("/livez", None).await;
        assert_eq!(status, 200);
        flooded.push(took);
        let (status, _) = probe("/api/v1/servers", Some(format!("Bearer {OPS_TOKEN}"))).await;
        assert_eq!(status, 200, "the token user was locked out by the flood");
        let (status, _) = probe("/api/v1/servers", Some(alice.clone())).await;
        assert_eq!(
            status, 200,
            "alice was locked out by a flood from another address"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut refused, mut limited) = (0, 0);
    for f in flooders {
        let (r, l, retry) = f.await.expect("flooder");
        assert!(retry, "a 429 without Retry-After");
        refused += r;
        limited += l;
    }
    let p99 = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() * 99 / 100]
    };
    eprintln!(
        "livez p99 quiet {:?}, during the flood {:?}; flooder: {refused} × 401, {limited} × 429",
        p99(&mut quiet),
        p99(&mut flooded)
    );
    assert!(
        limited > 0,
        "the flooder was never rate-limited ({refused} × 401)"
    );
    // At most the allowed failures, plus those already in flight when the limit was reached.
    assert!(
        refused <= amihub::auth::limiter::MAX_FAILURES + 16,
        "{refused} wrong passwords were checked"
    );
}

// ---------------------------------------------------------------------------------------------
// Medium 7: heavy Subscribe filters
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_subscribe_filters_cost_only_their_own_sessions() {
    use serde_json::json;
    const VIEWER: &str = "viewer-token-0123456789abcdef";
    const PLAIN: usize = 3;
    const HEAVY: usize = 12;
    const RATE: u64 = 2000;
    const COUNT: u64 = 8000;
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[[users]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\nactions = [\"*\"]\n\
         [[users]]\nname = \"viewer\"\ntoken = \"{VIEWER}\"\n",
        quiet_server(1, "pbx1", &pbx)
    ));
    let connect = |token: &'static str| {
        let url = hub.ws_url(&format!("/ws?token={token}"));
        async move {
            let mut c = Client::connect(&url).await;
            c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
                .await;
            c
        }
    };
    let mut plain = Vec::new();
    for _ in 0..PLAIN {
        plain.push(connect(OPS_TOKEN).await);
    }
    // A read-only user's sessions, each with 64 rules that never match and have no literal to
    // skip by (about 1.5 µs per flood event each, so ~0.1 ms per event per session: the old
    // registry did that for all of them before anyone got the event).
    let filters = vec![r"(?-u)(\w*\s*)*Q"; 64];
    let mut heavy = Vec::new();
    for _ in 0..HEAVY {
        let mut c = connect(VIEWER).await;
        c.send_json(json!({"ProxyAction":"Subscribe","Filters":filters}))
            .await;
        let r = c
            .wait_for("Subscribe reply", |v| {
                v["type"] == 8 && v["data"]["ProxyAction"] == "Subscribe"
            })
            .await;
        assert_eq!(r["data"]["Response"], "Success", "{r}");
        heavy.push(c);
    }
    // The heavy sessions read what they get (nothing passes their rules) until they end.
    let heavy: Vec<_> = heavy
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.closed(Duration::from_secs(60)).await }))
        .collect();

    let nominal = Duration::from_millis(COUNT * 1000 / RATE);
    let within = nominal * 3 / 2 + Duration::from_millis(1500);
    let readers: Vec<_> = plain
        .into_iter()
        .map(|c| tokio::spawn(read_flood(c, COUNT, within)))
        .collect();
    let started = Instant::now();
    pbx.flood(FloodSpec {
        rate_per_s: Some(RATE),
        count: Some(COUNT),
        event_bytes: 500,
    });
    // The PBX is never held back: it writes the whole flood at its own pace.
    let paced = pbx.wait_for(within, |s| s.events_sent >= COUNT).await;
    let took = started.elapsed();
    let sent = pbx.stats().events_sent;
    let mut plain = Vec::new();
    for r in readers {
        plain.push(r.await.expect("plain reader"));
    }
    let read = started.elapsed();
    let auth = format!("Bearer {OPS_TOKEN}");
    let cut = metric_at(
        hub.addr,
        "amihub_ws_slow_consumer_closes_total",
        &[("Authorization", &auth)],
    )
    .await;
    eprintln!(
        "heavy filters: PBX wrote {sent} of {COUNT} in {took:?} (nominal {nominal:?}), plain \
         sessions had all of it after {read:?}; {cut} heavy session(s) cut with 4008"
    );
    assert!(
        paced,
        "the PBX was back-pressured: {sent} of {COUNT} events written in {took:?} \
         (nominal {nominal:?})"
    );
    assert!(
        cut as usize <= HEAVY,
        "{cut} sessions were cut: plain ones among them"
    );
    // Whoever was cut, it was a heavy one: every plain session is still open and current.
    for c in plain.iter_mut() {
        c.send_json(json!({"ProxyAction":"ListServers"})).await;
        c.wait_for("ListServers reply", |v| {
            v["type"] == 8 && v["data"]["ProxyAction"] == "ListServers"
        })
        .await;
    }
    drop(plain);
    drop(hub);
    for h in heavy {
        let how = h.await.expect("heavy reader");
        assert!(
            matches!(
                how,
                Closed::Code(4008, _) | Closed::Code(1001, _) | Closed::NoCloseFrame
            ),
            "a heavy session ended with {how:?}"
        );
    }
}
