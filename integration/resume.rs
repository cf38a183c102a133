//! Resume after a reconnect (SPEC §10) over real sockets: the real binary, simulated PBXs, real
//! WebSocket clients that drop their socket and come back with `?resume=` or
//! `{"ProxyAction":"Resume"}`.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use amihub::sim::FloodSpec;
use serde_json::{json, Value};

use support::*;

const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

fn one_server(sim: &SimPbx, extra: &str) -> String {
    server_toml(1, "pbx1", sim, "admin", "secret", extra)
}

fn is_flood(v: &Value) -> bool {
    is_event(v, 1, "UserEvent") && v["data"]["UserEvent"] == "Flood"
}

fn seq_of(v: &Value) -> u64 {
    v["data"]["Seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("flood event without a numeric Seq: {v}"))
}

/// One event from the simulator, tagged so the test can find it.
fn emit(sim: &SimPbx, event: &str, tag: &str) {
    sim.emit(&[
        ("Event", event),
        ("Privilege", "call,all"),
        ("Channel", "PJSIP/100-00000001"),
        ("Uniqueid", tag),
    ]);
}

fn tag_of(v: &Value) -> Option<&str> {
    (v["type"] == 3).then(|| v["data"]["Uniqueid"].as_str())?
}

/// Emits `events` (name, tag) and waits until `watcher` (connected throughout) saw the last.
async fn emit_all(sim: &SimPbx, watcher: &mut Client, events: &[(&str, String)]) {
    for (name, tag) in events {
        emit(sim, name, tag);
    }
    let last = events.last().map(|(_, t)| t.clone()).expect("events");
    watcher
        .wait_for("the last emitted event", |v| tag_of(v) == Some(&last))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_for_two_seconds_in_a_flood_gets_every_seq_exactly_once() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[limits]\nsession_queue_bytes = 16777216\n{}",
        one_server(&pbx, "")
    ));
    hub.wait_status(1, "Connected").await;
    let mut first = hub.ws().await;
    first
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.flood(FloodSpec {
        rate_per_s: Some(2000),
        count: None,
        event_bytes: 400,
    });
    first
        .wait_for("500 flood events", |v| is_flood(v) && seq_of(v) >= 500)
        .await;
    let (epoch, offset) = last_position(&first, 1);
    let before = std::mem::take(&mut first.seen);
    drop(first);
    // The outage itself: the socket is gone for two seconds while the flood goes on.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let url = hub.ws_url(&format!("/ws?resume=1:{epoch}:{offset}"));
    let started = std::time::Instant::now();
    let mut back = Client::connect(&url).await;
    let reply = back.wait_for("the Resume reply", is_resume_reply).await;
    let took = started.elapsed();
    let replayed = reply["data"]["Servers"]["1"]["Replayed"]
        .as_u64()
        .unwrap_or_else(|| panic!("not resumed: {reply}"));
    eprintln!(
        "resume: {replayed} frames replayed and parsed in {took:?} ({:.0} frames/s, connect included)",
        replayed as f64 / took.as_secs_f64()
    );
    assert!(replayed >= 3000, "only {replayed} frames replayed: {reply}");
    let resumed_at = back.seen.iter().rev().find(|v| is_flood(v)).map(seq_of);
    let target = resumed_at.expect("replayed flood events") + 1000;
    back.wait_for("1000 live flood events after the replay", |v| {
        is_flood(v) && seq_of(v) >= target
    })
    .await;
    pbx.stop_flood();

    let all: Vec<&Value> = before.iter().chain(&back.seen).collect();
    let seqs: Vec<u64> = all
        .iter()
        .filter(|v| is_flood(v))
        .map(|v| seq_of(v))
        .collect();
    assert_eq!(seqs.first(), Some(&1));
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a Seq was lost, doubled or reordered");
    }
    // Offsets run on without a hole across the two connections, in one epoch.
    assert_offsets_run_on(&all, 1, &epoch, offset);
    let m = metric_at(hub.addr, "amihub_resume_frames_total", &[]).await;
    assert!(m >= replayed, "amihub_resume_frames_total {m} < {replayed}");
}

