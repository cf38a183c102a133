//! Service scenarios over real sockets: the real binary, simulated PBXs on ephemeral ports,
//! real WebSocket clients (SPEC §1–4, §7).

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use amihub::sim::FloodSpec;
use serde_json::json;
use support::*;

fn one_server(sim: &SimPbx, extra: &str) -> String {
    server_toml(1, "pbx1", sim, "admin", "secret", extra)
}

#[tokio::test]
async fn envelope_carries_repeated_headers_as_arrays() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected status", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.emit(&[
        ("Event", "Newchannel"),
        ("Channel", "PJSIP/100-00000001"),
        ("ChanVariable(PJSIP/100-00000001)", "X=1"),
        ("ChanVariable", "A=1"),
        ("ChanVariable", "B=2"),
    ]);
    let v = c
        .wait_for("Newchannel", |v| is_event(v, 1, "Newchannel"))
        .await;
    assert_eq!(v["server_name"], "pbx1");
    assert_eq!(v["ssl"], false);
    assert_eq!(v["data"]["Channel"], "PJSIP/100-00000001");
    assert_eq!(v["data"]["ChanVariable(PJSIP/100-00000001)"], "X=1");
    assert_eq!(v["data"]["ChanVariable"], json!(["A=1", "B=2"]));
}

#[tokio::test]
async fn command_output_arrives_as_lines_only_to_the_requester() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut a = hub.ws().await;
    let mut b = hub.ws().await;
    a.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    b.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    a.send_json(
        json!({"Action":"Command","Command":"core show version","ActionID":"cmd1","AMIServerID":1}),
    )
    .await;
    let r = a.wait_for("command response", |v| v["type"] == 5).await;
    assert_eq!(r["data"]["ActionID"], "cmd1");
    let lines = r["data"]["Output"].as_array().expect("Output array");
    assert!(!lines.is_empty());
    assert!(lines[0].as_str().unwrap_or("").contains("Asterisk"), "{r}");
    // b must not see a's reply: a marker event sent afterwards arrives first.
    pbx.emit(&[("Event", "Marker")]);
    b.wait_for("marker", |v| is_event(v, 1, "Marker")).await;
    assert!(
        b.seen.iter().all(|v| v["type"] != 5 && v["type"] != 4),
        "b saw a's reply: {:?}",
        b.seen
    );
}

#[tokio::test]
async fn two_sessions_with_the_same_action_id_get_only_their_own_lists() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut a = hub.ws().await;
    let mut b = hub.ws().await;
    a.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    b.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    a.send_json(json!({"Action":"QueueStatus","ActionID":"same"}))
        .await;
    b.send_json(json!({"Action":"QueueStatus","ActionID":"same"}))
        .await;
    for c in [&mut a, &mut b] {
        let resp = c.wait_for("QueueStatus response", |v| v["type"] == 4).await;
        assert_eq!(resp["data"]["ActionID"], "same");
        assert_eq!(resp["data"]["EventList"], "start");
        let done = c
            .wait_for("QueueStatusComplete", |v| {
                is_event(v, 1, "QueueStatusComplete")
            })
            .await;
        assert_eq!(done["data"]["ActionID"], "same");
        let items: usize = done["data"]["ListItems"]
            .as_str()
            .unwrap_or("x")
            .parse()
            .expect("ListItems");
        let seen_items = c
            .seen
            .iter()
            .filter(|v| {
                v["type"] == 3
                    && v["data"]["ActionID"] == "same"
                    && v["data"]["Event"] != "QueueStatusComplete"
            })
            .count();
        assert_eq!(
            seen_items, items,
            "each session sees exactly its own list once"
        );
        assert_eq!(
            c.seen.iter().filter(|v| v["type"] == 4).count(),
            1,
            "exactly one response"
        );
    }
}

#[tokio::test]
async fn action_without_action_id_gets_a_generated_one() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    c.send_json(json!({"Action":"CoreShowChannels"})).await;
    let resp = c.wait_for("response", |v| v["type"] == 4).await;
    let id = resp["data"]["ActionID"]
        .as_str()
        .expect("generated ActionID")
        .to_string();
    assert!(id.starts_with("amihub."), "{id}");
    let done = c
        .wait_for("complete", |v| is_event(v, 1, "CoreShowChannelsComplete"))
        .await;
    assert_eq!(done["data"]["ActionID"], id.as_str());
}

