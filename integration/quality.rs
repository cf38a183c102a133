//! Call quality and endpoint health over real sockets: the real binary, simulated PBXs that
//! generate RTCP (`RTCPSent`/`RTCPReceived` pairs at a fast interval) and, with demo traffic,
//! phones that re-register and go unreachable; `GET /api/v1/servers/{id}/quality` read with
//! tokens of users with and without rights, and the MOS / loss histograms in `/metrics`.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::*;

const OPS: &str = "ops-token-0123456789abcdef";
const EAST: &str = "east-token-0123456789abcdef";
/// RTCP interval of the simulators here: fast, so a degrading call turns bad in about a second.
const RTCP_MS: u64 = 250;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// amihub in front of `sim` as server 1, with an all-seeing `ops` and an `east` user who may
/// only see server 2.
fn config(sim: &SimPbx) -> String {
    format!(
        "{}[[users]]\nname = \"ops\"\ntoken = \"{OPS}\"\nactions = [\"*\"]\n\
         [[users]]\nname = \"east\"\ntoken = \"{EAST}\"\nservers = [\"2\"]\n",
        server_toml(1, "pbx1", sim, "admin", "secret", "ping_interval_s = 3600")
    )
}

async fn quality_sim(demo: bool) -> SimPbx {
    let cfg = SimConfig {
        name: "rtcp-pbx".into(),
        username: "admin".into(),
        secret: "secret".into(),
        demo_traffic: demo,
        demo_interval_ms: 300,
        rtcp_interval_ms: RTCP_MS,
        ..SimConfig::default()
    };
    SimPbx::start("127.0.0.1:0", cfg)
        .await
        .expect("start simulator")
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, body) = http_to(addr, "GET", path, &headers, "").await;
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

/// Polls `path` (as `ops`) until `pred` holds on its JSON; returns it.
async fn wait_quality(
    addr: SocketAddr,
    path: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, v) = get(addr, path, Some(OPS)).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