#[tokio::test]
async fn proxy_action_resume_on_an_open_socket_sends_what_was_missed_once() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    hub.wait_status(1, "Connected").await;
    let mut watcher = hub.ws().await;
    let mut c = hub.ws().await;
    let early: Vec<(&str, String)> = (1..=5).map(|i| ("Newchannel", format!("a{i}"))).collect();
    emit_all(&pbx, &mut watcher, &early).await;
    c.wait_for("a5", |v| tag_of(v) == Some("a5")).await;
    let (epoch, offset) = last_position(&c, 1);
    drop(c);

    let missed: Vec<(&str, String)> = (1..=20).map(|i| ("Hangup", format!("b{i}"))).collect();
    emit_all(&pbx, &mut watcher, &missed).await;
    let mut back = hub.ws().await;
    back.send_json(json!({"ProxyAction": "Resume", "ActionID": "r1",
        "Since": {"1": {"epoch": epoch, "offset": offset}}}))
        .await;
    let reply = back.wait_for("the Resume reply", is_resume_reply).await;
    assert_eq!(reply["data"]["ActionID"], "r1");
    assert_eq!(reply["data"]["Servers"]["1"]["Replayed"], 20, "{reply}");
    let live: Vec<(&str, String)> = (1..=5).map(|i| ("Hangup", format!("c{i}"))).collect();
    emit_all(&pbx, &mut watcher, &live).await;
    back.wait_for("c5", |v| tag_of(v) == Some("c5")).await;
    let tags: Vec<&str> = back.seen.iter().filter_map(tag_of).collect();
    let want: Vec<String> = missed.iter().chain(&live).map(|(_, t)| t.clone()).collect();
    assert_eq!(tags, want, "missed frames once, in order, then live");

    // Asking again for what it already has replays nothing twice.
    back.send_json(json!({"ProxyAction": "Resume",
        "Since": {"1": {"epoch": epoch, "offset": offset}}}))
        .await;
    let again = back
        .wait_for("the second Resume reply", is_resume_reply)
        .await;
    assert_eq!(again["data"]["Servers"]["1"]["Replayed"], 0, "{again}");
}

#[tokio::test]
async fn an_offset_older_than_the_window_or_another_epoch_is_a_resume_gap() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[history]\nmax_frames = 50\n{}",
        one_server(&pbx, "")
    ));
    hub.wait_status(1, "Connected").await;
    let mut c = hub.ws().await;
    emit_all(&pbx, &mut c, &[("Newchannel", "x0".to_string())]).await;
    let (epoch, offset) = last_position(&c, 1);
    let more: Vec<(&str, String)> = (1..=100).map(|i| ("Newstate", format!("x{i}"))).collect();
    emit_all(&pbx, &mut c, &more).await;

    for since in [
        json!({"1": {"epoch": epoch, "offset": offset}}),
        json!({"1": {"epoch": "0000000000000000", "offset": offset + 60}}),
    ] {
        c.send_json(json!({"ProxyAction": "Resume", "Since": since}))
            .await;
        let gap = c.wait_for("resume gap", |v| is_gap(v, 1)).await;
        assert_eq!(gap["data"]["Status"], "Connected", "{gap}");
        let reply = c.wait_for("the Resume reply", is_resume_reply).await;
        assert!(reply["data"]["Servers"]["1"]["Gap"].is_string(), "{reply}");
    }
    // Inside the window it works, and an unknown server says so without a frame of its own.
    let (_, newest) = last_position(&c, 1);
    c.send_json(json!({"ProxyAction": "Resume",
        "Since": {"1": {"epoch": epoch, "offset": newest - 10}, "9": {"epoch": epoch, "offset": 1}}}))
        .await;
    let reply = c.wait_for("the Resume reply", is_resume_reply).await;
    assert_eq!(reply["data"]["Servers"]["1"]["Replayed"], 0, "{reply}");
    assert_eq!(reply["data"]["Unknown"], json!([9]), "{reply}");
    let gaps = metric_at(hub.addr, "amihub_resume_gaps_total", &[]).await;
    assert_eq!(gaps, 2);
    // The gauges follow on the registry's next sweep.
    wait_metric_at(hub.addr, "amihub_history_frames", &[], |f| f == 50).await;
    wait_metric_at(hub.addr, "amihub_history_bytes", &[], |b| b > 50 * 150).await;
}

