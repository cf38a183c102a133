//! AJAM over real sockets (SPEC §9): the real binary, simulated PBXs and raw HTTP, compared with
//! what Asterisk 22 answered to the same requests (integration/captures/ajam).

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use md5::{Digest, Md5};
use support::*;

const PASSWORD: &str = "amp111";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";
const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/captures/ajam");

/// `admin` (password and ami_secret amp111, as in the captures; every action) and `viewer` (a
/// token, the read-only default set).
fn users() -> String {
    let hash = amihub::auth::hash_password(PASSWORD).expect("hash");
    format!(
        "[[users]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nami_secret = \"{PASSWORD}\"\nactions = [\"*\"]\nadmin = true\n\
         [[users]]\nname = \"viewer\"\ntoken = \"{VIEWER_TOKEN}\"\n"
    )
}

fn basic() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    format!("Basic {b64}")
}

/// A hub with the users above, `extra` config and one simulator per name.
async fn hub(extra: &str, names: &[&str]) -> (Amihub, Vec<SimPbx>) {
    let mut sims = Vec::new();
    let mut cfg = format!("{extra}\n");
    for (i, name) in names.iter().enumerate() {
        let s = sim(name).await;
        cfg.push_str(&server_toml(i as u32 + 1, name, &s, "admin", "secret", ""));
        sims.push(s);
    }
    cfg.push_str(&users());
    let hub = Amihub::start(&cfg);
    wait_connected_as(hub.addr, &basic()).await;
    (hub, sims)
}

/// One HTTP response, as read off the socket.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `mansession_id` this response sets.
    fn cookie(&self) -> Option<String> {
        let v = self.header("set-cookie")?;
        let rest = v.strip_prefix("mansession_id=\"")?;
        Some(rest.split('"').next()?.to_string())
    }
}

fn parse_head(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A raw HTTP/1.1 request (`Connection: close`).
async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let (status, head, body) = http_raw(addr, req.as_bytes()).await;
    Resp {
        status,
        headers: parse_head(&head),
        body,
    }
}

/// A GET with the session cookie (if any).
async fn get(addr: SocketAddr, target: &str, cookie: Option<&str>) -> Resp {
    let c = cookie.map(|c| format!("mansession_id=\"{c}\""));
    let headers: Vec<(&str, &str)> = c.iter().map(|c| ("Cookie", c.as_str())).collect();
    request(addr, "GET", target, &headers, "").await
}

async fn login(addr: SocketAddr, user: &str, secret: &str) -> String {
    let r = get(
        addr,
        &format!("/rawman?action=login&username={user}&secret={secret}"),
        None,
    )
    .await;
    assert!(r.body.contains("Authentication accepted"), "{r:?}");
    r.cookie().expect("a session cookie")
}

/// A captured exchange: the request curl made and what Asterisk answered (one or two responses).
struct Capture {
    method: &'static str,
    target: String,
    body: String,
    digest: bool,
    responses: Vec<Resp>,
}

fn capture(name: &str) -> Capture {
    let text = std::fs::read_to_string(format!("{CAPTURES}/{name}.http")).expect("capture");
    let (first, mut rest) = text.split_once('\n').expect("request line");
    let words: Vec<&str> = first.split_whitespace().collect();
    let target = words.last().expect("target").to_string();
    let data = words.iter().position(|w| *w == "-d").map(|i| words[i + 1]);
    let mut responses = Vec::new();
    while let Some(at) = rest.find("HTTP/1.1 ") {
        rest = &rest[at..];
        let (head, after) = rest.split_once("\r\n\r\n").expect("head");
        let headers = parse_head(head);
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        // curl -v printed no body for the 401 it answered with Digest (capture 15).
        let len = len.min(after.find("HTTP/1.1 ").unwrap_or(len));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        responses.push(Resp {
            status: status.expect("status"),
            headers,
            body: after[..len].to_string(),
        });
        rest = &after[len..];
    }
    Capture {
        method: if data.is_some() { "POST" } else { "GET" },
        target,
        body: data.unwrap_or("").to_string(),
        digest: first.contains("--digest"),
        responses,
    }
}