#[tokio::test]
async fn bad_client_input_gets_type_8_and_the_session_lives_on() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut actions = pbx.actions();
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    for bad in [
        "{not json",
        r#"{"Channel":"Local/100@demo"}"#,
        r#"{"Action":"Originate","Channel":"a\r\nAction: Command"}"#,
        r#"{"Action":"Ping","Nested":{"a":1}}"#,
        r#"["Action","Ping"]"#,
    ] {
        c.send_text(bad).await;
        let v = c.wait_for("type 8 error", |v| v["type"] == 8).await;
        assert_eq!(v["data"]["Response"], "Error", "{bad} -> {v}");
    }
    c.send_json(json!({"Action":"Ping","ActionID":"alive"}))
        .await;
    let v = c.wait_for("Ping response", |v| v["type"] == 4).await;
    assert_eq!(v["data"]["ActionID"], "alive");
    // Only the Ping reached the PBX (after amihub's own login/keepalive actions).
    let mut names = Vec::new();
    while let Ok(p) = actions.try_recv() {
        names.push(p.get("Action").unwrap_or("").to_string());
    }
    assert!(
        names.iter().all(|n| !n.eq_ignore_ascii_case("Originate")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "Ping"), "{names:?}");
}

#[tokio::test]
async fn client_login_challenge_logoff_never_reach_the_pbx() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let logins_before = pbx.stats().logins_ok;
    c.send_json(json!({"Action":"Login","Username":"x","Secret":"y","ActionID":"l1"}))
        .await;
    let v = c.wait_for("login reply", |v| v["type"] == 8).await;
    assert_eq!(v["data"]["Response"], "Success");
    c.send_json(json!({"Action":"Challenge","AuthType":"MD5","ActionID":"c1"}))
        .await;
    let v = c
        .wait_for("challenge reply", |v| {
            v["type"] == 8 && v["data"]["ActionID"] == "c1"
        })
        .await;
    assert!(v["data"]["Challenge"].is_string());
    c.send_json(json!({"Action":"Logoff","ActionID":"bye"}))
        .await;
    let v = c
        .wait_for("goodbye", |v| {
            v["type"] == 8 && v["data"]["ActionID"] == "bye"
        })
        .await;
    assert_eq!(v["data"]["Response"], "Goodbye");
    assert_eq!(pbx.stats().logins_ok, logins_before);
    assert_eq!(pbx.stats().logoffs, 0);
}

#[tokio::test]
async fn dropped_pbx_connection_reconnects_and_events_resume() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}",
        one_server(&pbx, "")
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.kill_connections();
    c.wait_for("Disconnected", |v| is_status(v, 1, "Disconnected"))
        .await;
    c.wait_for("Connected again", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.emit(&[("Event", "AfterReconnect")]);
    let v = c
        .wait_for("event after reconnect", |v| {
            is_event(v, 1, "AfterReconnect")
        })
        .await;
    assert_eq!(v["server_id"], 1, "server id stable across reconnects");
    let servers = hub.get_json("/api/v1/servers").await;
    assert_eq!(servers["servers"][0]["connects"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_speed_flood_reaches_one_client_whole_and_in_order() {
    // At full speed one read of the PBX becomes several batches, handed to the registry while
    // the one before is still being fanned out: none may be reordered or lost on the way.
    const COUNT: u64 = 50_000;
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.flood(FloodSpec {
        rate_per_s: None,
        count: Some(COUNT),
        event_bytes: 600,
    });
    read_flood(c, COUNT, Duration::from_secs(60)).await;
}

#[tokio::test]
async fn silent_pbx_is_detected_within_ping_interval_plus_timeout() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}",
        one_server(&pbx, "ping_interval_s = 1\nping_timeout_s = 1")
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.set_silent(true);
    let start = std::time::Instant::now();
    let v = c
        .wait_for("Disconnected", |v| is_status(v, 1, "Disconnected"))
        .await;
    let took = start.elapsed();
    assert!(took <= Duration::from_millis(2500), "took {took:?}");
    assert!(
        v["data"]["Reason"].as_str().unwrap_or("").contains("Ping"),
        "{v}"
    );
    pbx.set_silent(false);
    c.wait_for("Connected again", |v| is_status(v, 1, "Connected"))
        .await;
}

#[tokio::test]
async fn wrong_secret_marks_auth_failed_and_keeps_retrying() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 100\n{}",
        server_toml(1, "pbx1", &pbx, "admin", "wrong", "")
    ));
    let mut c = hub.ws().await;
    let v = c
        .wait_for("AuthFailed", |v| is_status(v, 1, "AuthFailed"))
        .await;
    assert!(
        v["data"]["Reason"]
            .as_str()
            .unwrap_or("")
            .contains("Authentication failed"),
        "{v}"
    );
    assert!(
        pbx.wait_for(PATIENCE, |s| s.logins_failed >= 3).await,
        "retries continue"
    );
    hub.wait_status(1, "AuthFailed").await;
}