#[tokio::test]
async fn an_epoch_from_before_a_restart_is_a_resume_gap() {
    let pbx = sim("pbx1").await;
    let config = one_server(&pbx, "");
    let hub = Amihub::start(&config);
    hub.wait_status(1, "Connected").await;
    let mut c = hub.ws().await;
    emit_all(&pbx, &mut c, &[("Newchannel", "r1".to_string())]).await;
    let (epoch, offset) = last_position(&c, 1);
    drop(c);
    drop(hub);

    let hub = Amihub::start(&config);
    hub.wait_status(1, "Connected").await;
    let url = hub.ws_url(&format!("/ws?resume=1:{epoch}:{offset}"));
    let mut back = Client::connect(&url).await;
    let gap = back.wait_for("resume gap", |v| is_gap(v, 1)).await;
    assert!(
        gap["data"]["Detail"]
            .as_str()
            .unwrap_or("")
            .contains("epoch"),
        "{gap}"
    );
    let reply = back.wait_for("the Resume reply", is_resume_reply).await;
    assert!(reply["data"]["Servers"]["1"]["Gap"].is_string(), "{reply}");
    // After the gap the new epoch's frames arrive live as usual.
    emit_all(&pbx, &mut back, &[("Newchannel", "r2".to_string())]).await;
    let (now, _) = last_position(&back, 1);
    assert_ne!(now, epoch);
}

#[tokio::test]
async fn a_replay_larger_than_the_session_bound_is_a_gap_not_a_cut() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[limits]\nsession_queue_bytes = 16384\n{}",
        one_server(&pbx, "")
    ));
    hub.wait_status(1, "Connected").await;
    let mut watcher = hub.ws().await;
    emit_all(&pbx, &mut watcher, &[("Newchannel", "s0".to_string())]).await;
    let (epoch, offset) = last_position(&watcher, 1);
    // About 200 bytes a frame: 200 of them pass a 16 KiB bound.
    for chunk in 0..10 {
        let batch: Vec<(&str, String)> = (0..20)
            .map(|i| ("Newstate", format!("s{chunk}-{i}")))
            .collect();
        emit_all(&pbx, &mut watcher, &batch).await;
    }
    let url = hub.ws_url(&format!("/ws?resume=1:{epoch}:{offset}"));
    let mut back = Client::connect(&url).await;
    let gap = back.wait_for("resume gap", |v| is_gap(v, 1)).await;
    assert!(
        gap["data"]["Detail"]
            .as_str()
            .unwrap_or("")
            .contains("session_queue_bytes"),
        "{gap}"
    );
    back.wait_for("the Resume reply", is_resume_reply).await;
    // Still connected and live.
    emit_all(&pbx, &mut watcher, &[("Hangup", "s-live".to_string())]).await;
    back.wait_for("live event", |v| tag_of(v) == Some("s-live"))
        .await;
    assert_eq!(
        metric_at(hub.addr, "amihub_ws_slow_consumer_closes_total", &[]).await,
        0
    );
}

