//! The HTTP actions API, subscriptions, servers added and dropped at runtime, SIGHUP reload,
//! readiness, metrics and JSON logs, over real sockets: the real binary, simulated PBXs on
//! ephemeral ports, real WebSocket and HTTP clients (SPEC §1, §4, §5, §7).

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amihub::sim::FloodSpec;
use serde_json::{json, Value};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn one_server(sim: &SimPbx, extra: &str) -> String {
    server_toml(1, "pbx1", sim, "admin", "secret", extra)
}

/// A plain HTTP/1.1 request to `addr` with a JSON content type.
async fn http_at(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_to(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
    .await
}

async fn get_json_at(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_at(addr, "GET", path, "").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("json body")
}

/// `POST /api/v1/servers/{server}/actions{query}`; the body as JSON (a string if it is not).
async fn post_action(addr: SocketAddr, server: &str, query: &str, body: &str) -> (u16, Value) {
    let path = format!("/api/v1/servers/{server}/actions{query}");
    let (status, text) = http_at(addr, "POST", &path, body).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Ids listed by `GET /api/v1/servers`, in order.
async fn server_ids(addr: SocketAddr) -> Vec<u64> {
    let v = get_json_at(addr, "/api/v1/servers").await;
    v["servers"]
        .as_array()
        .expect("servers array")
        .iter()
        .map(|s| s["id"].as_u64().expect("numeric id"))
        .collect()
}

/// Polls `GET /api/v1/servers` until server `id` has `status`.
async fn wait_status_at(addr: SocketAddr, id: u64, status: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = get_json_at(addr, "/api/v1/servers").await;
        let found = v["servers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == id))
            .map(|s| s["status"] == status);
        if found == Some(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server {id} never became {status}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `amihub_*` sample of `GET /metrics`.
async fn metrics(addr: SocketAddr) -> HashMap<String, u64> {
    let (status, body) = http_at(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    metric_at(addr, name, &[]).await
}

/// Polls `GET /metrics` until `pred(value of name)` holds; returns that value.
async fn wait_metric(addr: SocketAddr, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
    wait_metric_at(addr, name, &[], pred).await
}

/// The `N` header of type-3 events named `name` from server `sid` seen by `c`, in order.
fn ns(c: &Client, sid: u64, name: &str) -> Vec<u64> {
    c.seen
        .iter()
        .filter(|v| is_event(v, sid, name))
        .map(|v| v["data"]["N"].as_str().unwrap_or("0").parse().unwrap_or(0))
        .collect()
}

/// `(server, N)` of every type-3 event carrying an `N` header seen by `c`, in order.
fn numbered(c: &Client) -> Vec<(u64, u64)> {
    c.seen
        .iter()
        .filter(|v| v["type"] == 3 && v["data"]["N"].is_string())
        .map(|v| {
            let n = v["data"]["N"].as_str().unwrap_or("0").parse().unwrap_or(0);
            (v["server_id"].as_u64().unwrap_or(0), n)
        })
        .collect()
}

/// Sends a ProxyAction, returns its reply and the first frame matching `pred` it causes,
/// which may come before or after the reply: the registry's frames are written in the order it
/// makes them, the reply when the session actor gets its answer.
async fn proxy_then(
    c: &mut Client,
    msg: Value,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Value) {
    let from = c.seen.len();
    let r = proxy(c, msg).await;
    let v = match c.seen[from..].iter().find(|v| pred(v)).cloned() {
        Some(v) => v,
        None => c.wait_for(what, pred).await,
    };
    (r, v)
}

/// Sends a ProxyAction and returns its type-8 reply (matched by `ProxyAction` or an error).
async fn proxy(c: &mut Client, msg: Value) -> Value {
    let name = msg["ProxyAction"].as_str().unwrap_or("").to_string();
    c.send_json(msg).await;
    c.wait_for(&format!("{name} reply"), |v| {
        v["type"] == 8
            && (v["data"]["ProxyAction"] == name.as_str() || v["data"]["Response"] == "Error")
    })
    .await
}

fn add_server_msg(id: u32, name: &str, sim: &SimPbx) -> Value {
    json!({"ProxyAction":"AddServer","Server":{
        "id": id, "name": name, "host": "127.0.0.1", "port": sim.addr().port(),
        "username": "admin", "secret": "secret"}})
}

fn is_flood(v: &Value, sid: u64) -> bool {
    is_event(v, sid, "UserEvent") && v["data"]["UserEvent"] == "Flood"
}

fn seq_of(v: &Value) -> u64 {
    v["data"]["Seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("flood event without a numeric Seq: {v}"))
}

/// The flood `Seq`s from server `sid` seen by `c` are consecutive; returns how many there were.
fn assert_seq_continuity(c: &Client, sid: u64) -> usize {
    let seqs: Vec<u64> = c
        .seen
        .iter()
        .filter(|v| is_flood(v, sid))
        .map(seq_of)
        .collect();
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "flood of server {sid} lost or reordered events"
        );
    }
    seqs.len()
}

// ---------------------------------------------------------------------------------------------
// REST: POST /api/v1/servers/{id}/actions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rest_queue_status_returns_the_response_and_the_whole_list() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut watcher = hub.ws().await;
    watcher
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;

    let (status, v) = post_action(hub.addr, "1", "", r#"{"Action":"QueueStatus"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["server_id"], 1, "{v}");
    assert_eq!(v["response"]["Response"], "Success", "{v}");
    assert!(
        v["response"]["EventList"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("start")),
        "{v}"
    );
    let events = v["events"].as_array().expect("events array");
    assert!(events.len() > 1, "the simulator has queues: {v}");
    let (last, items) = events.split_last().expect("events");
    assert_eq!(last["Event"], "QueueStatusComplete", "{v}");
    assert_eq!(last["EventList"], "Complete", "{v}");
    let list_items: usize = last["ListItems"]
        .as_str()
        .expect("ListItems")
        .parse()
        .expect("numeric ListItems");
    assert_eq!(list_items, items.len(), "ListItems counts the other events");
    for e in items {
        let name = e["Event"].as_str().unwrap_or("");
        assert!(
            ["QueueParams", "QueueMember", "QueueEntry"].contains(&name),
            "unexpected list item {e}"
        );
    }
    assert!(items.iter().any(|e| e["Event"] == "QueueParams"));
    assert!(items.iter().any(|e| e["Event"] == "QueueMember"));
    let id = &v["response"]["ActionID"];
    assert!(
        events.iter().all(|e| &e["ActionID"] == id),
        "every list event carries the response's ActionID: {v}"
    );

    // A list with no items is just its Complete event.
    let (status, v) = post_action(hub.addr, "1", "", r#"{"Action":"CoreShowChannels"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["events"][0]["Event"], "CoreShowChannelsComplete");
    assert_eq!(v["events"][0]["ListItems"], "0");

    // The HTTP caller's list went to it alone, not to WebSocket sessions.
    pbx.emit(&[("Event", "Marker")]);
    watcher
        .wait_for("marker", |v| is_event(v, 1, "Marker"))
        .await;
    let list_names = [
        "QueueParams",
        "QueueMember",
        "QueueEntry",
        "QueueStatusComplete",
        "CoreShowChannelsComplete",
    ];
    assert!(
        watcher.seen.iter().all(|v| v["type"] != 4
            && v["type"] != 5
            && !list_names.iter().any(|n| v["data"]["Event"] == *n)),
        "a WebSocket session saw the HTTP caller's reply: {:?}",
        watcher.seen
    );
}

#[tokio::test]
async fn rest_command_output_comes_as_an_array_of_lines() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    hub.wait_status(1, "Connected").await;

    let (status, v) = post_action(
        hub.addr,
        "1",
        "",
        r#"{"Action":"Command","Command":"core show version"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"]["Response"], "Success", "{v}");
    let lines = v["response"]["Output"].as_array().expect("Output array");
    assert_eq!(lines.len(), 1, "{v}");
    assert!(
        lines[0].as_str().unwrap_or("").starts_with("Asterisk 22"),
        "{v}"
    );
    assert_eq!(v["events"], json!([]), "{v}");

    let (status, v) = post_action(
        hub.addr,
        "1",
        "",
        r#"{"Action":"Command","Command":"core show channels"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let lines: Vec<&str> = v["response"]["Output"]
        .as_array()
        .expect("Output array")
        .iter()
        .map(|l| l.as_str().expect("each line a string"))
        .collect();
    assert!(lines.len() >= 4, "{v}");
    assert!(lines[0].starts_with("Channel"), "{v}");
    assert!(lines.iter().any(|l| l.contains("active channel")), "{v}");
    assert!(lines.last().unwrap().contains("processed"), "{v}");
}

#[tokio::test]
async fn rest_bad_input_is_400_unknown_server_404_disconnected_server_503() {
    let pbx = sim("pbx1").await;
    let dead = sim("dead").await;
    dead.stop();
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}{}",
        one_server(&pbx, ""),
        server_toml(2, "dead", &dead, "admin", "secret", "")
    ));
    hub.wait_status(1, "Connected").await;
    let mut actions = pbx.actions();

    for bad in [
        "{not json",
        "",
        r#"{"Channel":"Local/100@demo"}"#,
        r#"{"Action":"Originate","Channel":"a\r\nAction: Command"}"#,
        r#"{"Action":"Originate","Channel":"a\nAction: Command"}"#,
        r#"{"Action":"Originate","Bad\r\nKey":"x"}"#,
        r#"{"Action":"Ping","Nested":{"a":1}}"#,
        r#"["Action","Ping"]"#,
        r#"{"ProxyAction":"ListServers"}"#,
        r#"{"Action":"Login","Username":"admin","Secret":"secret"}"#,
    ] {
        let (status, v) = post_action(hub.addr, "1", "", bad).await;
        assert_eq!(status, 400, "{bad:?} -> {v}");
        assert!(v["error"].is_string(), "{bad:?} -> {v}");
    }

    let (status, v) = post_action(hub.addr, "9", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains('9'), "{v}");
    let (status, v) = post_action(hub.addr, "pbx1", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 404, "{v}");

    let (status, v) = post_action(hub.addr, "2", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("not connected"),
        "{v}"
    );

    // Only this Ping reached the PBX: none of the refused bodies did.
    let (status, v) = post_action(hub.addr, "1", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"]["Response"], "Success", "{v}");
    let mut names = Vec::new();
    while let Ok(p) = actions.try_recv() {
        names.push(p.get("Action").unwrap_or("").to_string());
    }
    assert!(names.iter().all(|n| n == "Ping"), "{names:?}");
}

#[tokio::test]
async fn rest_silent_pbx_gives_504_after_timeout_s() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(
        &pbx,
        "ping_interval_s = 300\nping_timeout_s = 60",
    ));
    hub.wait_status(1, "Connected").await;
    pbx.set_silent(true);

    for query in ["?timeout_s=1", "?timeout_s=0"] {
        let start = Instant::now();
        let (status, v) = post_action(hub.addr, "1", query, r#"{"Action":"Ping"}"#).await;
        let took = start.elapsed();
        assert_eq!(status, 504, "{query}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains("timeout"), "{v}");
        assert!(
            took >= Duration::from_millis(900),
            "{query}: answered after {took:?}, before the (clamped) 1 s"
        );
        assert!(
            took <= Duration::from_millis(2500),
            "{query}: took {took:?}"
        );
    }
    // A timeout is not a disconnection.
    hub.wait_status(1, "Connected").await;

    pbx.set_silent(false);
    // A huge timeout is clamped, not refused.
    let (status, v) = post_action(hub.addr, "1", "?timeout_s=99999", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 200, "{v}");
}

// ---------------------------------------------------------------------------------------------
// Subscribe
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn subscribe_filters_allow_first_then_deny_and_unsubscribed_sessions_get_everything() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut all = hub.ws().await;
    let mut sub = hub.ws().await;
    let mut deny_only = hub.ws().await;
    for c in [&mut all, &mut sub, &mut deny_only] {
        c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
            .await;
    }
    let r = proxy(
        &mut sub,
        json!({"ProxyAction":"Subscribe","Filters":["Event: Newchannel","!Channel: Local/"]}),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    let r = proxy(
        &mut deny_only,
        json!({"ProxyAction":"Subscribe","Filters":"!Event: VarSet"}),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");

    let events = [
        ("Newchannel", "PJSIP/100-00000001", "1"),
        ("Newchannel", "Local/100@demo-00000002;1", "2"),
        ("Hangup", "PJSIP/100-00000001", "3"),
        ("VarSet", "PJSIP/100-00000001", "4"),
        ("VarSet", "Local/100@demo-00000002;1", "5"),
        ("Newchannel", "PJSIP/200-00000006", "6"),
    ];
    for (event, channel, n) in events {
        pbx.emit(&[("Event", event), ("Channel", channel), ("N", n)]);
    }
    let last = |v: &Value| v["type"] == 3 && v["data"]["N"] == "6";
    for c in [&mut all, &mut sub, &mut deny_only] {
        c.wait_for("the last event", last).await;
    }
    let only = |c: &Client| numbered(c).into_iter().map(|(_, n)| n).collect::<Vec<_>>();
    assert_eq!(
        only(&all),
        [1, 2, 3, 4, 5, 6],
        "never subscribed: everything"
    );
    assert_eq!(
        only(&sub),
        [1, 6],
        "allowed Newchannel, then denied Local/ channels"
    );
    assert_eq!(
        only(&deny_only),
        [1, 2, 3, 6],
        "deny rules alone: a blacklist"
    );
}

#[tokio::test]
async fn subscribe_by_event_names_and_servers_and_resubscribe_replaces() {
    let a = sim("pbx1").await;
    let b = sim("pbx2").await;
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}{}",
        server_toml(1, "pbx1", &a, "admin", "secret", ""),
        server_toml(2, "pbx2", &b, "admin", "secret", "")
    ));
    hub.wait_status(1, "Connected").await;
    hub.wait_status(2, "Connected").await;
    let mut names = hub.ws().await;
    let mut srv2 = hub.ws().await;
    let mut by_name = hub.ws().await;
    let subs = [
        json!({"ProxyAction":"Subscribe","Events":["hangup","QUEUECALLERJOIN"]}),
        json!({"ProxyAction":"Subscribe","Servers":[2]}),
        json!({"ProxyAction":"Subscribe","Servers":["PBX1"],"Filters":["!Event: VarSet"]}),
    ];
    for (c, s) in [&mut names, &mut srv2, &mut by_name].into_iter().zip(subs) {
        c.wait_for("Connected 2", |v| is_status(v, 2, "Connected"))
            .await;
        let r = proxy(c, s).await;
        assert_eq!(r["data"]["Response"], "Success", "{r}");
    }
    for (event, n) in [
        ("Newchannel", "1"),
        ("Hangup", "2"),
        ("VarSet", "3"),
        ("QueueCallerJoin", "4"),
        ("Hangup", "99"),
    ] {
        a.emit(&[("Event", event), ("N", n)]);
    }
    for (event, n) in [("Newchannel", "11"), ("VarSet", "12"), ("Hangup", "99")] {
        b.emit(&[("Event", event), ("N", n)]);
    }
    let end = |sid: u64| move |v: &Value| v["server_id"] == sid && v["data"]["N"] == "99";
    names.wait_for("end of 1", end(1)).await;
    names.wait_for("end of 2", end(2)).await;
    srv2.wait_for("end of 2", end(2)).await;
    by_name.wait_for("end of 1", end(1)).await;

    let of = |c: &Client, sid: u64| -> Vec<u64> {
        numbered(c)
            .into_iter()
            .filter(|(s, _)| *s == sid)
            .map(|(_, n)| n)
            .collect()
    };
    assert_eq!(of(&names, 1), [2, 4, 99], "event names, case-insensitive");
    assert_eq!(of(&names, 2), [99]);
    assert_eq!(of(&srv2, 2), [11, 12, 99], "server by id");
    assert_eq!(
        of(&by_name, 1),
        [1, 2, 4, 99],
        "server by name, VarSet denied"
    );

    // Status changes of subscribed servers still arrive.
    b.kill_connections();
    srv2.wait_for("Disconnected", |v| is_status(v, 2, "Disconnected"))
        .await;
    srv2.wait_for("Connected", |v| is_status(v, 2, "Connected"))
        .await;

    // A new Subscribe replaces the old one: an empty one means everything again.
    let r = proxy(&mut srv2, json!({"ProxyAction":"Subscribe"})).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    a.emit(&[("Event", "VarSet"), ("N", "100")]);
    srv2.wait_for("server 1 again", |v| {
        v["server_id"] == 1 && v["data"]["N"] == "100"
    })
    .await;
    assert_eq!(
        of(&srv2, 1),
        [100],
        "nothing of server 1 before the resubscribe"
    );
    let replies: Vec<usize> = (0..srv2.seen.len())
        .filter(|&i| srv2.seen[i]["data"]["ProxyAction"] == "Subscribe")
        .collect();
    assert_eq!(replies.len(), 2);
    assert!(
        srv2.seen[replies[0]..replies[1]]
            .iter()
            .all(|v| v["server_id"] != 1),
        "server 1 frames while subscribed to server 2 only: {:?}",
        srv2.seen
    );
}

#[tokio::test]
async fn subscribe_errors_are_type_8_and_keep_the_previous_subscription() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let r = proxy(
        &mut c,
        json!({"ProxyAction":"Subscribe","Events":["Hangup"]}),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");

    let too_many: Vec<String> = (0..65).map(|i| format!("Event: E{i}")).collect();
    for (bad, says) in [
        (
            json!({"ProxyAction":"Subscribe","Filters":["Event: ("]}),
            "Event: (",
        ),
        (
            json!({"ProxyAction":"Subscribe","Filters":["Event: Hangup","!Channel: [z-a]"]}),
            "[z-a]",
        ),
        (json!({"ProxyAction":"Subscribe","Filters":too_many}), "64"),
        (json!({"ProxyAction":"Subscribe","Filters":5}), "Filters"),
        (
            json!({"ProxyAction":"Subscribe","Events":[{"a":1}]}),
            "Events",
        ),
        (json!({"ProxyAction":"Bogus"}), "Bogus"),
    ] {
        c.send_json(bad.clone()).await;
        let r = c.wait_for("type 8", |v| v["type"] == 8).await;
        assert_eq!(r["data"]["Response"], "Error", "{bad} -> {r}");
        let msg = r["data"]["Message"].as_str().unwrap_or("");
        assert!(msg.contains(says), "{bad} -> {r}");
    }

    // The session lives on with its previous subscription.
    pbx.emit(&[("Event", "Newchannel"), ("N", "1")]);
    pbx.emit(&[("Event", "Hangup"), ("N", "2")]);
    c.wait_for("Hangup", |v| is_event(v, 1, "Hangup")).await;
    assert_eq!(ns(&c, 1, "Newchannel"), Vec::<u64>::new());

    // ListServers and (loopback without users = admin) ListSessions.
    let r = proxy(&mut c, json!({"ProxyAction":"ListServers"})).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    assert_eq!(r["data"]["Servers"][0]["id"], 1, "{r}");
    assert_eq!(r["data"]["Servers"][0]["status"], "Connected", "{r}");
    let r = proxy(&mut c, json!({"ProxyAction":"ListSessions"})).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    let sessions = r["data"]["Sessions"].as_array().expect("Sessions");
    assert_eq!(sessions.len(), 1, "{r}");
    assert_eq!(sessions[0]["subscribed"], true, "{r}");
}

// ---------------------------------------------------------------------------------------------
// AddServer / DropServer
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn add_and_drop_a_server_at_runtime_while_another_floods() {
    let pbx = sim("pbx1").await;
    let late = sim("late").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.flood(FloodSpec {
        rate_per_s: Some(1000),
        count: None,
        event_bytes: 400,
    });
    c.wait_for("flood", |v| is_flood(v, 1)).await;

    // Add server 7.
    let (r, _) = proxy_then(
        &mut c,
        add_server_msg(7, "late", &late),
        "server 7 Connected",
        |v| is_status(v, 7, "Connected"),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    assert_eq!(r["data"]["ServerID"], 7, "{r}");
    assert_eq!(late.stats().logins_ok, 1);
    late.emit(&[("Event", "LateHello"), ("N", "1")]);
    let v = c
        .wait_for("event of server 7", |v| is_event(v, 7, "LateHello"))
        .await;
    assert_eq!(v["server_name"], "late");
    c.send_json(
        json!({"Action":"Command","Command":"core show version","AMIServerID":7,"ActionID":"late-cmd"}),
    )
    .await;
    let r = c
        .wait_for("command reply from 7", |v| {
            v["type"] == 5 && v["data"]["ActionID"] == "late-cmd"
        })
        .await;
    assert_eq!(r["server_id"], 7, "{r}");
    let (status, v) = post_action(hub.addr, "7", "", r#"{"Action":"CoreSettings"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"]["SystemName"], "late", "{v}");
    let servers = hub.get_json("/api/v1/servers").await;
    let s7 = servers["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == 7).cloned())
        .expect("server 7 listed");
    assert_eq!(s7["name"], "late");
    assert_eq!(s7["status"], "Connected");
    assert_eq!(s7["port"], late.addr().port());

    // Refused additions.
    let r = proxy(&mut c, add_server_msg(7, "other", &late)).await;
    assert_eq!(r["data"]["Response"], "Error", "duplicate id: {r}");
    let r = proxy(&mut c, add_server_msg(8, "late", &late)).await;
    assert_eq!(r["data"]["Response"], "Error", "duplicate name: {r}");
    let r = proxy(
        &mut c,
        json!({"ProxyAction":"AddServer","Server":{"id":9,"name":"x","username":"u"}}),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Error", "no host: {r}");
    let r = proxy(
        &mut c,
        json!({"ProxyAction":"AddServer","Server":{"id":9,"name":"x","host":"127.0.0.1","username":"u","bogus":1}}),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Error", "unknown key: {r}");
    assert_eq!(server_ids(hub.addr).await, [1, 7]);

    // Drop server 7.
    let (r, v) = proxy_then(
        &mut c,
        json!({"ProxyAction":"DropServer","AMIServerID":7}),
        "server 7 removed",
        |v| is_status(v, 7, "Disconnected"),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    assert_eq!(r["data"]["ServerID"], 7, "{r}");
    assert_eq!(v["data"]["Reason"], "removed", "{v}");
    assert!(
        late.wait_for(PATIENCE, |s| s.logoffs == 1).await,
        "Logoff reached the dropped PBX: {:?}",
        late.stats()
    );
    assert!(
        late.wait_for(PATIENCE, |s| s.live_connections == 0).await,
        "the dropped PBX's connection was closed: {:?}",
        late.stats()
    );
    assert_eq!(server_ids(hub.addr).await, [1]);
    let (status, v) = post_action(hub.addr, "7", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 404, "{v}");
    c.send_json(json!({"Action":"Ping","AMIServerID":7,"ActionID":"gone"}))
        .await;
    let r = c
        .wait_for("error for 7", |v| {
            v["type"] == 8 && v["data"]["ActionID"] == "gone"
        })
        .await;
    assert!(
        r["data"]["Message"]
            .as_str()
            .unwrap_or("")
            .contains("Unknown server"),
        "{r}"
    );
    let r = proxy(&mut c, json!({"ProxyAction":"DropServer","AMIServerID":7})).await;
    assert_eq!(r["data"]["Response"], "Error", "dropping twice: {r}");
    assert_eq!(
        late.stats().logins_ok,
        1,
        "a dropped server is not reconnected"
    );

    // Server 1's flood never missed a beat.
    let upto = c
        .seen
        .iter()
        .rev()
        .find(|v| is_flood(v, 1))
        .map(seq_of)
        .unwrap_or(0);
    c.wait_for("flood after the drop", |v| {
        is_flood(v, 1) && seq_of(v) >= upto + 200
    })
    .await;
    pbx.stop_flood();
    let n = assert_seq_continuity(&c, 1);
    assert!(n >= 200, "only {n} flood events");
}

#[tokio::test]
async fn add_server_to_a_dead_port_keeps_retrying_and_drop_stops_it() {
    let pbx = sim("pbx1").await;
    let dead = sim("dead").await;
    dead.stop();
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 100\n{}",
        one_server(&pbx, "")
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let r = proxy(&mut c, add_server_msg(5, "dead", &dead)).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    c.wait_for("server 5 Disconnected", |v| is_status(v, 5, "Disconnected"))
        .await;
    let (status, _) = post_action(hub.addr, "5", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 503);
    let r = proxy(
        &mut c,
        json!({"ProxyAction":"DropServer","AMIServerID":"5"}),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    assert_eq!(server_ids(hub.addr).await, [1]);
    // Server 1 is untouched.
    pbx.emit(&[("Event", "StillHere")]);
    c.wait_for("server 1 event", |v| is_event(v, 1, "StillHere"))
        .await;
    hub.wait_status(1, "Connected").await;
}

#[tokio::test]
async fn drop_then_re_add_the_same_id_ends_connected_and_stays_connected() {
    let pbx = sim("pbx1").await;
    let late = sim("late").await;
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}",
        one_server(&pbx, "")
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let r = proxy(&mut c, add_server_msg(7, "late", &late)).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    hub.wait_status(7, "Connected").await;
    for round in 1..=5u64 {
        let r = proxy(&mut c, json!({"ProxyAction":"DropServer","AMIServerID":7})).await;
        assert_eq!(r["data"]["Response"], "Success", "round {round}: {r}");
        let r = proxy(&mut c, add_server_msg(7, "late", &late)).await;
        assert_eq!(r["data"]["Response"], "Success", "round {round}: {r}");
        assert!(
            late.wait_for(PATIENCE, |s| s.logins_ok == round + 1 && s.logoffs == round)
                .await,
            "round {round}: {:?}",
            late.stats()
        );
        hub.wait_status(7, "Connected").await;
        // Let whatever the old connection still had to say arrive, then check the new one.
        assert!(
            late.wait_for(PATIENCE, |s| s.live_connections == 1).await,
            "round {round}: {:?}",
            late.stats()
        );
        let (status, v) = post_action(hub.addr, "7", "", r#"{"Action":"Ping"}"#).await;
        assert_eq!(status, 200, "round {round}: {v}");
    }
    late.emit(&[("Event", "AfterReAdd")]);
    c.wait_for("event of the re-added server", |v| {
        is_event(v, 7, "AfterReAdd")
    })
    .await;
    hub.wait_status(7, "Connected").await;
    let (status, v) = post_action(hub.addr, "7", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn dropping_a_connected_server_updates_the_connected_gauge() {
    let pbx = sim("pbx1").await;
    let late = sim("late").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    // The gauge is only wrong in some interleavings of Goodbye, EOF and the registry letting
    // go of the connection actor: a few rounds make it show.
    for round in 1..=20u64 {
        let (r, _) = proxy_then(
            &mut c,
            add_server_msg(7, "late", &late),
            "server 7 Connected",
            |v| is_status(v, 7, "Connected"),
        )
        .await;
        assert_eq!(r["data"]["Response"], "Success", "{r}");
        assert_eq!(metric(hub.addr, "amihub_pbx_connected").await, 2);
        let r = proxy(&mut c, json!({"ProxyAction":"DropServer","AMIServerID":7})).await;
        assert_eq!(r["data"]["Response"], "Success", "{r}");
        assert!(
            late.wait_for(PATIENCE, |s| s.logoffs == round && s.live_connections == 0)
                .await
        );
        // One PBX is logged in now; the gauge must say so.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = metric(hub.addr, "amihub_pbx_connected").await;
        while got != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            got = metric(hub.addr, "amihub_pbx_connected").await;
        }
        assert_eq!(
            got, 1,
            "round {round}: amihub_pbx_connected still counts the dropped server 7"
        );
    }
}

#[tokio::test]
async fn dropping_a_pbx_that_ignores_logoff_still_closes_its_connection() {
    let pbx = sim("pbx1").await;
    let late = sim("late").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut add = add_server_msg(7, "late", &late);
    add["Server"]["ping_interval_s"] = json!(300);
    let (r, _) = proxy_then(&mut c, add, "server 7 Connected", |v| {
        is_status(v, 7, "Connected")
    })
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    // The PBX hangs: it will not answer the Logoff.
    late.set_silent(true);
    let (r, _) = proxy_then(
        &mut c,
        json!({"ProxyAction":"DropServer","AMIServerID":7}),
        "server 7 removed",
        |v| is_status(v, 7, "Disconnected"),
    )
    .await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    assert_eq!(server_ids(hub.addr).await, [1]);
    // After its grace period for the Goodbye, amihub must hang up on a dropped server.
    assert!(
        late.wait_for(PATIENCE, |s| s.live_connections == 0).await,
        "the connection to dropped server 7 is still open {PATIENCE:?} after DropServer: {:?}",
        late.stats()
    );
    wait_metric(hub.addr, "amihub_pbx_connected", |n| n == 1).await;
}

// ---------------------------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sighup_adds_removes_and_keeps_servers_without_touching_the_unchanged() {
    let keep = sim("keep").await;
    let gone = sim("gone").await;
    let new = sim("new").await;
    let base = "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n";
    let hub = Amihub::start(&format!(
        "{base}{}{}",
        server_toml(1, "keep", &keep, "admin", "secret", ""),
        server_toml(2, "gone", &gone, "admin", "secret", "")
    ));
    let mut c = hub.ws().await;
    c.wait_for("1 Connected", |v| is_status(v, 1, "Connected"))
        .await;
    c.wait_for("2 Connected", |v| is_status(v, 2, "Connected"))
        .await;
    let before = keep.stats();
    assert_eq!((before.connections, before.logins_ok), (1, 1));

    hub.rewrite_config(&format!(
        "{base}{}{}",
        server_toml(1, "keep", &keep, "admin", "secret", ""),
        server_toml(3, "new", &new, "admin", "secret", "")
    ));
    let mark = c.seen.len();
    hub.signal_num(libc::SIGHUP);

    // Removals are handled before additions.
    let v = c
        .wait_for("2 removed", |v| is_status(v, 2, "Disconnected"))
        .await;
    assert_eq!(v["data"]["Reason"], "removed", "{v}");
    c.wait_for("3 Connected", |v| is_status(v, 3, "Connected"))
        .await;
    assert!(
        gone.wait_for(PATIENCE, |s| s.logoffs == 1 && s.live_connections == 0)
            .await,
        "removed server got a Logoff: {:?}",
        gone.stats()
    );
    assert!(new.wait_for(PATIENCE, |s| s.logins_ok == 1).await);
    hub.wait_log("reloaded: servers +1 -1 =1").await;
    assert_eq!(server_ids(hub.addr).await, [1, 3]);

    // The unchanged server kept its one connection, and the session was not disturbed.
    keep.emit(&[("Event", "AfterReload")]);
    c.wait_for("event of the kept server", |v| {
        is_event(v, 1, "AfterReload")
    })
    .await;
    new.emit(&[("Event", "FromNew")]);
    c.wait_for("event of the added server", |v| is_event(v, 3, "FromNew"))
        .await;
    let after = keep.stats();
    assert_eq!(
        (after.connections, after.logins_ok, after.logoffs),
        (1, 1, 0),
        "the unchanged server was reconnected"
    );
    assert!(
        c.seen[mark..].iter().all(|v| !(v["type"] == 7
            && v["server_id"] == 1
            && v["data"]["Status"] != "Connected")),
        "the unchanged server changed status: {:?}",
        c.seen
    );
    let (status, v) = post_action(hub.addr, "3", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = post_action(hub.addr, "2", "", r#"{"Action":"Ping"}"#).await;
    assert_eq!(status, 404);
    assert_eq!(gone.stats().logins_ok, 1, "removed server stays removed");

    // A broken config is refused and the running one kept.
    std::fs::write(&hub.config, "[[servers]]\nbogus = 1\n").expect("write");
    hub.signal_num(libc::SIGHUP);
    hub.wait_log("reload failed").await;
    assert_eq!(server_ids(hub.addr).await, [1, 3]);
    wait_status_at(hub.addr, 1, "Connected").await;
    wait_status_at(hub.addr, 3, "Connected").await;
}

#[tokio::test]
async fn sighup_with_changed_settings_reconnects_that_server_and_it_stays_connected() {
    let one = sim("one").await;
    let two = sim("two").await;
    let base = "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n";
    let config = |ping: u32| {
        format!(
            "{base}{}{}",
            server_toml(1, "one", &one, "admin", "secret", ""),
            server_toml(
                2,
                "two",
                &two,
                "admin",
                "secret",
                &format!("ping_interval_s = {ping}")
            )
        )
    };
    let hub = Amihub::start(&config(10));
    wait_status_at(hub.addr, 1, "Connected").await;
    wait_status_at(hub.addr, 2, "Connected").await;
    for round in 1..=3u64 {
        hub.rewrite_config(&config(10 + round as u32));
        hub.signal_num(libc::SIGHUP);
        assert!(
            two.wait_for(PATIENCE, |s| s.logoffs == round
                && s.logins_ok == round + 1
                && s.live_connections == 1)
                .await,
            "round {round}: {:?}",
            two.stats()
        );
        wait_status_at(hub.addr, 2, "Connected").await;
        let (status, v) = post_action(hub.addr, "2", "", r#"{"Action":"Ping"}"#).await;
        assert_eq!(status, 200, "round {round}: {v}");
    }
    assert_eq!(one.stats().logins_ok, 1, "server 1 untouched");
    let mut c = hub.ws().await;
    two.emit(&[("Event", "AfterChange")]);
    c.wait_for("event of the changed server", |v| {
        is_event(v, 2, "AfterChange")
    })
    .await;
    wait_status_at(hub.addr, 2, "Connected").await;
}

// ---------------------------------------------------------------------------------------------
// Health and metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn readyz_waits_for_every_first_attempt_livez_does_not() {
    let pbx = sim("pbx1").await;
    let mute = sim("mute").await;
    mute.set_silent(true); // accepts, but holds the banner back
    let hub = Amihub::start(&format!(
        "[reconnect]\nlogin_timeout_ms = 60000\n{}{}",
        one_server(&pbx, ""),
        server_toml(2, "mute", &mute, "admin", "secret", "")
    ));
    hub.wait_status(1, "Connected").await;
    assert!(mute.wait_for(PATIENCE, |s| s.connections == 1).await);
    for _ in 0..5 {
        let (status, body) = hub.http("GET", "/readyz", &[], "").await;
        assert_eq!(
            status, 503,
            "server 2 is still in its first attempt: {body}"
        );
        let (status, _) = hub.http("GET", "/livez", &[], "").await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mute.set_silent(false);
    hub.wait_status(2, "Connected").await;
    let (status, body) = hub.http("GET", "/readyz", &[], "").await;
    assert_eq!(status, 200, "{body}");

    // A refused first attempt also counts as finished.
    let dead = sim("dead").await;
    dead.stop();
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}{}",
        one_server(&pbx, ""),
        server_toml(2, "dead", &dead, "admin", "secret", "")
    ));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, _) = hub.http("GET", "/readyz", &[], "").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "never ready with a refused server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let servers = hub.get_json("/api/v1/servers").await;
    assert_ne!(servers["servers"][1]["status"], "Connected", "{servers}");
}

#[tokio::test]
async fn metrics_move_with_traffic_and_reconnects() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}",
        one_server(&pbx, "")
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let (status, body) = hub.http("GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    for line in body.lines().filter(|l| !l.is_empty()) {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        assert!(name.starts_with("amihub_"), "{line}");
    }
    for name in [
        "amihub_ami_packets_in_total",
        "amihub_ws_messages_out_total",
        "amihub_ws_slow_consumer_closes_total",
        "amihub_pbx_connects_total",
    ] {
        assert!(body.contains(&format!("# TYPE {name} counter")), "{body}");
    }
    assert!(body.contains("# TYPE amihub_pbx_connected gauge"), "{body}");

    let m0 = metrics(hub.addr).await;
    assert_eq!(m0["amihub_pbx_connects_total"], 1);
    assert_eq!(m0["amihub_pbx_connected"], 1);
    assert_eq!(m0["amihub_ws_sessions"], 1);
    for n in 1..=50 {
        pbx.emit(&[("Event", "Tick"), ("N", &n.to_string())]);
    }
    c.wait_for("last tick", |v| {
        is_event(v, 1, "Tick") && v["data"]["N"] == "50"
    })
    .await;
    c.send_json(json!({"Action":"Ping","ActionID":"p1","AMIServerID":1}))
        .await;
    c.wait_for("pong", |v| v["type"] == 4 && v["data"]["ActionID"] == "p1")
        .await;
    c.send_text("{not json").await;
    c.wait_for("error", |v| v["type"] == 8).await;
    let m1 = metrics(hub.addr).await;
    let grew = |name: &str| m1[name] - m0[name];
    assert!(
        grew("amihub_ami_packets_in_total") >= 51,
        "{m0:?} -> {m1:?}"
    );
    assert!(grew("amihub_ami_bytes_in_total") > 0, "{m0:?} -> {m1:?}");
    assert!(
        grew("amihub_ws_messages_out_total") >= 51,
        "{m0:?} -> {m1:?}"
    );
    assert!(grew("amihub_ws_bytes_out_total") > 0, "{m0:?} -> {m1:?}");
    assert!(
        grew("amihub_ami_actions_out_total") >= 1,
        "{m0:?} -> {m1:?}"
    );
    assert_eq!(
        grew("amihub_ws_client_messages_total"),
        2,
        "{m0:?} -> {m1:?}"
    );
    assert_eq!(grew("amihub_ws_client_errors_total"), 1, "{m0:?} -> {m1:?}");

    pbx.kill_connections();
    c.wait_for("Disconnected", |v| is_status(v, 1, "Disconnected"))
        .await;
    c.wait_for("Connected again", |v| is_status(v, 1, "Connected"))
        .await;
    let m2 = metrics(hub.addr).await;
    assert_eq!(m2["amihub_pbx_connects_total"], 2, "{m2:?}");
    assert_eq!(m2["amihub_pbx_disconnects_total"], 1, "{m2:?}");
    assert_eq!(m2["amihub_pbx_connected"], 1, "{m2:?}");

    drop(c);
    wait_metric(hub.addr, "amihub_ws_sessions", |n| n == 0).await;
    assert!(metric(hub.addr, "amihub_ws_sessions_total").await >= 1);
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_counted() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "[limits]\nsession_queue_bytes = 65536\n{}",
        one_server(&pbx, "")
    ));
    let mut slow = hub.ws().await;
    slow.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    assert_eq!(
        metric(hub.addr, "amihub_ws_slow_consumer_closes_total").await,
        0
    );
    // `slow` reads nothing from here on while 50k events of ~1 KiB go by.
    const FLOOD: u64 = 50_000;
    let before = pbx.stats().events_sent;
    pbx.flood(FloodSpec {
        rate_per_s: None,
        count: Some(FLOOD),
        event_bytes: 1000,
    });
    wait_metric(hub.addr, "amihub_ws_slow_consumer_closes_total", |n| n == 1).await;
    assert_eq!(
        slow.closed(PATIENCE).await,
        Closed::Code(4008, "slow consumer".into())
    );
    wait_metric(hub.addr, "amihub_ws_sessions", |n| n == 0).await;
    // Let the whole flood drain through amihub before a new client joins (with a 64 KiB bound,
    // a test task reading a full-speed flood would itself be cut loose). The flood is left to
    // end by its count: stopping it would race a batch the simulator is still writing.
    assert!(
        pbx.wait_for(PATIENCE, |s| s.events_sent >= before + FLOOD)
            .await,
        "the simulator did not finish its flood"
    );
    let sent = pbx.stats().events_sent;
    wait_metric(hub.addr, "amihub_ami_packets_in_total", |n| n >= sent).await;
    // Others are served as before.
    let mut next = hub.ws().await;
    next.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.emit(&[("Event", "AfterSlow")]);
    next.wait_for("event", |v| is_event(v, 1, "AfterSlow"))
        .await;
    assert_eq!(
        metric(hub.addr, "amihub_ws_slow_consumer_closes_total").await,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    let pbx = sim("pbx1").await;
    let mut hub = Amihub::start(&format!(
        "[log]\nformat = \"json\"\n[reconnect]\ninitial_ms = 50\nmax_ms = 200\n{}",
        one_server(&pbx, "")
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    // A warning too: the connection drops and comes back.
    pbx.kill_connections();
    c.wait_for("Disconnected", |v| is_status(v, 1, "Disconnected"))
        .await;
    c.wait_for("Connected again", |v| is_status(v, 1, "Connected"))
        .await;
    hub.signal_num(libc::SIGTERM);
    let status = hub
        .wait_exit_async(Duration::from_secs(10))
        .await
        .expect("exited");
    assert!(status.success(), "{status:?}");
    // The reader thread has the last lines once stderr is closed.
    let deadline = Instant::now() + PATIENCE;
    while !hub.lines().iter().any(|l| l.contains("stopped")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let lines = hub.lines();
    assert!(lines.len() >= 4, "{lines:#?}");
    let mut objects = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {line}"));
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "{line}"
        );
        assert!(v["msg"].is_string(), "no msg: {line}");
        objects.push(v);
    }
    let msgs: Vec<&str> = objects.iter().filter_map(|v| v["msg"].as_str()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("server 1 (pbx1)") && m.contains("connected to")),
        "{msgs:#?}"
    );
    assert!(
        objects
            .iter()
            .any(|v| v["level"] == "WARN"
                && v["msg"].as_str().unwrap_or("").contains("server 1 (pbx1)")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("listening on http://")),
        "{msgs:#?}"
    );
}

/// Regression: the old PBX actor of a dropped server sent its late "Disconnected" after a new
/// server with the same id had connected, marking it down.
#[tokio::test]
async fn a_dropped_servers_late_messages_do_not_touch_its_replacement() {
    let old = sim("old").await;
    let new = sim("new").await;
    let hub = Amihub::start(&one_server(&old, ""));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    // The old PBX will not answer Logoff: its actor lingers for the 2 s grace period.
    old.set_silent(true);
    let r = proxy(&mut c, json!({"ProxyAction":"DropServer","AMIServerID":1})).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    let r = proxy(&mut c, add_server_msg(1, "pbx1", &new)).await;
    assert_eq!(r["data"]["Response"], "Success", "{r}");
    c.wait_for("new server ready", |v| {
        is_status(v, 1, "Connected") && v["data"]["Reason"] == "state ready"
    })
    .await;
    assert!(
        old.wait_for(PATIENCE, |s| s.live_connections == 0).await,
        "the old connection ends after the grace period"
    );
    // Whatever the old actor said on its way out, server 1 is still the new, connected one.
    wait_status_at(hub.addr, 1, "Connected").await;
    c.send_json(json!({"Action":"Ping","AMIServerID":1,"ActionID":"after"}))
        .await;
    let v = c
        .wait_for("Ping reply", |v| v["data"]["ActionID"] == "after")
        .await;
    assert_eq!(v["type"], 4, "{v}");
    let ready = c
        .seen
        .iter()
        .rposition(|x| is_status(x, 1, "Connected") && x["data"]["Reason"] == "state ready")
        .expect("ready status seen");
    assert!(
        !c.seen[ready..]
            .iter()
            .any(|v| is_status(v, 1, "Disconnected")),
        "no Disconnected for server 1 after the replacement was ready: {:?}",
        &c.seen[ready..]
    );
}

/// A web admin must not make amihub read files on its host (and send them to a PBX).
#[tokio::test]
async fn add_server_refuses_host_paths() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&one_server(&pbx, ""));
    let mut c = hub.ws().await;
    for key in ["secret_file", "tls_ca"] {
        let mut msg = add_server_msg(9, "nine", &pbx);
        msg["Server"][key] = json!("/etc/hostname");
        let r = proxy(&mut c, msg).await;
        assert_eq!(r["data"]["Response"], "Error", "{r}");
        assert!(
            r["data"]["Message"]
                .as_str()
                .unwrap_or("")
                .contains("config file"),
            "{r}"
        );
    }
    assert_eq!(server_ids(hub.addr).await, [1]);
}