#[tokio::test]
async fn plain_and_md5_logins_both_work() {
    let a = sim("a").await;
    let b = sim("b").await;
    let hub = Amihub::start(&format!(
        "{}{}",
        server_toml(1, "a", &a, "admin", "secret", "auth = \"md5\""),
        server_toml(
            2,
            "b",
            &b,
            "admin",
            "secret",
            "auth = \"plain\"\nevents = \"off\""
        )
    ));
    hub.wait_status(1, "Connected").await;
    hub.wait_status(2, "Connected").await;
    let mut actions = a.actions();
    let mut c = hub.ws().await;
    c.send_json(json!({"Action":"Ping","AMIServerID":1,"ActionID":"p"}))
        .await;
    c.wait_for("pong", |v| v["type"] == 4 && v["data"]["ActionID"] == "p")
        .await;
    let mut saw_ping = false;
    while let Ok(p) = actions.try_recv() {
        saw_ping |= p.get("Action") == Some("Ping");
    }
    assert!(saw_ping);
}

#[tokio::test]
async fn over_long_header_line_is_skipped_and_the_stream_goes_on() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut raw = b"Event: Huge\r\nData: ".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 70 * 1024));
    raw.extend_from_slice(b"\r\n\r\nEvent: AfterHuge\r\nSeq: 1\r\n\r\n");
    pbx.inject_raw(&raw);
    let v = c
        .wait_for("event after the huge one", |v| {
            v["type"] == 3 && (v["data"]["Event"] == "Huge" || v["data"]["Event"] == "AfterHuge")
        })
        .await;
    assert!(is_event(&v, 1, "AfterHuge"), "{v}");
    let metrics = hub.http("GET", "/metrics", &[], "").await.1;
    assert!(
        metrics.contains("amihub_ami_malformed_total 1"),
        "{metrics}"
    );
    hub.wait_status(1, "Connected").await;
}

#[tokio::test]
async fn actions_to_a_disconnected_or_unknown_server_get_type_8() {
    let pbx = sim("pbx1").await;
    pbx.stop();
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.send_json(json!({"Action":"Ping","AMIServerID":1,"ActionID":"x"}))
        .await;
    let v = c.wait_for("error", |v| v["type"] == 8).await;
    assert_eq!(v["data"]["ActionID"], "x");
    assert!(
        v["data"]["Message"]
            .as_str()
            .unwrap_or("")
            .contains("not connected"),
        "{v}"
    );
    c.send_json(json!({"Action":"Ping","AMIServerID":9,"ActionID":"y"}))
        .await;
    let v = c
        .wait_for("error", |v| v["type"] == 8 && v["data"]["ActionID"] == "y")
        .await;
    assert!(
        v["data"]["Message"]
            .as_str()
            .unwrap_or("")
            .contains("Unknown server"),
        "{v}"
    );
}