#[tokio::test]
async fn resume_never_returns_a_frame_outside_the_users_rights_or_subscription() {
    let one = sim("pbx1").await;
    let two = sim("pbx2").await;
    let config = format!(
        "{}{}[[users]]\nname = \"viewer\"\ntoken = \"{VIEWER_TOKEN}\"\nservers = [\"1\"]\n\
         events = [\"Newchannel\", \"Hangup\", \"Newstate\"]\n\
         [[users]]\nname = \"admin\"\ntoken = \"{ADMIN_TOKEN}\"\nadmin = true\n",
        server_toml(1, "pbx1", &one, "admin", "secret", ""),
        server_toml(2, "pbx2", &two, "admin", "secret", ""),
    );
    let hub = Amihub::start(&config);
    let admin_url = hub.ws_url(&format!("/ws?token={ADMIN_TOKEN}"));
    let mut watcher = Client::connect(&admin_url).await;
    watcher
        .wait_for("pbx1 Connected", |v| is_status(v, 1, "Connected"))
        .await;
    watcher
        .wait_for("pbx2 Connected", |v| is_status(v, 2, "Connected"))
        .await;
    let viewer_url = hub.ws_url(&format!("/ws?token={VIEWER_TOKEN}"));
    let mut viewer = Client::connect(&viewer_url).await;
    emit_all(&one, &mut watcher, &[("Newchannel", "v0".to_string())]).await;
    viewer.wait_for("v0", |v| tag_of(v) == Some("v0")).await;
    let (epoch1, offset1) = last_position(&viewer, 1);
    drop(viewer);

    // While it is away: every kind of event on both servers.
    let names = ["Newchannel", "Hangup", "Newstate", "DialBegin", "VarSet"];
    for (sim, sid) in [(&one, 1), (&two, 2)] {
        let events: Vec<(&str, String)> = (0..25)
            .map(|i| (names[i % names.len()], format!("m{sid}-{i}")))
            .collect();
        emit_all(sim, &mut watcher, &events).await;
    }
    let mut back = Client::connect(&viewer_url).await;
    back.send_json(
        json!({"ProxyAction": "Subscribe", "Events": ["Newchannel", "Hangup", "DialBegin"]}),
    )
    .await;
    back.wait_for("Subscribe reply", |v| {
        v["type"] == 8 && v["data"]["ProxyAction"] == "Subscribe"
    })
    .await;
    back.send_json(json!({"ProxyAction": "Resume", "Since": {
        "1": {"epoch": epoch1, "offset": offset1},
        "2": {"epoch": epoch1, "offset": 0}}}))
        .await;
    let reply = back.wait_for("the Resume reply", is_resume_reply).await;
    assert_eq!(reply["data"]["Unknown"], json!([2]), "{reply}");
    let got: Vec<(String, String)> = back
        .seen
        .iter()
        .filter(|v| v["type"] == 3)
        .map(|v| {
            let name = v["data"]["Event"].as_str().unwrap_or("").to_string();
            (name, tag_of(v).unwrap_or("").to_string())
        })
        .collect();
    // Rights allow Newchannel/Hangup/Newstate on pbx1; the subscription takes Newchannel,
    // Hangup and DialBegin: only Newchannel and Hangup of pbx1 may come back.
    let want: Vec<(String, String)> = (0..25)
        .filter(|i| matches!(names[i % names.len()], "Newchannel" | "Hangup"))
        .map(|i| (names[i % names.len()].to_string(), format!("m1-{i}")))
        .collect();
    assert_eq!(got, want);
    assert!(
        back.seen.iter().all(|v| v["server_id"] != 2),
        "{:?}",
        back.seen
    );
}

#[tokio::test]
async fn a_malformed_resume_parameter_is_refused_before_the_upgrade() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let (status, body) = hub.http("GET", "/ws?resume=1:abc", &[], "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("resume"), "{body}");
    let mut c = hub.ws().await;
    c.send_json(json!({"ProxyAction": "Resume", "Since": {"1": {"epoch": "x"}}}))
        .await;
    let err = c
        .wait_for("an error", |v| {
            v["type"] == 8 && v["data"]["Response"] == "Error"
        })
        .await;
    assert!(
        err["data"]["Message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Resume:"),
        "{err}"
    );
}