fn call_of<'a>(v: &'a Value, prefix: &str) -> Option<&'a Value> {
    v["calls"].as_array()?.iter().find(|c| {
        c["channel"]
            .as_str()
            .is_some_and(|ch| ch.starts_with(prefix))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degrading_call_turns_bad_in_the_quality_api_and_the_histograms() {
    let sim = quality_sim(false).await;
    let hub = Amihub::start(&config(&sim));
    wait_connected_as(hub.addr, &bearer(OPS)).await;
    // Extension 113 is the simulator's phone on bad Wi-Fi: two clean reports, then loss.
    let auth = bearer(OPS);
    let (status, body) = http_to(
        hub.addr,
        "POST",
        "/api/v1/servers/1/actions",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        r#"{"Action":"Originate","Channel":"PJSIP/113","Application":"Wait","Data":"60","Async":"true"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let path = "/api/v1/servers/1/quality?limit=50";
    let good = wait_quality(hub.addr, path, "a good first report", |v| {
        call_of(v, "PJSIP/113-").is_some_and(|c| c["grade"] == "good")
    })
    .await;
    let first = call_of(&good, "PJSIP/113-").expect("the call");
    let seen_good = Instant::now();
    // Both directions: RTCPSent (inbound, no RTT) and RTCPReceived (outbound, Asterisk's RTT).
    assert_eq!(first["endpoint"], "PJSIP/113");
    assert!(first["inbound"]["rtt_ms"].is_null(), "{first}");
    let rtt = first["outbound"]["rtt_ms"].as_f64().expect("an RTT");
    assert!((20.0..=60.0).contains(&rtt), "{first}");
    assert_eq!(good["thresholds"]["loss_bad_pct"], 5.0);

    let bad = wait_quality(hub.addr, path, "the call going bad", |v| {
        call_of(v, "PJSIP/113-").is_some_and(|c| c["grade"] == "bad")
    })
    .await;
    // Good for two reports at most, bad from the third: within a few intervals of the first.
    assert!(
        seen_good.elapsed() < Duration::from_millis(RTCP_MS * 4 + 1500),
        "took {:?}",
        seen_good.elapsed()
    );
    let call = call_of(&bad, "PJSIP/113-").expect("the call");
    let loss = call["worst"]["loss_pct"].as_f64().expect("loss");
    assert!((7.0..=15.0).contains(&loss), "{call}");
    assert!(call["worst"]["mos"].as_f64() < Some(3.6), "{call}");
    assert_eq!(bad["calls"][0]["channel"], call["channel"], "worst first");
    assert!(bad["bad_calls"].as_u64() >= Some(1));
    let ep = &bad["endpoints"][0];
    assert_eq!(ep["endpoint"], "PJSIP/113");
    assert_eq!(ep["grade"], "bad");

    // One endpoint's bucket series, and its changes (none for this phone).
    let (status, detail) = get(
        hub.addr,
        "/api/v1/servers/1/quality?endpoint=PJSIP%2F113&limit=1",
        Some(OPS),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["endpoint"]["name"], "PJSIP/113");
    let series = detail["endpoint"]["quality"]["series"]
        .as_array()
        .expect("bucket series");
    assert!(!series.is_empty());
    assert!(series.iter().any(|b| b["grade"] == "bad"), "{series:?}");
    assert_eq!(detail["calls"].as_array().map(Vec::len), Some(1));

    // The same state is in /state, as per-call series.
    let (_, state) = get(hub.addr, "/api/v1/servers/1/state", Some(OPS)).await;
    let channel = call["channel"].as_str().expect("channel");
    let calls = &state["state"]["quality"]["calls"];
    assert!(
        calls[channel]["series"].as_array().map(Vec::len) >= Some(4),
        "{calls}"
    );

    // Every report block went into the histograms; the bad ones into the low MOS buckets.
    let mos_count = metric_at(
        hub.addr,
        "amihub_rtcp_mos_count",
        &[("Authorization", &auth)],
    )
    .await;
    assert!(mos_count >= 4, "{mos_count}");
    let poor = metric_at(
        hub.addr,
        "amihub_rtcp_mos_bucket{le=\"3.6\"}",
        &[("Authorization", &auth)],
    )
    .await;
    assert!(poor >= 1, "{poor}");
    let lossy = metric_at(
        hub.addr,
        "amihub_rtcp_loss_percent_bucket{le=\"5\"}",
        &[("Authorization", &auth)],
    )
    .await;
    let all = metric_at(
        hub.addr,
        "amihub_rtcp_loss_percent_count",
        &[("Authorization", &auth)],
    )
    .await;
    assert!(
        lossy < all,
        "some reports lost more than 5 %: {lossy} of {all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quality_api_checks_rights_and_input() {
    let sim = quality_sim(false).await;
    let hub = Amihub::start(&config(&sim));
    wait_connected_as(hub.addr, &bearer(OPS)).await;
    let path = "/api/v1/servers/1/quality";
    let (status, _) = get(hub.addr, path, None).await;
    assert_eq!(status, 401);
    // A server the user may not see answers exactly as one that does not exist.
    let (status, hidden) = get(hub.addr, path, Some(EAST)).await;
    let (status_none, none) = get(hub.addr, "/api/v1/servers/9/quality", Some(EAST)).await;
    assert_eq!((status, status_none), (404, 404), "{hidden} {none}");
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?colour=red",
        "?endpoint=",
    ] {
        let (status, v) = get(hub.addr, &format!("{path}{bad}"), Some(OPS)).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }
    let long = format!("{path}?endpoint={}", "x".repeat(201));
    assert_eq!(get(hub.addr, &long, Some(OPS)).await.0, 400);
    // No calls yet: an empty, well-formed summary.
    let (status, v) = get(hub.addr, path, Some(OPS)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["active_calls"], 0);
    assert_eq!(v["calls"], serde_json::json!([]));
    assert_eq!(v["window_s"], 900);
    assert_eq!(v["server_id"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_phones_change_user_agent_and_address_and_one_goes_unreachable() {
    let sim = quality_sim(true).await;
    let hub = Amihub::start(&config(&sim));
    wait_connected_as(hub.addr, &bearer(OPS)).await;
    let path = "/api/v1/servers/1/quality?endpoint=PJSIP%2F117";
    let v = wait_quality(hub.addr, path, "117's user agent change", |v| {
        v["endpoint"]["health"]["changes"]
            .as_array()
            .is_some_and(|log| {
                log.iter().any(|c| {
                    c["field"] == "user_agent"
                        && c["from"]
                            .as_str()
                            .is_some_and(|f| f.starts_with("Linphone"))
                        && c["to"].as_str().is_some_and(|t| t.starts_with("Zoiper"))
                })
            })
    })
    .await;
    let health = &v["endpoint"]["health"];
    assert_eq!(health["address"], "203.0.113.45:52114");
    assert_eq!(health["status"], "Reachable");
    let log = health["changes"].as_array().expect("log");
    assert!(
        log.iter().any(|c| c["field"] == "address"
            && c["from"] == "198.51.100.17:5060"
            && c["to"] == "203.0.113.45:52114"),
        "{log:?}"
    );
    // The old contact's removal did not count as 117 going away.
    assert!(!log.iter().any(|c| c["to"] == "Removed"), "{log:?}");
    let v = wait_quality(
        hub.addr,
        "/api/v1/servers/1/quality",
        "120 unreachable",
        |v| {
            v["unreachable"]
                .as_array()
                .is_some_and(|u| u.iter().any(|e| e == "PJSIP/120"))
        },
    )
    .await;
    assert!(!v["unreachable"]
        .as_array()
        .is_some_and(|u| u.iter().any(|e| e == "PJSIP/117")));
    // Demo calls report quality too.
    wait_quality(
        hub.addr,
        "/api/v1/servers/1/quality",
        "demo call quality",
        |v| v["active_calls"].as_u64() > Some(0),
    )
    .await;
}
