//! The AMI listener over real sockets (SPEC §8): the real binary, simulated PBXs, raw AMI
//! clients compared byte for byte with what Asterisk 22 sends (integration/captures), and the
//! real client libraries panoramisk (Python) and asterisk-manager (Node).

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use amihub::sim::FloodSpec;
use base64::Engine;
use support::ami::{header, AmiClient, AmiRead};
use support::*;

const PASSWORD: &str = "amp111";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

/// The users of every scenario: `admin` (password and ami_secret amp111, as in the captures,
/// every action) and `viewer` (a token, the read-only default set).
fn users() -> String {
    let hash = amihub::auth::hash_password(PASSWORD).expect("hash");
    format!(
        "[[users]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nami_secret = \"{PASSWORD}\"\nactions = [\"*\"]\nadmin = true\n\
         [[users]]\nname = \"viewer\"\ntoken = \"{VIEWER_TOKEN}\"\n"
    )
}

fn listener(extra: &str) -> String {
    format!("[ami_listener]\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

/// A hub with one simulator (`pbx1`), the users above and the AMI listener.
async fn hub_with_one(extra: &str) -> (Amihub, SimPbx) {
    let sim = sim("pbx1").await;
    let cfg = format!(
        "{}{}{}",
        listener(extra),
        server_toml(1, "pbx1", &sim, "admin", "secret", ""),
        users()
    );
    let hub = Amihub::start(&cfg);
    wait_connected(&hub, 1).await;
    (hub, sim)
}

/// Polls `GET /api/v1/servers` (as admin) until server `id` is Connected.
async fn wait_connected(hub: &Amihub, id: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = hub
            .http("GET", "/api/v1/servers", &[("Authorization", &basic())], "")
            .await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let connected = v["servers"].as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["id"] == id && s["status"] == "Connected")
        });
        if connected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server {id} never connected: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn capture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("integration/captures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Values that differ per run (`Timestamp: 1795353464.068681`) as `Timestamp: <t>`.
fn normalise(text: &str) -> String {
    text.split("\r\n")
        .map(|line| match line.split_once(": ") {
            Some(("Timestamp", _)) => "Timestamp: <t>".to_string(),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Everything amihub sends until it closes the connection.
async fn rest_of_stream(c: &mut AmiClient) -> String {
    let mut out = String::new();
    loop {
        match c.read(PATIENCE).await {
            AmiRead::Packet(p) => out.push_str(&p),
            AmiRead::Closed => return out,
            AmiRead::Timeout => panic!("connection still open after {out:?}"),
        }
    }
}

fn basic() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    format!("Basic {b64}")
}

async fn metric(hub: &Amihub, name: &str) -> u64 {
    metric_at(hub.addr, name, &[("Authorization", &basic())]).await
}

/// Replays a capture's client bytes and expects the capture's server bytes, banner first.
async fn replay(hub: &Amihub, name: &str) -> Duration {
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    let started = Instant::now();
    c.send(&capture(&format!("{name}.sent.txt"))).await;
    let rest = rest_of_stream(&mut c).await;
    let got = format!("{}{rest}", c.banner);
    assert_eq!(
        normalise(&got),
        normalise(&capture(&format!("{name}.txt"))),
        "{name}"
    );
    started.elapsed()
}

#[tokio::test]
async fn login_ping_logoff_are_byte_exact_as_asterisk() {
    let (hub, _sim) = hub_with_one("").await;
    replay(&hub, "01_banner_login_ping_logoff").await;
    assert_eq!(metric(&hub, "amihub_ami_logins_total").await, 1);
}

#[tokio::test]
async fn actions_before_login_are_denied_as_asterisk_does() {
    let (hub, sim) = hub_with_one("").await;
    let before = sim.stats().actions;
    replay(&hub, "04_actions_before_login").await;
    assert_eq!(sim.stats().actions, before, "nothing reached the PBX");
}

#[tokio::test]
async fn a_bad_secret_is_answered_after_a_delay_then_closed_and_counted() {
    let (hub, _sim) = hub_with_one("").await;
    let took = replay(&hub, "03_login_bad_secret").await;
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert_eq!(metric(&hub, "amihub_ami_login_failures_total").await, 1);
}

#[tokio::test]
async fn an_address_over_the_failure_limit_is_refused_even_the_right_secret_while_another_logs_in()
{
    let (hub, _sim) = hub_with_one("").await;
    let limited: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    let mut failing = tokio::task::JoinSet::new();
    for i in 0..amihub::auth::limiter::MAX_FAILURES {
        let addr = hub.ami_addr();
        failing.spawn(async move {
            let mut c = AmiClient::connect_from(addr, limited).await;
            c.send(&format!(
                "Action: Login\r\nActionID: bad-{i}\r\nUsername: viewer\r\nSecret: wrong\r\n\r\n"
            ))
            .await;
            let reply = c.packet().await;
            assert_eq!(header(&reply, "Message"), Some("Authentication failed"));
            assert!(c.closed().await);
        });
    }
    while let Some(done) = failing.join_next().await {
        done.expect("a failing login");
    }
    let mut c = AmiClient::connect_from(hub.ami_addr(), limited).await;
    c.send(&format!(
        "Action: Login\r\nActionID: right\r\nUsername: admin\r\nSecret: {PASSWORD}\r\n\r\n"
    ))
    .await;
    assert_eq!(
        c.packet().await,
        "Response: Error\r\nActionID: right\r\nMessage: Authentication failed\r\n\r\n",
        "the right secret from a limited address"
    );
    assert!(c.closed().await, "closed as for a bad secret");
    let (status, _) = hub
        .http("GET", "/api/v1/servers", &[("Authorization", &basic())], "")
        .await;
    assert_eq!(status, 429, "HTTP from the same address shares the count");
    let other: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
    let mut c = AmiClient::connect_from(hub.ami_addr(), other).await;
    c.login("admin", PASSWORD, "off").await;
}

#[tokio::test]
async fn challenge_md5_login_and_a_bad_key() {
    let (hub, _sim) = hub_with_one("").await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.send("Action: Challenge\r\nActionID: challenge-80\r\nAuthType: MD5\r\n\r\n")
        .await;
    let reply = c.packet().await;
    let challenge = header(&reply, "Challenge")
        .expect("a challenge")
        .to_string();
    assert_eq!(
        reply,
        format!("Response: Success\r\nActionID: challenge-80\r\nChallenge: {challenge}\r\n\r\n")
    );
    assert!(
        challenge.len() == 32 && challenge.bytes().all(|b| b.is_ascii_hexdigit()),
        "128 random bits: {challenge}"
    );
    let key = amihub::amisrv::login::md5_key(&challenge, PASSWORD);
    c.send(&format!(
        "Action: Login\r\nActionID: login-81\r\nAuthType: MD5\r\nUsername: admin\r\nKey: {key}\r\nEvents: off\r\n\r\n"
    ))
    .await;
    assert_eq!(
        c.packet().await,
        "Response: Success\r\nActionID: login-81\r\nMessage: Authentication accepted\r\n\r\n"
    );
    c.send("Action: Logoff\r\nActionID: logoff-83\r\n\r\n")
        .await;
    assert_eq!(
        rest_of_stream(&mut c).await,
        "Response: Goodbye\r\nActionID: logoff-83\r\nMessage: Thanks for all the fish.\r\n\r\n"
    );

    // The bad key of capture 17, against a fresh (and different) challenge.
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.send("Action: Challenge\r\nActionID: challenge-84\r\nAuthType: MD5\r\n\r\n")
        .await;
    let reply = c.packet().await;
    assert_ne!(header(&reply, "Challenge"), Some(challenge.as_str()));
    c.send("Action: Login\r\nActionID: login-85\r\nAuthType: MD5\r\nUsername: admin\r\nKey: 00000000000000000000000000000000\r\n\r\n").await;
    assert_eq!(
        rest_of_stream(&mut c).await,
        "Response: Error\r\nActionID: login-85\r\nMessage: Authentication failed\r\n\r\n"
    );
}

#[tokio::test]
async fn a_login_for_another_user_on_an_open_connection_is_refused() {
    let (hub, _sim) = hub_with_one("").await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("viewer", VIEWER_TOKEN, "off").await;
    c.send(&format!(
        "Action: Login\r\nActionID: again\r\nUsername: admin\r\nSecret: {PASSWORD}\r\n\r\n"
    ))
    .await;
    let reply = c.packet().await;
    assert!(
        reply.starts_with("Response: Error\r\nActionID: again\r\n"),
        "{reply}"
    );
    // Still the viewer: an action outside its rights stays refused.
    c.send("Action: Command\r\nActionID: cmd\r\nCommand: core show uptime\r\n\r\n")
        .await;
    assert_eq!(
        c.packet().await,
        "Response: Error\r\nActionID: cmd\r\nMessage: Permission denied\r\n\r\n"
    );
}

#[tokio::test]
async fn a_connection_that_does_not_log_in_is_closed_after_auth_timeout() {
    let (hub, _sim) = hub_with_one("auth_timeout_s = 1").await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    let started = Instant::now();
    assert!(c.closed().await);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn two_clients_with_the_same_action_id_each_get_only_their_own_replies() {
    let (hub, _sim) = hub_with_one("").await;
    let mut a = AmiClient::connect(hub.ami_addr()).await;
    let mut b = AmiClient::connect(hub.ami_addr()).await;
    a.login("admin", PASSWORD, "off").await;
    b.login("viewer", VIEWER_TOKEN, "off").await;
    // Through the PBX (Server: given), not answered locally.
    a.send("Action: CoreStatus\r\nActionID: same\r\nServer: pbx1\r\n\r\n")
        .await;
    let ra = a.packet().await;
    assert!(
        ra.starts_with("Response: Success\r\nActionID: same\r\n"),
        "{ra}"
    );
    assert_eq!(header(&ra, "Server"), Some("pbx1"));
    b.send("Action: QueueStatus\r\nActionID: same\r\nServer: pbx1\r\n\r\n")
        .await;
    let (done, items) = b
        .packet_where(|p| header(p, "Event") == Some("QueueStatusComplete"))
        .await;
    assert_eq!(header(&done, "ActionID"), Some("same"));
    assert!(items.iter().all(|p| header(p, "ActionID") == Some("same")));
    assert!(items
        .iter()
        .all(|p| header(p, "CoreCurrentCalls").is_none()));
    // Markers through the PBX: anything misrouted would have come before them.
    for (c, name) in [(&mut a, "a"), (&mut b, "b")] {
        c.send(&format!(
            "Action: Ping\r\nActionID: end-{name}\r\nServer: pbx1\r\n\r\n"
        ))
        .await;
        let (end, skipped) = c
            .packet_where(|p| header(p, "ActionID") == Some(&format!("end-{name}")))
            .await;
        assert!(end.contains("Ping: Pong"), "{end}");
        assert!(
            skipped.is_empty(),
            "client {name} got others' replies: {skipped:?}"
        );
    }
}

#[tokio::test]
async fn an_action_without_action_id_gets_its_reply_without_one() {
    let (hub, _sim) = hub_with_one("").await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("admin", PASSWORD, "off").await;
    c.send("Action: Command\r\nCommand: core show uptime\r\n\r\n")
        .await;
    let reply = c.packet().await;
    assert!(header(&reply, "ActionID").is_none(), "{reply}");
    assert!(reply.contains("\r\nOutput: System uptime: "), "{reply}");
    assert!(reply.ends_with("Server: pbx1\r\n\r\n"), "{reply}");
}

#[tokio::test]
async fn a_viewers_originate_is_refused_and_never_reaches_the_pbx() {
    let (hub, sim) = hub_with_one("").await;
    let mut seen = sim.actions();
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("viewer", VIEWER_TOKEN, "off").await;
    c.send("Action: Originate\r\nActionID: o1\r\nChannel: Local/100@demo\r\nApplication: Wait\r\nData: 1\r\n\r\n")
        .await;
    assert_eq!(
        c.packet().await,
        "Response: Error\r\nActionID: o1\r\nMessage: Permission denied\r\n\r\n"
    );
    // A permitted action after it reaches the PBX; the Originate never did.
    c.send("Action: CoreStatus\r\nActionID: after\r\n\r\n")
        .await;
    let reply = c.packet().await;
    assert!(
        reply.starts_with("Response: Success\r\nActionID: after\r\n"),
        "{reply}"
    );
    while let Ok(p) = seen.try_recv() {
        assert_ne!(p.get("Action"), Some("Originate"), "{p:?}");
    }
    assert!(metric(&hub, "amihub_actions_refused_total").await >= 1);
}

/// The hardening rule applies here too: `Status` with `Variables` makes Asterisk evaluate them
/// (AST_CONFIG reads manager.conf), so a read-only user may not send it.
#[tokio::test]
async fn a_viewers_status_with_variables_is_refused_and_never_reaches_the_pbx() {
    let (hub, sim) = hub_with_one("").await;
    let mut seen = sim.actions();
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("viewer", VIEWER_TOKEN, "off").await;
    c.send("Action: Status\r\nActionID: s1\r\nVariables: AST_CONFIG(manager.conf,admin,secret)\r\n\r\n")
        .await;
    let reply = c.packet().await;
    assert!(
        reply.starts_with("Response: Error\r\nActionID: s1\r\nMessage: Header Variables of Status is not permitted"),
        "{reply}"
    );
    c.send("Action: Status\r\nActionID: s2\r\n\r\n").await;
    let (done, _) = c
        .packet_where(|p| header(p, "Event") == Some("StatusComplete"))
        .await;
    assert_eq!(header(&done, "ActionID"), Some("s2"));
    while let Ok(p) = seen.try_recv() {
        assert!(p.get("Variables").is_none(), "reached the PBX: {p:?}");
    }
}

#[tokio::test]
async fn actions_are_routed_by_server_header_default_or_refused_naming_the_choices() {
    let (s1, s2) = (sim("east").await, sim("west").await);
    let hash = amihub::auth::hash_password(PASSWORD).expect("hash");
    let cfg = format!(
        "{}{}{}[[users]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nactions = [\"*\"]\n\
         [[users]]\nname = \"westie\"\ntoken = \"{VIEWER_TOKEN}\"\nami_default_server = \"west\"\n",
        listener(""),
        server_toml(1, "east", &s1, "admin", "secret", ""),
        server_toml(2, "west", &s2, "admin", "secret", ""),
    );
    let hub = Amihub::start(&cfg);
    wait_connected(&hub, 1).await;
    wait_connected(&hub, 2).await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("admin", PASSWORD, "off").await;
    for (server, name) in [("east", "east"), ("2", "west"), ("WEST", "west")] {
        c.send(&format!(
            "Action: CoreStatus\r\nActionID: r\r\nServer: {server}\r\n\r\n"
        ))
        .await;
        let reply = c.packet().await;
        assert_eq!(header(&reply, "Server"), Some(name), "{reply}");
    }
    c.send("Action: CoreStatus\r\nActionID: which\r\n\r\n")
        .await;
    let reply = c.packet().await;
    assert!(
        reply.starts_with("Response: Error\r\nActionID: which\r\n")
            && reply.contains("east (1)")
            && reply.contains("west (2)"),
        "{reply}"
    );
    c.send("Action: CoreStatus\r\nActionID: nope\r\nServer: north\r\n\r\n")
        .await;
    let reply = c.packet().await;
    assert!(reply.contains("Unknown server \"north\""), "{reply}");
    // The Server header is amihub's: it never reaches the PBX.
    let mut seen = s1.actions();
    c.send("Action: Ping\r\nActionID: p\r\nServer: east\r\n\r\n")
        .await;
    c.packet().await;
    let got = seen.recv().await.expect("the Ping reached east");
    assert!(got.get("Server").is_none(), "{got:?}");

    let mut w = AmiClient::connect(hub.ami_addr()).await;
    w.login("westie", VIEWER_TOKEN, "off").await;
    w.send("Action: CoreStatus\r\nActionID: d\r\n\r\n").await;
    assert_eq!(header(&w.packet().await, "Server"), Some("west"));
}

#[tokio::test]
async fn events_carry_the_server_and_follow_the_event_mask_and_filters() {
    let (hub, sim) = hub_with_one("").await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("admin", PASSWORD, "user").await;
    sim.emit(&[
        ("Event", "Newchannel"),
        ("Privilege", "call,all"),
        ("Channel", "X"),
    ]);
    sim.emit(&[
        ("Event", "UserEvent"),
        ("Privilege", "user,all"),
        ("UserEvent", "One"),
    ]);
    let p = c.packet().await;
    assert_eq!(
        p,
        "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: One\r\nServer: pbx1\r\n\r\n"
    );
    c.send("Action: Filter\r\nActionID: f\r\nOperation: Add\r\nFilter: !UserEvent: Skip\r\n\r\n")
        .await;
    assert_eq!(
        c.packet().await,
        "Response: Success\r\nActionID: f\r\nMessage: Filter Added Successfully\r\n\r\n"
    );
    c.send("Action: Events\r\nActionID: e\r\nEventMask: on\r\n\r\n")
        .await;
    assert_eq!(
        c.packet().await,
        "Response: Success\r\nActionID: e\r\nEvents: On\r\n\r\n"
    );
    sim.emit(&[
        ("Event", "UserEvent"),
        ("Privilege", "user,all"),
        ("UserEvent", "Skip"),
    ]);
    sim.emit(&[
        ("Event", "Hangup"),
        ("Privilege", "call,all"),
        ("Channel", "Y"),
    ]);
    let p = c.packet().await;
    assert_eq!(header(&p, "Event"), Some("Hangup"), "{p}");
    c.send("Action: Events\r\nActionID: off\r\nEventMask: off\r\n\r\n")
        .await;
    assert_eq!(
        c.packet().await,
        "Response: Success\r\nActionID: off\r\nEvents: Off\r\n\r\n"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_loose_while_another_keeps_getting_events() {
    let (hub, sim) = hub_with_one("[limits]\nsession_queue_bytes = 262144\n").await;
    let mut stalled = AmiClient::connect(hub.ami_addr()).await;
    stalled.login("admin", PASSWORD, "on").await;
    let mut reader = AmiClient::connect(hub.ami_addr()).await;
    reader.login("viewer", VIEWER_TOKEN, "on").await;
    // The reader reads all the time, in a task of its own, counting flood events.
    let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = got.clone();
    let reading = tokio::spawn(async move {
        loop {
            match reader.read(PATIENCE).await {
                AmiRead::Packet(p) if header(&p, "UserEvent") == Some("Flood") => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                AmiRead::Packet(_) => {}
                other => return other,
            }
        }
    });
    sim.flood(FloodSpec {
        rate_per_s: Some(2000),
        count: None,
        event_bytes: 600,
    });
    let cuts = "amihub_ami_slow_consumer_closes_total";
    let deadline = Instant::now() + Duration::from_secs(40);
    while metric(&hub, cuts).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never cut"
        );
        assert!(!reading.is_finished(), "the reader's stream ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The reader keeps receiving after the cut.
    let after = got.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    while got.load(std::sync::atomic::Ordering::Relaxed) < after + 1000 {
        assert!(
            Instant::now() < deadline,
            "the reader stopped getting events"
        );
        assert!(!reading.is_finished(), "the reader's stream ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.stop_flood();
    assert!(
        stalled.closed().await,
        "the stalled client's connection is closed"
    );
    assert_eq!(
        metric(&hub, cuts).await,
        1,
        "only the stalled client was cut"
    );
    reading.abort();
}

#[tokio::test]
async fn a_pbx_that_goes_down_fails_the_actions_in_flight_and_tells_its_clients() {
    let (hub, sim) = hub_with_one("").await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("admin", PASSWORD, "on").await;
    let mut seen = sim.actions();
    sim.set_silent(true);
    c.send("Action: CoreStatus\r\nActionID: inflight-1\r\n\r\nAction: CoreSettings\r\nActionID: inflight-2\r\n\r\n")
        .await;
    let mut reached = 0;
    while reached < 2 {
        let p = seen.recv().await.expect("sim actions");
        reached += usize::from(matches!(
            p.get("Action"),
            Some("CoreStatus" | "CoreSettings")
        ));
    }
    sim.set_refuse(true);
    sim.kill_connections();
    let mut failed = Vec::new();
    let mut status = None;
    while failed.len() < 2 || status.is_none() {
        let p = c.packet().await;
        if p.starts_with("Response: Error\r\n") {
            failed.push(header(&p, "ActionID").unwrap_or("").to_string());
            assert_eq!(header(&p, "Server"), Some("pbx1"), "{p}");
        } else if header(&p, "Event") == Some("ServerStatus") {
            assert_eq!(header(&p, "Server"), Some("pbx1"), "{p}");
            status = header(&p, "Status").map(str::to_string);
        }
    }
    failed.sort();
    assert_eq!(failed, ["inflight-1", "inflight-2"]);
    assert_eq!(status.as_deref(), Some("Disconnected"));
    // While it is down, an action is answered with an error at once, never dropped.
    c.send("Action: CoreStatus\r\nActionID: down\r\n\r\n").await;
    let (p, _) = c
        .packet_where(|p| header(p, "ActionID") == Some("down"))
        .await;
    assert!(
        p.starts_with("Response: Error\r\n") && p.contains("not connected"),
        "{p}"
    );
}

#[tokio::test]
async fn proxy_actions_answer_with_their_action_id() {
    let (hub, _sim) = hub_with_one("").await;
    let mut c = AmiClient::connect(hub.ami_addr()).await;
    c.login("viewer", VIEWER_TOKEN, "off").await;
    c.send("Action: Proxy\r\nActionID: ls\r\nProxyAction: ListServers\r\n\r\n")
        .await;
    let p = c.packet().await;
    assert!(
        p.starts_with("Response: Success\r\nActionID: ls\r\nProxyAction: ListServers\r\n")
            && p.contains("Server: pbx1\r\nServerID: 1\r\nStatus: Connected\r\n"),
        "{p}"
    );
    c.send("Action: Proxy\r\nActionID: s\r\nProxyAction: ListSessions\r\n\r\n")
        .await;
    assert_eq!(
        c.packet().await,
        "Response: Error\r\nActionID: s\r\nMessage: Permission denied\r\n\r\n",
        "admin only"
    );
    c.send("Action: Proxy\r\nActionID: io\r\nProxyAction: ListIOHandlers\r\n\r\n")
        .await;
    let p = c.packet().await;
    assert!(
        p.contains("IOHandler: xml\r\n") && p.contains("ActionID: io\r\n"),
        "{p}"
    );
    c.send(
        "Action: Proxy\r\nActionID: x\r\nProxyAction: SetOutputFormat\r\nOutputFormat: xml\r\n\r\n",
    )
    .await;
    c.packet().await;
    c.send("Action: CoreStatus\r\nActionID: <&>\r\n\r\n").await;
    let text = c.text_until("</AsteriskManagerOutput>\r\n").await;
    assert!(
        text.starts_with("<AsteriskManagerOutput>\r\n<Response Value=\"Success\"/>\r\n<ActionID Value=\"&lt;&amp;&gt;\"/>\r\n"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Real client libraries
// ---------------------------------------------------------------------------------------------

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration/ami_clients")
}

/// Installs panoramisk and asterisk-manager (setup.sh) once if they are missing.
fn ensure_clients() {
    let dir = clients_dir();
    let ready = dir.join(".venv/bin/python").exists()
        && dir
            .join("node_modules/asterisk-manager/package.json")
            .exists();
    if !ready {
        let status = Command::new("bash")
            .arg(dir.join("setup.sh"))
            .status()
            .expect("run integration/ami_clients/setup.sh");
        assert!(status.success(), "integration/ami_clients/setup.sh failed");
    }
}

/// Runs one library script against the hub; it prints `OK` when every check passed.
async fn run_client(program: &str, script: &str, hub: &Amihub, collide: bool) {
    let dir = clients_dir();
    let addr = hub.ami_addr();
    // A path inside integration/ami_clients, or a program on PATH.
    let program = if program.starts_with('.') {
        dir.join(program)
    } else {
        PathBuf::from(program)
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(dir.join(script))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("admin")
        .arg(PASSWORD)
        .arg(if collide { "collide" } else { "alone" })
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the client finished")
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "{script} {collide}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn panoramisk_works_alone_and_beside_a_client_with_colliding_action_ids() {
    ensure_clients();
    let (hub, _sim) = hub_with_one("").await;
    run_client(".venv/bin/python", "panoramisk_check.py", &hub, false).await;
    run_client(".venv/bin/python", "panoramisk_check.py", &hub, true).await;
}

#[tokio::test]
async fn asterisk_manager_works_alone_and_beside_a_client_with_colliding_action_ids() {
    ensure_clients();
    let (hub, _sim) = hub_with_one("").await;
    run_client("node", "asterisk_manager_check.js", &hub, false).await;
    run_client("node", "asterisk_manager_check.js", &hub, true).await;
}

#[tokio::test]
async fn the_listener_over_tls_greets_logs_in_and_pongs_and_a_plain_client_gets_no_banner() {
    use std::pin::Pin;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = support::pki::pki("amihub AMI test CA");
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key, ca) = p.write(dir.path());
    let (hub, _sim) = hub_with_one(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    ))
    .await;
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).expect("tls");
    b.set_ca_file(&ca).expect("ca");
    let ssl = b
        .build()
        .configure()
        .expect("config")
        .into_ssl("127.0.0.1")
        .expect("ssl");
    let tcp = tokio::net::TcpStream::connect(hub.ami_addr())
        .await
        .expect("connect");
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
    Pin::new(&mut tls).connect().await.expect("handshake");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_until =
        async |tls: &mut tokio_openssl::SslStream<_>, got: &mut Vec<u8>, needle: &str| {
            while !String::from_utf8_lossy(got).contains(needle) {
                let n = tokio::time::timeout(PATIENCE, tls.read(&mut chunk))
                    .await
                    .expect("in time")
                    .expect("read");
                assert!(
                    n > 0,
                    "closed before {needle:?}: {}",
                    String::from_utf8_lossy(got)
                );
                got.extend_from_slice(&chunk[..n]);
            }
        };
    read_until(&mut tls, &mut got, "\r\n").await;
    assert!(String::from_utf8_lossy(&got).starts_with("Asterisk Call Manager/11.0.0\r\n"));
    tls.write_all(
        format!("Action: Login\r\nActionID: l\r\nUsername: admin\r\nSecret: {PASSWORD}\r\nEvents: off\r\n\r\nAction: Ping\r\nActionID: p\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    read_until(&mut tls, &mut got, "ActionID: p\r\n").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.contains("Response: Success\r\nActionID: l\r\nMessage: Authentication accepted\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Response: Success\r\nActionID: p\r\nPing: Pong\r\n"),
        "{text}"
    );
    let mut plain = tokio::net::TcpStream::connect(hub.ami_addr())
        .await
        .expect("connect");
    plain
        .write_all(b"Action: Ping\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut seen)).await;
    assert!(
        !String::from_utf8_lossy(&seen).contains("Asterisk Call Manager"),
        "a plain client got {seen:?}"
    );
}