/// Values compared exactly: the protocol's own. Everything else is the PBX's data or changes per
/// run (timestamps, uptimes, the system's name and users; the simulator is not the captured
/// PBX) and is compared by name and position only.
const PROTOCOL: [&str; 7] = [
    "response",
    "message",
    "event",
    "eventlist",
    "actionid",
    "ping",
    "amiversion",
];

/// A body as (name, value) items: AMI lines (a blank line is `("", "")`), XML attributes (an
/// element start is `("<", id)`), HTML rows.
fn items(body: &str, content_type: &str) -> Vec<(String, String)> {
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    match content_type {
        "text/plain" => body
            .split("\r\n")
            .map(|l| {
                l.split_once(": ")
                    .map_or_else(|| pair(l, ""), |(n, v)| pair(n, v))
            })
            .collect(),
        "text/xml" => {
            let re =
                regex::Regex::new(r"<response type='object' id='([^']*)'>|([a-z0-9_-]+)='([^']*)'")
                    .expect("regex");
            re.captures_iter(body)
                .map(|c| match c.get(1) {
                    Some(id) => pair("<", id.as_str()),
                    None => pair(&c[2], &c[3]),
                })
                .collect()
        }
        _ => {
            let re = regex::Regex::new(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>|<hr>")
                .expect("regex");
            let rows: Vec<_> = re
                .captures_iter(body)
                .map(|c| match c.get(1) {
                    Some(n) => pair(n.as_str(), &c[2]),
                    None => pair("<hr>", ""),
                })
                .collect();
            assert!(body.starts_with("<title>Asterisk&trade; Manager Interface</title>"));
            rows
        }
    }
}

fn volatile(name: &str) -> bool {
    !PROTOCOL.contains(&name.to_ascii_lowercase().as_str())
}

/// A body's items cut into packets (at blank lines, XML elements, HTML rules).
fn packets(items: Vec<(String, String)>) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for item in items {
        // An XML element starts a packet; a blank line or an HTML rule ends one.
        if item.0 == "<" {
            out.push(Vec::new());
        }
        let ends = matches!(item.0.as_str(), "" | "<hr>");
        if let Some(last) = out.last_mut() {
            last.push(item);
        }
        if ends {
            out.push(Vec::new());
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// Whether a packet is an event (a list item when the response announced a list).
fn is_event(p: &[(String, String)]) -> bool {
    p.iter().any(|(n, _)| n.eq_ignore_ascii_case("event"))
}

/// Asserts `got` has the shape of `want`: status, content type, the same packets with the same
/// headers in the same order and the same values apart from volatile ones. A list's items are
/// the PBX's own data (the simulator's queues are not the captured PBX's): consecutive items of
/// one shape count once, and their values and `ListItems` are not compared.
fn assert_shape(name: &str, got: &Resp, want: &Resp) {
    assert_eq!(got.status, want.status, "{name}: status; {got:?}");
    let ct = want.header("content-type").expect("captured content type");
    assert_eq!(got.header("content-type"), Some(ct), "{name}: content type");
    let (mut g, mut w) = (
        packets(items(&got.body, ct)),
        packets(items(&want.body, ct)),
    );
    let list = w.first().is_some_and(|p| {
        p.iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("eventlist") && v.eq_ignore_ascii_case("start"))
    });
    let names = |p: &[(String, String)]| p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if list {
        for v in [&mut g, &mut w] {
            v.dedup_by(|a, b| is_event(a) && names(a) == names(b));
        }
    }
    let shape = |v: &[Vec<(String, String)>]| v.iter().map(|p| names(p)).collect::<Vec<_>>();
    assert_eq!(shape(&g), shape(&w), "{name}: body shape\n{}", got.body);
    for (gp, wp) in g.iter().zip(&w) {
        if list
            && is_event(gp)
            && !names(gp)
                .iter()
                .any(|n| n.eq_ignore_ascii_case("eventlist"))
        {
            continue;
        }
        for ((gn, gv), (_, wv)) in gp.iter().zip(wp) {
            if !volatile(gn) {
                assert_eq!(gv, wv, "{name}: value of {gn}\n{}", got.body);
            }
        }
    }
}

/// Asserts the cookie behaviour: `Some(id)` = this session's id again; None = a fresh id, in
/// amihub's 128-bit shape, with Asterisk's attributes.
fn assert_cookie(name: &str, got: &Resp, want: &Resp, session: Option<&str>) -> String {
    let Some(c) = got.cookie() else {
        assert!(want.header("set-cookie").is_none(), "{name}: no cookie");
        return String::new();
    };
    assert!(
        want.header("set-cookie").is_some(),
        "{name}: unexpected cookie"
    );
    assert_eq!(c.len(), 32, "{name}: 128-bit id");
    assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
    let attrs = got.header("set-cookie").unwrap_or("");
    assert!(attrs.contains("; Version=1; Max-Age=60"), "{name}: {attrs}");
    assert!(attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"));
    assert_eq!(got.header("pragma"), Some("SuppressEvents"));
    if let Some(s) = session {
        assert_eq!(c, s, "{name}: the session's own cookie");
    }
    c
}

/// Replays one capture with `cookie`; checks status, type, body shape and cookie; returns the
/// cookie the response set.
async fn replay(addr: SocketAddr, name: &str, cookie: Option<&str>, same: bool) -> String {
    let cap = capture(name);
    let c = cookie.map(|c| format!("mansession_id=\"{c}\""));
    let mut headers: Vec<(&str, &str)> = c.iter().map(|c| ("Cookie", c.as_str())).collect();
    if cap.method == "POST" {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    let got = request(addr, cap.method, &cap.target, &headers, &cap.body).await;
    let want = &cap.responses[0];
    assert_shape(name, &got, want);
    let set = assert_cookie(name, &got, want, cookie.filter(|_| same));
    if cookie.is_some() && !same {
        assert_ne!(Some(set.as_str()), cookie, "{name}: a new id");
    }
    set
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    h.update(parts.join(":").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// curl --digest: the 401's challenge answered for `target` as `user`/`secret`.
fn digest_answer(challenge: &str, target: &str, user: &str, secret: &str, nc: &str) -> String {
    let param = |k: &str| {
        let start = challenge.find(&format!("{k}=\"")).expect("param") + k.len() + 2;
        challenge[start..]
            .split('"')
            .next()
            .expect("value")
            .to_string()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let ha1 = md5_hex(&[user, &realm, secret]);
    let ha2 = md5_hex(&["GET", target]);
    let response = md5_hex(&[&ha1, &nonce, nc, "c0ffee", "auth", &ha2]);
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{target}\", \
         algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\", response=\"{response}\""
    )
}

/// The events of capture 10, to replay through the simulator.
fn captured_call_events() -> Vec<Vec<(String, String)>> {
    let body = &capture("10_rawman_waitevent_after_call").responses[0].body;
    body.split("\r\n\r\n")
        .filter(|p| p.starts_with("Event: ") && !p.starts_with("Event: WaitEventComplete"))
        .map(|p| {
            p.split("\r\n")
                .filter_map(|l| {
                    l.split_once(": ")
                        .or_else(|| l.strip_suffix(':').map(|n| (n, "")))
                })
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn emit(sim: &SimPbx, event: &[(String, String)]) {
    let h: Vec<(&str, &str)> = event
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    sim.emit(&h);
}

/// The `Event:` names of an AMI body, in order.
fn event_names(body: &str) -> Vec<String> {
    body.split("\r\n")
        .filter_map(|l| l.strip_prefix("Event: "))
        .map(str::to_string)
        .collect()
}

/// WaitEvent (Timeout 5) until `n` events other than WaitEventComplete came; their bodies.
async fn wait_events(addr: SocketAddr, cookie: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut bodies = Vec::new();
    let mut seen = 0;
    while seen < n {
        assert!(Instant::now() < deadline, "only {seen} of {n} events");
        let r = get(addr, "/rawman?action=waitevent&timeout=5", Some(cookie)).await;
        assert_eq!(r.status, 200);
        seen += event_names(&r.body).len() - 1;
        bodies.push(r.body);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread")]
async fn every_captured_request_is_answered_as_asterisk_answers_it() {
    let (hub, sims) = hub("", &["pbx1"]).await;
    let addr = hub.addr;
    // Before login, and a bad login: Asterisk's words and a fresh cookie each time.
    let a = replay(addr, "01_rawman_action_before_login", None, false).await;
    let b = replay(addr, "02_rawman_login_bad", None, false).await;
    assert_ne!(a, b);
    let s = replay(addr, "03_rawman_login", None, false).await;
    for name in [
        "04_rawman_ping",
        "05_rawman_command",
        "06_rawman_queuestatus",
        "07_mxml_queuestatus",
        "08_manager_html_coresettings",
        "09_rawman_post_ping",
        "11_mxml_waitevent_timeout",
        "12_mxml_command",
    ] {
        replay(addr, name, Some(&s), true).await;
    }
    // 10: the call's events, replayed by the PBX, come back from WaitEvent as captured (each
    // with the `Server:` header events carry on amihub).
    let events = captured_call_events();
    assert_eq!(events.len(), 19);
    for e in &events {
        emit(&sims[0], e);
    }
    let bodies = wait_events(addr, &s, events.len()).await;
    let joined: String = bodies
        .iter()
        .map(|b| {
            let inner = b
                .strip_prefix("Response: Success\r\nMessage: Waiting for Event completed.\r\n\r\n")
                .expect("response first");
            inner
                .strip_suffix("Event: WaitEventComplete\r\n\r\n")
                .expect("complete last")
                .to_string()
        })
        .collect();
    let without_server: String = joined
        .split_inclusive("\r\n")
        .filter(|l| *l != "Server: pbx1\r\n")
        .collect();
    assert_eq!(joined.matches("Server: pbx1\r\n").count(), events.len());
    let want = &capture("10_rawman_waitevent_after_call").responses[0];
    let got = Resp {
        status: 200,
        headers: vec![("Content-type".into(), "text/plain".into())],
        body: format!(
            "Response: Success\r\nMessage: Waiting for Event completed.\r\n\r\n{without_server}Event: WaitEventComplete\r\n\r\n"
        ),
    };
    assert_shape("10_rawman_waitevent_after_call", &got, want);
    // Logoff ends the session: its cookie is worth nothing after, and a fresh one is given.
    replay(addr, "13_rawman_logoff", Some(&s), true).await;
    replay(addr, "14_rawman_after_logoff", Some(&s), false).await;
    // Digest: refused without credentials (Asterisk's 401 page), accepted per request.
    let cap = capture("16_arawman_no_auth");
    let got = get(addr, &cap.target, None).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.header("content-type"), Some("text/html"));
    assert!(got
        .header("www-authenticate")
        .is_some_and(|c| c.starts_with("Digest ")));
    assert_eq!(
        got.body,
        cap.responses[0].body.replace("Asterisk/22.10.1", "amihub")
    );
    assert!(got.cookie().is_none());
    let cap = capture("15_arawman_digest_ping");
    assert!(cap.digest);
    let first = get(addr, &cap.target, None).await;
    assert_eq!(first.status, cap.responses[0].status);
    let challenge = first
        .header("www-authenticate")
        .expect("challenge")
        .to_string();
    let auth = digest_answer(&challenge, &cap.target, "admin", PASSWORD, "00000001");
    let got = request(addr, "GET", &cap.target, &[("Authorization", &auth)], "").await;
    assert_shape("15_arawman_digest_ping", &got, &cap.responses[1]);
    assert!(got.cookie().is_none(), "Digest paths set no cookie");
    let replayed = request(addr, "GET", &cap.target, &[("Authorization", &auth)], "").await;
    assert_eq!(replayed.status, 401, "a replayed Digest answer is refused");
    let wrong = digest_answer(&challenge, &cap.target, "admin", "wrong", "00000002");
    let refused = request(addr, "GET", &cap.target, &[("Authorization", &wrong)], "").await;
    assert_eq!(refused.status, 401);
    // A second session, logged in over /mxml.
    let t = replay(addr, "17_mxml_login", None, false).await;
    assert_ne!(t, s);
    replay(addr, "18_rawman_unknown_action", Some(&t), true).await;
    replay(addr, "19_rawman_originate_async", Some(&t), true).await;
    // The async Originate's result is an event for WaitEvent, with the requester's ActionID.
    let bodies = wait_events(addr, &t, 1).await;
    let all = bodies.concat();
    let at = all
        .find("Event: OriginateResponse\r\n")
        .expect("OriginateResponse");
    let packet = all[at..].split("\r\n\r\n").next().unwrap_or("");
    assert!(packet.contains("\r\nActionID: o1\r\n"), "{packet}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_event_returns_each_event_once_in_order_and_an_idle_one_after_its_timeout() {
    let (hub, sims) = hub("", &["pbx1"]).await;
    let s = login(hub.addr, "admin", PASSWORD).await;
    for i in 0..5 {
        sims[0].emit(&[("Event", "UserEvent"), ("UserEvent", &format!("seq{i}"))]);
    }
    let bodies = wait_events(hub.addr, &s, 5).await;
    let seq: Vec<String> = bodies
        .concat()
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("UserEvent: "))
        .map(str::to_string)
        .collect();
    assert_eq!(
        seq,
        ["seq0", "seq1", "seq2", "seq3", "seq4"],
        "in order, once each"
    );
    let started = Instant::now();
    let idle = get(
        hub.addr,
        "/rawman?action=waitevent&timeout=1&actionid=w",
        Some(&s),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        idle.body,
        "Response: Success\r\nActionID: w\r\nMessage: Waiting for Event completed.\r\n\r\n\
         Event: WaitEventComplete\r\nActionID: w\r\n\r\n",
        "nothing is delivered twice"
    );
    assert!(
        took >= Duration::from_millis(950),
        "returned after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    // An event arriving during a wait ends it at once.
    let waiting = tokio::spawn(async move {
        get(hub.addr, "/rawman?action=waitevent&timeout=30", Some(&s)).await
    });
    let addr = hub.addr;
    wait_metric_at(
        addr,
        "amihub_ajam_requests_total",
        &[("Authorization", &basic())],
        |n| n >= 3,
    )
    .await;
    let started = Instant::now();
    // Emitted until the waiting request has it (the wait may not be parked yet).
    let mut r = None;
    for _ in 0..200 {
        sims[0].emit(&[("Event", "UserEvent"), ("UserEvent", "late")]);
        if waiting.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if let Ok(resp) = tokio::time::timeout(PATIENCE, waiting).await {
        r = resp.ok();
    }
    let r = r.expect("the wait ended");
    assert!(r.body.contains("UserEvent: late"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_drops_the_oldest_and_says_so() {
    let (hub, sims) = hub("[ajam]\nqueue_events = 5\n", &["pbx1"]).await;
    let s = login(hub.addr, "admin", PASSWORD).await;
    for i in 0..20 {
        sims[0].emit(&[("Event", "UserEvent"), ("UserEvent", &format!("seq{i}"))]);
    }
    let auth = basic();
    let m = [("Authorization", auth.as_str())];
    wait_metric_at(hub.addr, "amihub_ajam_events_dropped_total", &m, |n| {
        n >= 15
    })
    .await;
    assert_eq!(
        metric_at(hub.addr, "amihub_ajam_queued_events", &m).await,
        5
    );
    let r = get(hub.addr, "/rawman?action=waitevent&timeout=1", Some(&s)).await;
    assert!(
        r.body
            .contains("Event: EventsDropped\r\nPrivilege: system,all\r\nDropped: 15\r\n"),
        "{}",
        r.body
    );
    let seq: Vec<&str> = r
        .body
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("UserEvent: "))
        .collect();
    assert_eq!(seq, ["seq15", "seq16", "seq17", "seq18", "seq19"]);
    assert_eq!(
        metric_at(hub.addr, "amihub_ajam_queued_events", &m).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_never_polled_expires_and_frees_its_memory() {
    let (hub, sims) = hub("[ajam]\nhttptimeout_s = 2\n", &["pbx1"]).await;
    let auth = basic();
    let m = [("Authorization", auth.as_str())];
    let s = login(hub.addr, "admin", PASSWORD).await;
    assert_eq!(metric_at(hub.addr, "amihub_ajam_sessions", &m).await, 1);
    for _ in 0..10 {
        sims[0].emit(&[("Event", "UserEvent"), ("UserEvent", "unread")]);
    }
    wait_metric_at(hub.addr, "amihub_ajam_queued_events", &m, |n| n == 10).await;
    // Nobody polls: after httptimeout the session, its registry entry and its queue are gone.
    wait_metric_at(hub.addr, "amihub_ajam_sessions", &m, |n| n == 0).await;
    assert_eq!(
        metric_at(hub.addr, "amihub_ajam_queued_events", &m).await,
        0
    );
    assert_eq!(
        metric_at(hub.addr, "amihub_ajam_expired_sessions_total", &m).await,
        1
    );
    let r = get(hub.addr, "/rawman?action=ping", Some(&s)).await;
    assert_eq!(
        r.body,
        "Response: Error\r\nMessage: Permission denied\r\n\r\n"
    );
    assert_ne!(r.cookie().as_deref(), Some(s.as_str()));
    // Requests without a session allocate nothing.
    for _ in 0..20 {
        get(hub.addr, "/rawman?action=ping", None).await;
    }
    assert_eq!(metric_at(hub.addr, "amihub_ajam_sessions", &m).await, 0);
    assert_eq!(
        metric_at(hub.addr, "amihub_ajam_sessions_total", &m).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_may_not_originate() {
    let (hub, sims) = hub("", &["pbx1"]).await;
    let mut seen = sims[0].actions();
    let v = login(hub.addr, "viewer", VIEWER_TOKEN).await;
    let r = get(
        hub.addr,
        "/rawman?action=originate&channel=Local/100@demo&application=Wait&data=1&actionid=o",
        Some(&v),
    )
    .await;
    assert_eq!(
        r.body,
        "Response: Error\r\nActionID: o\r\nMessage: Permission denied\r\n\r\n"
    );
    // What the viewer may do still reaches the PBX, and the Originate never did.
    let r = get(hub.addr, "/rawman?action=coresettings", Some(&v)).await;
    assert!(r.body.contains("AMIversion"), "{}", r.body);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = tokio::time::timeout(PATIENCE, seen.recv())
            .await
            .expect("action seen")
            .expect("action");
        let name = p.get("Action").unwrap_or("").to_ascii_lowercase();
        assert_ne!(name, "originate", "a refused Originate reached the PBX");
        if name == "coresettings" {
            break;
        }
        assert!(Instant::now() < deadline);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_never_see_each_others_replies() {
    let (hub, _sims) = hub("", &["pbx1"]).await;
    let a = login(hub.addr, "admin", PASSWORD).await;
    let b = login(hub.addr, "admin", PASSWORD).await;
    assert_ne!(a, b);
    for _ in 0..10 {
        let (ra, rb) = tokio::join!(
            get(
                hub.addr,
                "/rawman?action=queuestatus&actionid=same",
                Some(&a)
            ),
            get(
                hub.addr,
                "/rawman?action=coresettings&actionid=same",
                Some(&b)
            ),
        );
        assert!(
            ra.body.contains("Event: QueueStatusComplete"),
            "{}",
            ra.body
        );
        assert!(!ra.body.contains("AMIversion"), "{}", ra.body);
        assert!(rb.body.contains("AMIversion"), "{}", rb.body);
        assert!(!rb.body.contains("Queue"), "{}", rb.body);
    }
    for s in [&a, &b] {
        let r = get(hub.addr, "/rawman?action=waitevent&timeout=0", Some(s)).await;
        assert!(!r.body.contains("ActionID: same"), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_go_to_the_chosen_pbx_and_without_a_choice_the_error_names_them() {
    let (hub, sims) = hub("", &["pbx1", "pbx2"]).await;
    let s = login(hub.addr, "admin", PASSWORD).await;
    let mut seen = sims[1].actions();
    let r = get(
        hub.addr,
        "/rawman?action=corestatus&server=pbx2&actionid=c",
        Some(&s),
    )
    .await;
    assert!(
        r.body.starts_with("Response: Success\r\nActionID: c\r\n"),
        "{}",
        r.body
    );
    let p = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("pbx2 saw it")
        .expect("action");
    assert_eq!(p.get("Action"), Some("corestatus"));
    let r = get(hub.addr, "/rawman?action=corestatus&server=2", Some(&s)).await;
    assert!(r.body.starts_with("Response: Success\r\n"), "{}", r.body);
    let r = get(hub.addr, "/rawman?action=corestatus", Some(&s)).await;
    assert!(r.body.starts_with("Response: Error\r\n"), "{}", r.body);
    assert!(
        r.body.contains("pbx1 (1)") && r.body.contains("pbx2 (2)"),
        "{}",
        r.body
    );
    let r = get(hub.addr, "/rawman?action=corestatus&server=nope", Some(&s)).await;
    assert!(r.body.contains("Unknown server \"nope\""), "{}", r.body);
    // Ping without server= is amihub's own keepalive; events carry the PBX's name.
    let r = get(hub.addr, "/rawman?action=ping", Some(&s)).await;
    assert!(r.body.starts_with("Response: Success\r\nPing: Pong\r\n"));
    sims[1].emit(&[("Event", "UserEvent"), ("UserEvent", "from2")]);
    let bodies = wait_events(hub.addr, &s, 1).await;
    assert!(bodies
        .concat()
        .contains("UserEvent: from2\r\nServer: pbx2\r\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_requests_are_refused_and_forms_are_the_only_posts() {
    let (hub, sims) = hub("", &["pbx1"]).await;
    let addr = hub.addr;
    let s = login(addr, "admin", PASSWORD).await;
    let cookie = format!("mansession_id=\"{s}\"");
    let form = "application/x-www-form-urlencoded";
    let mut seen = sims[0].actions();
    let body = "action=originate&channel=Local/100@demo&application=Wait&data=1";
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        let r = request(
            addr,
            "POST",
            "/rawman",
            &[("Cookie", &cookie), ("Content-Type", form), (name, value)],
            body,
        )
        .await;
        assert_eq!(r.status, 403, "{name}: {value}");
        assert!(
            r.body.contains("cross-origin request refused"),
            "{}",
            r.body
        );
        // A cross-site GET (an <img> or a link) is refused the same way.
        let r = request(
            addr,
            "GET",
            &format!("/rawman?{body}"),
            &[("Cookie", &cookie), (name, value)],
            "",
        )
        .await;
        assert_eq!(r.status, 403, "GET {name}: {value}");
    }
    // Other bodies than a form are refused, whatever their origin.
    let r = request(
        addr,
        "POST",
        "/rawman",
        &[("Cookie", &cookie), ("Content-Type", "text/plain")],
        body,
    )
    .await;
    assert_eq!(r.status, 415);
    // amihub's own pages may post forms.
    let own = format!("http://{addr}");
    let r = request(
        addr,
        "POST",
        "/rawman",
        &[
            ("Cookie", &cookie),
            ("Content-Type", form),
            ("Origin", &own),
        ],
        "action=coresettings",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("AMIversion"), "{}", r.body);
    loop {
        let p = tokio::time::timeout(PATIENCE, seen.recv())
            .await
            .expect("action seen")
            .expect("action");
        let name = p.get("Action").unwrap_or("").to_ascii_lowercase();
        assert_ne!(name, "originate", "a cross-site Originate reached the PBX");
        if name == "coresettings" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_replaces_the_session_its_cookie_named_and_bad_logins_are_counted() {
    let (hub, _sims) = hub("", &["pbx1"]).await;
    let auth = basic();
    let m = [("Authorization", auth.as_str())];
    let old = login(hub.addr, "admin", PASSWORD).await;
    let r = get(
        hub.addr,
        &format!("/rawman?action=login&username=admin&secret={PASSWORD}"),
        Some(&old),
    )
    .await;
    let new = r.cookie().expect("cookie");
    assert_ne!(
        new, old,
        "a login always gets a new id (no session fixation)"
    );
    let r = get(hub.addr, "/rawman?action=ping", Some(&old)).await;
    assert!(r.body.contains("Permission denied"), "{}", r.body);
    let r = get(hub.addr, "/rawman?action=ping", Some(&new)).await;
    assert!(r.body.contains("Ping: Pong"), "{}", r.body);
    wait_metric_at(hub.addr, "amihub_ajam_sessions", &m, |n| n == 1).await;
    let before = metric_at(hub.addr, "amihub_ajam_login_failures_total", &m).await;
    let r = get(
        hub.addr,
        "/rawman?action=login&username=admin&secret=nope",
        None,
    )
    .await;
    assert!(r.body.contains("Authentication failed"));
    let after = metric_at(hub.addr, "amihub_ajam_login_failures_total", &m).await;
    assert_eq!(after, before + 1);
    assert_eq!(metric_at(hub.addr, "amihub_ajam_logins_total", &m).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_past_its_share_of_the_action_budget_gets_429() {
    let cfg = "[limits]\nmax_http_actions_per_user = 1\naction_timeout_s = 5\n";
    let (hub, sims) = hub(cfg, &["pbx1"]).await;
    let addr = hub.addr;
    let s = login(addr, "admin", PASSWORD).await;
    sims[0].set_silent(true);
    let mut seen = sims[0].actions();
    let held = s.clone();
    let first = tokio::spawn(async move {
        get(addr, "/rawman?action=corestatus&actionid=a", Some(&held)).await
    });
    // Once the first is at the silent PBX, waiting, the user's only slot is taken.
    loop {
        let p = tokio::time::timeout(PATIENCE, seen.recv())
            .await
            .expect("the first action reached the PBX")
            .expect("action");
        if p.get("Action") == Some("corestatus") {
            break;
        }
    }
    let refused = get(addr, "/rawman?action=corestatus&actionid=b", Some(&s)).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(
        refused.body.starts_with(
            "Response: Error\r\nActionID: b\r\nMessage: user admin has 1 HTTP actions in flight"
        ),
        "{}",
        refused.body
    );
    // amihub's own answers need no slot.
    let r = get(addr, "/rawman?action=ping", Some(&s)).await;
    assert_eq!(r.status, 200);
    let r = first.await.expect("first");
    assert!(
        r.body.starts_with("Response: Error\r\nActionID: a\r\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("timeout"), "{}", r.body);
}