#[tokio::test]
async fn ten_pbxs_one_dead_one_flapping_the_other_eight_unaffected() {
    let mut sims = Vec::new();
    let mut config = String::from("[reconnect]\ninitial_ms = 50\nmax_ms = 200\n");
    for i in 1..=10u32 {
        let s = sim(&format!("p{i}")).await;
        config.push_str(&server_toml(
            i,
            &format!("p{i}"),
            &s,
            "admin",
            "secret",
            "ping_interval_s = 1\nping_timeout_s = 1",
        ));
        sims.push(s);
    }
    sims[0].stop(); // dead
    let hub = Amihub::start(&config);
    for i in 2..=10 {
        hub.wait_status(i, "Connected").await;
    }
    let flapper = sims[1].clone();
    let flapping = tokio::spawn(async move {
        for _ in 0..20 {
            flapper.kill_connections();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut c = hub.ws().await;
    // Each healthy PBX sends 50 numbered events; all 400 arrive, in order per server.
    for n in 1..=50 {
        for s in &sims[2..] {
            s.emit(&[("Event", "Tick"), ("N", &n.to_string())]);
        }
    }
    let mut next = [1u32; 11];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while next[3..].iter().any(|n| *n <= 50) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = c.next_json(left).await.expect("events stopped flowing");
        if v["type"] == 3 && v["data"]["Event"] == "Tick" {
            let sid = v["server_id"].as_u64().unwrap_or(0) as usize;
            let n: u32 = v["data"]["N"].as_str().unwrap_or("0").parse().unwrap_or(0);
            assert_eq!(n, next[sid], "server {sid} out of order");
            next[sid] += 1;
        }
    }
    flapping.await.expect("flapper");
    let servers = hub.get_json("/api/v1/servers").await;
    assert_ne!(servers["servers"][0]["status"], "Connected");
}

#[tokio::test]
async fn static_dashboard_and_server_list_are_served() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let (status, body) = hub.http("GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));
    hub.wait_status(1, "Connected").await;
    let v = hub.get_json("/api/v1/servers").await;
    assert_eq!(v["servers"][0]["name"], "pbx1");
    assert_eq!(v["servers"][0]["port"], pbx.addr().port());
    // amiws dashboards upgrade on `/`.
    let mut c = Client::connect(&hub.ws_url("/")).await;
    c.wait_for("status on /", |v| is_status(v, 1, "Connected"))
        .await;
    let (status, _) = hub.http("GET", "/livez", &[], "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_logs_off_and_exits() {
    let pbx = sim("pbx1").await;
    let mut hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let start = std::time::Instant::now();
    hub.signal("TERM");
    assert_eq!(
        c.closed(PATIENCE).await,
        Closed::Code(1001, "amihub shutting down".into())
    );
    let status = hub
        .wait_exit(Duration::from_secs(10))
        .expect("exited within 10 s");
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        pbx.wait_for(PATIENCE, |s| s.logoffs == 1).await,
        "Logoff reached the PBX"
    );
}

#[test]
fn check_config_reports_each_problem_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[http]\nlisten = \"nope\"\n[[servers]]\nname = \"x\"\nbogus = 1\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amihub"))
        .arg("--check-config")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("servers[0].bogus"),
        "the key is named with its path: {err}"
    );
    std::fs::write(
        &bad,
        "[http]\nlisten = \"nope\"\n[[servers]]\nname = \"x\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amihub"))
        .arg("--check-config")
        .arg(&bad)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.listen") && err.contains("servers[0].host"),
        "{err}"
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/amihub.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amihub"))
        .arg("--check-config")
        .arg(example)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn environment_overrides_config_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "http:\n  listen: \"127.0.0.1:1\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amihub"))
        .arg("--check-config")
        .arg(&path)
        .env("AMIHUB__HTTP__LISTEN", "bad address")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));
}

#[tokio::test]
async fn secrets_inside_arrays_can_come_from_the_environment() {
    let pbx = sim("pbx1").await;
    // The file holds a wrong secret; AMIHUB__SERVERS__0__SECRET overrides it.
    let hub = Amihub::start_with(
        &server_toml(1, "pbx1", &pbx, "admin", "wrong", ""),
        &[("AMIHUB__SERVERS__0__SECRET", "secret")],
    );
    hub.wait_status(1, "Connected").await;
    assert_eq!(pbx.stats().logins_failed, 0);
}

/// Regression: a reply whose requester had gone (left, cut, timed out) was broadcast to every
/// session — another user's GetConfig or Command output.
#[tokio::test]
async fn replies_for_finished_actions_reach_no_one() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.inject_raw(
        b"Response: Success\r\nActionID: amihub.424242\r\nMessage: someone else's secret\r\n\r\n\
          Event: Marker\r\n\r\n",
    );
    c.wait_for("marker", |v| is_event(v, 1, "Marker")).await;
    assert!(
        !c.seen
            .iter()
            .any(|v| v["data"]["ActionID"] == "amihub.424242"),
        "an orphaned reply was broadcast: {:?}",
        c.seen
    );
}
