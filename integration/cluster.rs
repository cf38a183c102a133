//! Cluster mode (SPEC §11) over a real `redis-server` (started here on a free loopback port, no
//! persistence), several real amihub processes and simulated PBXs that count concurrent logins.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::ami::{header, AmiClient};
use support::redis::Redis;
use support::*;

use amihub::sim::FloodSpec;

const LEASE_MS: u64 = 1000;
/// What a takeover may take beyond the lease: a lease tick or two and a login.
const TAKEOVER_SLACK_MS: u64 = 1000;

macro_rules! redis_or_skip {
    () => {
        match Redis::start().await {
            Some(r) => r,
            None => {
                eprintln!("SKIP: redis-server is not installed (apt-get install redis-server)");
                return;
            }
        }
    };
}

fn node_config(redis: &Redis, node: &str, sims: &[SimPbx]) -> String {
    let mut c = format!(
        "[cluster]\nredis_url = \"{}\"\nnode_id = \"{node}\"\nlease_ms = {LEASE_MS}\n\
         [reconnect]\ninitial_ms = 50\nmax_ms = 500\n\
         [limits]\nsession_queue_bytes = 16777216\n",
        redis.url()
    );
    for (i, s) in sims.iter().enumerate() {
        let id = i as u32 + 1;
        c.push_str(&server_toml(
            id,
            &format!("pbx{id}"),
            s,
            "admin",
            "secret",
            "",
        ));
    }
    c
}

async fn sims(n: usize) -> Vec<SimPbx> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(sim(&format!("pbx{i}")).await);
    }
    out
}

fn start_nodes(redis: &Redis, names: &[&str], sims: &[SimPbx]) -> Vec<Amihub> {
    names
        .iter()
        .map(|n| Amihub::start(&node_config(redis, n, sims)))
        .collect()
}

/// `GET /api/v1/cluster` → server id → owning node.
async fn owners(hub: &Amihub) -> BTreeMap<u64, String> {
    let v = hub.get_json("/api/v1/cluster").await;
    let mut out = BTreeMap::new();
    for n in v["nodes"].as_array().cloned().unwrap_or_default() {
        for s in n["servers"].as_array().cloned().unwrap_or_default() {
            if let (Some(s), Some(id)) = (s.as_u64(), n["node_id"].as_str()) {
                out.insert(s, id.to_string());
            }
        }
    }
    out
}

/// Waits until every one of `servers` servers is owned (as `hub` sees it) and `pred` holds.
async fn wait_owners(
    hub: &Amihub,
    servers: u64,
    pred: impl Fn(&BTreeMap<u64, String>) -> bool,
) -> BTreeMap<u64, String> {
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let o = owners(hub).await;
        if o.len() as u64 == servers && pred(&o) {
            return o;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ownership never settled: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A WebSocket session reading in the background; every frame kept in order.
struct Watcher {
    frames: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    async fn start(hub: &Amihub) -> Watcher {
        let mut client = hub.ws().await;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            while let Some(v) = client.next_json(Duration::from_secs(600)).await {
                sink.lock().unwrap().push(v);
            }
        });
        Watcher { frames, task }
    }

    fn frames(&self) -> Vec<Value> {
        self.frames.lock().unwrap().clone()
    }

    /// The newest history position of server `sid` it got.
    fn last_position(&self, sid: u64) -> (String, u64) {
        self.frames()
            .iter()
            .rev()
            .find_map(|v| position(v, sid))
            .expect("a position")
    }

    async fn wait(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        loop {
            if pred(&self.frames()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never saw {what}; last frames: {:#?}",
                self.frames().iter().rev().take(8).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn flood_seq(v: &Value, sid: u64) -> Option<u64> {
    (is_event(v, sid, "UserEvent") && v["data"]["UserEvent"] == "Flood")
        .then(|| v["data"]["Seq"].as_str()?.parse().ok())
        .flatten()
}

/// A fresh AMI connection's `Connected` (not a `state ready`).
fn is_login(v: &Value, sid: u64) -> bool {
    is_status(v, sid, "Connected") && v["data"]["Reason"] != "state ready"
}

/// Flood Seqs per AMI connection (a new `Connected` starts a new one). Panics on a Seq seen
/// twice or out of order within one connection.
fn seq_runs(frames: &[Value], sid: u64) -> Vec<Vec<u64>> {
    let mut runs: Vec<Vec<u64>> = vec![Vec::new()];
    for v in frames {
        if is_login(v, sid) {
            runs.push(Vec::new());
        } else if let Some(seq) = flood_seq(v, sid) {
            let run = runs.last_mut().expect("a run");
            if let Some(last) = run.last() {
                assert!(
                    seq > *last,
                    "server {sid}: Seq {seq} after {last} in one connection (duplicated or reordered)"
                );
            }
            run.push(seq);
        }
    }
    runs
}

fn floods_since_last_login(frames: &[Value], sid: u64) -> usize {
    let start = frames.iter().rposition(|v| is_login(v, sid)).unwrap_or(0);
    frames[start..]
        .iter()
        .filter(|v| flood_seq(v, sid).is_some())
        .count()
}

fn flood(rate: u64) -> FloodSpec {
    FloodSpec {
        rate_per_s: Some(rate),
        count: None,
        event_bytes: 200,
    }
}

async fn wait_logins(sim: &SimPbx, n: u64) -> Duration {
    let t = Instant::now();
    assert!(
        sim.wait_for(PATIENCE * 2, |s| s.logins_ok >= n).await,
        "no login #{n}: {:?}",
        sim.stats()
    );
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_ten_pbxs_one_login_each_spread_and_a_clean_stop_hands_over_at_once() {
    let redis = redis_or_skip!();
    let pbxs = sims(10).await;
    let mut hubs = start_nodes(&redis, &["a", "b", "c"], &pbxs);
    let o = wait_owners(&hubs[0], 10, |o| {
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for n in o.values() {
            *load.entry(n).or_default() += 1;
        }
        load.len() == 3 && load.values().all(|l| (3..=4).contains(l))
    })
    .await;
    for (i, p) in pbxs.iter().enumerate() {
        assert!(
            p.wait_for(PATIENCE, |s| s.logged_in == 1).await,
            "pbx{} not logged in once: {:?}",
            i + 1,
            p.stats()
        );
    }
    for hub in &hubs {
        for id in 1..=10 {
            hub.wait_status(id, "Connected").await;
        }
    }
    // Watched for three leases: ownership stays put and no PBX ever sees two logins.
    let until = Instant::now() + Duration::from_millis(3 * LEASE_MS);
    while Instant::now() < until {
        for (i, p) in pbxs.iter().enumerate() {
            assert_eq!(
                p.stats().max_logged_in,
                1,
                "pbx{}: two logins at once",
                i + 1
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        owners(&hubs[1]).await,
        o,
        "nodes disagree or ownership moved"
    );

    // SIGTERM: c logs off its PBXs and releases them; the others take them without waiting
    // for the lease to expire.
    let of_c: Vec<u64> = o
        .iter()
        .filter(|(_, n)| *n == "c")
        .map(|(s, _)| *s)
        .collect();
    let before: Vec<u64> = of_c
        .iter()
        .map(|s| pbxs[*s as usize - 1].stats().logins_ok)
        .collect();
    hubs[2].signal("TERM");
    assert!(
        hubs[2].wait_exit_async(PATIENCE).await.is_some(),
        "c did not exit"
    );
    let stopped = Instant::now();
    for (s, n) in of_c.iter().zip(&before) {
        wait_logins(&pbxs[*s as usize - 1], n + 1).await;
    }
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_millis(LEASE_MS),
        "hand-over after a clean stop took {took:?} (lease {LEASE_MS} ms)"
    );
    let after = wait_owners(&hubs[0], 10, |o| o.values().all(|n| n != "c")).await;
    assert!(after.values().any(|n| n == "a") && after.values().any(|n| n == "b"));
    for (i, p) in pbxs.iter().enumerate() {
        assert_eq!(
            p.stats().max_logged_in,
            1,
            "pbx{}: two logins at once",
            i + 1
        );
    }
    eprintln!("clean stop: {} PBX(s) taken over in {took:?}", of_c.len());
}

/// A watcher on each of `hubs`, each started once its node sees pbx1 connected.
async fn watch_each(hubs: &[Amihub]) -> Vec<Watcher> {
    let mut watchers = Vec::new();
    for h in hubs {
        h.wait_status(1, "Connected").await;
        watchers.push(Watcher::start(h).await);
    }
    watchers
}

/// Three nodes over three PBXs, one owned by each node; returns pbx1's owner (an index into the
/// nodes) and a watcher on each other node, started once that node sees pbx1 connected.
async fn pbx1_watched_from_the_other_nodes(
    redis: &Redis,
) -> (Vec<SimPbx>, Vec<Amihub>, usize, Vec<Watcher>) {
    let pbxs = sims(3).await;
    let hubs = start_nodes(redis, &["a", "b", "c"], &pbxs);
    let o = wait_owners(&hubs[0], 3, |o| {
        o.values().collect::<BTreeSet<_>>().len() == 3
    })
    .await;
    let owner = ["a", "b", "c"]
        .iter()
        .position(|n| o[&1] == *n)
        .expect("owner of pbx1");
    let mut watchers = Vec::new();
    for i in (0..3).filter(|i| *i != owner) {
        hubs[i].wait_status(1, "Connected").await;
        watchers.push(Watcher::start(&hubs[i]).await);
    }
    (pbxs, hubs, owner, watchers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_owner_mid_flood_is_taken_over_within_the_lease_and_a_login() {
    let redis = redis_or_skip!();
    let (pbxs, mut hubs, owner, watchers) = pbx1_watched_from_the_other_nodes(&redis).await;
    let pbx = &pbxs[0];
    pbx.flood(flood(2000));
    for w in &watchers {
        w.wait("500 flood events", |f| floods_since_last_login(f, 1) >= 500)
            .await;
    }
    let logins = pbx.stats().logins_ok;
    hubs[owner].signal("KILL");
    assert!(hubs[owner].wait_exit_async(PATIENCE).await.is_some());
    let took = wait_logins(pbx, logins + 1).await;
    assert!(
        took < Duration::from_millis(LEASE_MS + TAKEOVER_SLACK_MS),
        "takeover took {took:?}"
    );
    pbx.flood(flood(2000));
    for w in &watchers {
        w.wait("Disconnected, then Connected, then 300 events", |f| {
            let down = f.iter().rposition(|v| is_status(v, 1, "Disconnected"));
            let up = f.iter().rposition(|v| is_login(v, 1));
            matches!((down, up), (Some(d), Some(u)) if u > d)
                && floods_since_last_login(f, 1) >= 300
        })
        .await;
        let runs = seq_runs(&w.frames(), 1);
        assert!(
            runs.iter().filter(|r| !r.is_empty()).count() >= 2,
            "{runs:?}"
        );
    }
    assert_eq!(pbx.stats().max_logged_in, 1, "two logins at once");
    eprintln!("kill -9: takeover (lease expiry + login) in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_its_lease_never_publishes_again() {
    let redis = redis_or_skip!();
    let (pbxs, hubs, owner, watchers) = pbx1_watched_from_the_other_nodes(&redis).await;
    let pbx = &pbxs[0];
    pbx.flood(flood(1000));
    for w in &watchers {
        w.wait("300 flood events", |f| floods_since_last_login(f, 1) >= 300)
            .await;
    }
    let logins = pbx.stats().logins_ok;
    hubs[owner].signal("STOP");
    let took = wait_logins(pbx, logins + 1).await;
    assert!(
        took < Duration::from_millis(LEASE_MS + TAKEOVER_SLACK_MS),
        "takeover took {took:?}"
    );
    // Both connections flood now: the new owner's, and the paused one's, which it will read
    // (with Seqs from 1 again) once it runs.
    pbx.flood(flood(1000));
    for w in &watchers {
        w.wait("300 events from the new owner", |f| {
            floods_since_last_login(f, 1) >= 300
        })
        .await;
    }
    hubs[owner].signal("CONT");
    assert!(
        pbx.wait_for(PATIENCE, |s| s.logged_in == 1).await,
        "the paused owner kept its AMI connection: {:?}",
        pbx.stats()
    );
    // Long enough for anything it read to have come through, had it been published.
    let marks: Vec<usize> = watchers.iter().map(|w| w.frames().len()).collect();
    for (w, mark) in watchers.iter().zip(&marks) {
        w.wait("300 more events", |f| {
            f[*mark..]
                .iter()
                .filter(|v| flood_seq(v, 1).is_some())
                .count()
                >= 300
        })
        .await;
        let runs = seq_runs(&w.frames(), 1);
        assert!(
            runs.iter().filter(|r| !r.is_empty()).count() >= 2,
            "{runs:?}"
        );
    }
    let stale = hubs[owner].lines();
    assert!(
        stale
            .iter()
            .any(|l| l.contains("lost lease") || l.contains("fenced off")),
        "the paused owner never noticed: {stale:#?}"
    );
}

/// Each action's own response (by what it answers), carrying `id`.
fn answers(v: &Value, action: &str) -> bool {
    let d = &v["data"];
    match action {
        "Ping" => d["Ping"] == "Pong",
        "CoreStatus" => d.get("CoreCurrentCalls").is_some(),
        "CoreSettings" => d.get("AsteriskVersion").is_some(),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_from_every_node_reach_the_owner_and_reply_only_to_their_session() {
    let redis = redis_or_skip!();
    let pbxs = sims(1).await;
    let hubs = start_nodes(&redis, &["a", "b", "c"], &pbxs);
    wait_owners(&hubs[0], 1, |_| true).await;
    let mut clients = Vec::new();
    for h in &hubs {
        h.wait_status(1, "Connected").await;
        clients.push(h.ws().await);
    }
    // One ActionID for all three sessions on three nodes; each sends a different action.
    let actions = ["Ping", "CoreStatus", "CoreSettings"];
    for (c, a) in clients.iter_mut().zip(actions) {
        c.send_json(json!({"Action": a, "AMIServerID": 1, "ActionID": "same"}))
            .await;
    }
    for (c, a) in clients.iter_mut().zip(actions) {
        let r = c
            .wait_for("its response", |v| {
                v["type"] == 4 && v["data"]["ActionID"] == "same"
            })
            .await;
        assert!(answers(&r, a), "{a} got someone else's reply: {r}");
    }
    // A second round trip each: a misrouted reply would have arrived before it.
    for (i, c) in clients.iter_mut().enumerate() {
        let id = format!("fence-{i}");
        c.send_json(json!({"Action": "Ping", "AMIServerID": 1, "ActionID": id}))
            .await;
        c.wait_for("the fence reply", |v| v["data"]["ActionID"] == id.as_str())
            .await;
        let same: Vec<&Value> = c
            .seen
            .iter()
            .filter(|v| v["data"]["ActionID"] == "same")
            .collect();
        assert_eq!(same.len(), 1, "node {i} saw: {same:#?}");
        let foreign = c.seen.iter().any(|v| {
            v["data"]["ActionID"]
                .as_str()
                .is_some_and(|x| x.starts_with("fence-") && x != id)
        });
        assert!(!foreign, "node {i} saw another session's reply");
    }
    // The HTTP API on every node, whoever owns the PBX.
    for h in &hubs {
        let (status, body) = h
            .http(
                "POST",
                "/api/v1/servers/1/actions",
                &[("Content-Type", "application/json")],
                r#"{"Action":"Ping"}"#,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["response"]["Ping"], "Pong", "{v}");
    }
    assert_eq!(pbxs[0].stats().max_logged_in, 1);
}

/// An AJAM `GET /rawman?…` with the session cookie, if any: (response head, body).
async fn rawman(addr: std::net::SocketAddr, query: &str, cookie: Option<&str>) -> (String, String) {
    let cookie = cookie
        .map(|c| format!("Cookie: mansession_id=\"{c}\"\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /rawman?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}Connection: close\r\n\r\n"
    );
    let (status, head, body) = http_raw(addr, req.as_bytes()).await;
    assert_eq!(status, 200, "{query}: {head}{body}");
    (head, body)
}

/// The AJAM session id in a login's `Set-Cookie`.
fn ajam_cookie(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let v = value.trim().strip_prefix("mansession_id=\"")?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| v.split('"').next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no AJAM session cookie in {head}"))
}

/// SPEC §8/§9 in a cluster: an AMI listener session and an AJAM session on each of two nodes
/// send different actions with one ActionID; whichever node owns the PBX runs them, and each
/// session gets its own reply, never the other node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_listener_and_ajam_actions_from_every_node_reply_only_to_their_session() {
    let redis = redis_or_skip!();
    let pbxs = sims(1).await;
    let hash = amihub::auth::hash_password("amp111").expect("hash");
    let extra = format!(
        "[ami_listener]\nlisten = \"127.0.0.1:0\"\n\
         [[users]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nami_secret = \"amp111\"\n\
         actions = [\"*\"]\nadmin = true\n"
    );
    let hubs: Vec<Amihub> = ["a", "b"]
        .iter()
        .map(|n| Amihub::start(&format!("{}{extra}", node_config(&redis, n, &pbxs))))
        .collect();
    // (action, a header only its reply has), one per node.
    let asks = [
        ("CoreStatus", "CoreCurrentCalls"),
        ("CoreSettings", "AsteriskVersion"),
    ];
    let mut amis = Vec::new();
    for (h, (action, mark)) in hubs.iter().zip(asks) {
        let mut c = AmiClient::connect(h.ami_addr()).await;
        c.login("admin", "amp111", "off").await;
        // Until a node owns the PBX and it is connected, the action fails with an error reply.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            c.send(&format!("Action: {action}\r\nActionID: same\r\n\r\n"))
                .await;
            let (reply, _) = c
                .packet_where(|p| header(p, "ActionID") == Some("same"))
                .await;
            if header(&reply, "Response") == Some("Success") {
                assert!(header(&reply, mark).is_some(), "{action} got: {reply}");
                break;
            }
            assert!(Instant::now() < deadline, "{action} kept failing: {reply}");
        }
        amis.push(c);
    }
    // A second round trip on each AMI session: a reply routed to the wrong node's session would
    // have arrived before its own.
    for (i, c) in amis.iter_mut().enumerate() {
        let fence = format!("fence-{i}");
        c.send(&format!("Action: CoreStatus\r\nActionID: {fence}\r\n\r\n"))
            .await;
        let (_, before) = c
            .packet_where(|p| header(p, "ActionID") == Some(fence.as_str()))
            .await;
        assert!(
            before.iter().all(|p| header(p, "ActionID") != Some("same")
                && !header(p, "ActionID").is_some_and(|x| x.starts_with("fence-"))),
            "node {i}'s AMI session saw another session's reply: {before:?}"
        );
    }
    for (h, (action, mark)) in hubs.iter().zip(asks) {
        let (head, body) = rawman(h.addr, "action=login&username=admin&secret=amp111", None).await;
        assert!(body.contains("Authentication accepted"), "{body}");
        let cookie = ajam_cookie(&head);
        let q = format!("action={}&actionid=same", action.to_lowercase());
        let (_, body) = rawman(h.addr, &q, Some(&cookie)).await;
        assert!(
            body.contains("Response: Success") && body.contains(mark),
            "AJAM {action}: {body}"
        );
        let other = asks.iter().find(|(a, _)| *a != action).map(|(_, m)| *m);
        assert!(
            other.is_some_and(|m| !body.contains(m)),
            "AJAM {action} got another reply too: {body}"
        );
    }
    assert_eq!(pbxs[0].stats().max_logged_in, 1);
}

/// Flood Seqs of server `sid` in `frames`, in order.
fn seqs(frames: &[&Value], sid: u64) -> Vec<u64> {
    frames.iter().filter_map(|v| flood_seq(v, sid)).collect()
}

/// Offset → flood Seq of the frames of `epoch` in `frames`.
fn seq_at(frames: &[Value], sid: u64, epoch: &str) -> BTreeMap<u64, u64> {
    frames
        .iter()
        .filter_map(|v| {
            let (e, o) = position(v, sid)?;
            (e == epoch).then_some((o, flood_seq(v, sid)?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_one_node_resumes_on_another_with_exactly_what_it_missed() {
    let redis = redis_or_skip!();
    let pbxs = sims(1).await;
    let hubs = start_nodes(&redis, &["a", "b"], &pbxs);
    let o = wait_owners(&hubs[0], 1, |_| true).await;
    // The session starts on the node that does not own pbx1 and comes back on the owner.
    let (from, to) = if o[&1] == "a" { (1, 0) } else { (0, 1) };
    for h in &hubs {
        h.wait_status(1, "Connected").await;
    }
    let mut first = hubs[from].ws().await;
    first
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let pbx = &pbxs[0];
    pbx.flood(flood(2000));
    first
        .wait_for("500 flood events", |v| flood_seq(v, 1) >= Some(500))
        .await;
    let (epoch, offset) = last_position(&first, 1);
    let before = std::mem::take(&mut first.seen);
    drop(first);
    // The outage: the socket is gone for a second while the flood goes on.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let url = hubs[to].ws_url(&format!("/ws?resume=1:{epoch}:{offset}"));
    let mut back = Client::connect(&url).await;
    let reply = back.wait_for("the Resume reply", is_resume_reply).await;
    let replayed = reply["data"]["Servers"]["1"]["Replayed"]
        .as_u64()
        .unwrap_or_else(|| panic!("not resumed on the other node: {reply}"));
    assert!(replayed >= 1000, "only {replayed} frames replayed: {reply}");
    assert_eq!(reply["data"]["Servers"]["1"]["epoch"], epoch.as_str());
    let resumed_at = back.seen.iter().rev().find_map(|v| flood_seq(v, 1));
    let target = resumed_at.expect("replayed flood events") + 1000;
    back.wait_for("1000 live flood events after the replay", |v| {
        flood_seq(v, 1) >= Some(target)
    })
    .await;
    pbx.stop_flood();

    let all: Vec<&Value> = before.iter().chain(&back.seen).collect();
    let seqs = seqs(&all, 1);
    assert_eq!(seqs.first(), Some(&1));
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a Seq was lost, doubled or reordered");
    }
    assert_offsets_run_on(&all, 1, &epoch, offset);
    eprintln!("resume on another node: {replayed} frames replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_flood_is_reported_recovered_from_and_a_resume_gap_where_history_was_lost(
) {
    let mut redis = redis_or_skip!();
    let pbxs = sims(1).await;
    let hubs = start_nodes(&redis, &["a", "b"], &pbxs);
    wait_owners(&hubs[0], 1, |_| true).await;
    let watchers = watch_each(&hubs).await;
    let pbx = &pbxs[0];
    pbx.flood(flood(1000));
    for w in &watchers {
        w.wait("300 flood events", |f| floods_since_last_login(f, 1) >= 300)
            .await;
    }
    let old = watchers[0].last_position(1);
    let logins = pbx.stats().logins_ok;

    redis.kill();
    for h in &hubs {
        wait_metric_at(h.addr, "amihub_cluster_redis_up", &[], |v| v == 0).await;
        let (status, body) = h.http("GET", "/readyz", &[], "").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("Redis"), "{body}");
    }
    for w in &watchers {
        w.wait("Disconnected: cluster store unreachable", |f| {
            f.iter().any(|v| {
                is_status(v, 1, "Disconnected")
                    && v["data"]["Reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("cluster store unreachable"))
            })
        })
        .await;
    }
    redis.restart().await;
    for h in &hubs {
        wait_metric_at(h.addr, "amihub_cluster_redis_up", &[], |v| v == 1).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, _) = h.http("GET", "/readyz", &[], "").await;
            if status == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz stays {status}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // An owner takes the PBX again by itself (a new login) and the flood goes on.
    wait_logins(pbx, logins + 1).await;
    pbx.flood(flood(1000));
    for w in &watchers {
        w.wait("Connected again, then 300 events", |f| {
            floods_since_last_login(f, 1) >= 300
        })
        .await;
    }
    // A new history: every node names it alike and numbers its frames alike.
    let new = watchers[0].last_position(1);
    assert_ne!(new.0, old.0, "history was lost but the epoch stayed");
    let (f0, f1) = (watchers[0].frames(), watchers[1].frames());
    for epoch in [&old.0, &new.0] {
        let (a, b) = (seq_at(&f0, 1, epoch), seq_at(&f1, 1, epoch));
        let common: Vec<&u64> = a.keys().filter(|o| b.contains_key(o)).collect();
        assert!(
            common.len() >= 250,
            "epoch {epoch}: {} offsets on both",
            common.len()
        );
        for o in common {
            assert_eq!(a[o], b[o], "epoch {epoch} offset {o}: nodes disagree");
        }
    }
    for (i, h) in hubs.iter().enumerate() {
        // Where history was lost: a gap.
        let url = h.ws_url(&format!("/ws?resume=1:{}:{}", old.0, old.1));
        let mut c = Client::connect(&url).await;
        c.wait_for("resume gap", |v| is_gap(v, 1)).await;
        // Where it was not: every Seq after the position, once, in order.
        let (epoch, offset) = (&new.0, new.1.saturating_sub(100));
        let url = h.ws_url(&format!("/ws?resume=1:{epoch}:{offset}"));
        let mut c = Client::connect(&url).await;
        let reply = c.wait_for("the Resume reply", is_resume_reply).await;
        let n = reply["data"]["Servers"]["1"]["Replayed"].as_u64();
        assert!(n >= Some(100), "node {i}: {reply}");
        let seen: Vec<&Value> = c.seen.iter().collect();
        assert_offsets_run_on(&seen, 1, epoch, offset + 1);
        let s = seqs(&seen, 1);
        for w in s.windows(2) {
            assert_eq!(w[1], w[0] + 1, "node {i}: a Seq lost, doubled or reordered");
        }
    }
    pbx.stop_flood();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_after_the_frames_were_published_replays_them_from_the_stream() {
    let redis = redis_or_skip!();
    let pbxs = sims(1).await;
    let mut hubs = start_nodes(&redis, &["a"], &pbxs);
    hubs[0].wait_status(1, "Connected").await;
    let mut first = hubs[0].ws().await;
    first
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let pbx = &pbxs[0];
    pbx.flood(FloodSpec {
        rate_per_s: Some(2000),
        count: Some(1500),
        event_bytes: 200,
    });
    first
        .wait_for("100 flood events", |v| flood_seq(v, 1) >= Some(100))
        .await;
    let (epoch, offset) = last_position(&first, 1);
    let upto = first
        .seen
        .iter()
        .filter_map(|v| flood_seq(v, 1))
        .next_back()
        .expect("a Seq");
    first
        .wait_for("the last flood event", |v| flood_seq(v, 1) == Some(1500))
        .await;
    // Node b starts only now: all it can replay is what the stream holds.
    hubs.push(Amihub::start(&node_config(&redis, "b", &pbxs)));
    hubs[1].wait_status(1, "Connected").await;
    let url = hubs[1].ws_url(&format!("/ws?resume=1:{epoch}:{offset}"));
    let mut back = Client::connect(&url).await;
    let reply = back.wait_for("the Resume reply", is_resume_reply).await;
    assert!(
        reply["data"]["Servers"]["1"]["Replayed"].as_u64() >= Some(1500 - upto),
        "{reply}"
    );
    let seen: Vec<&Value> = back.seen.iter().collect();
    assert_eq!(
        seqs(&seen, 1),
        ((upto + 1)..=1500).collect::<Vec<u64>>(),
        "every Seq after the position, once, in order"
    );
    assert_offsets_run_on(&seen, 1, &epoch, offset + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_frames_were_trimmed_before_it_read_them_tells_its_sessions_of_the_gap() {
    // A short shared history: 100 frames. The node that does not own pbx1 is paused while
    // the owner publishes a thousand more, so the stream is trimmed past where its reader
    // stopped; once it runs again its sessions must hear of the frames they missed (a type 7
    // "resume gap", as a resume would say) and then get live traffic again.
    let redis = redis_or_skip!();
    let pbxs = sims(1).await;
    let config = |node: &str| {
        format!(
            "{}[history]\nmax_frames = 100\n",
            node_config(&redis, node, &pbxs)
        )
    };
    let hubs = [Amihub::start(&config("a")), Amihub::start(&config("b"))];
    let o = wait_owners(&hubs[0], 1, |_| true).await;
    let owner = usize::from(o[&1] == "b");
    let quiet = 1 - owner;
    let watchers = watch_each(&hubs).await;
    let pbx = &pbxs[0];
    pbx.flood(flood(1000));
    watchers[quiet]
        .wait("100 flood events", |f| floods_since_last_login(f, 1) >= 100)
        .await;
    hubs[quiet].signal("STOP");
    let mark = watchers[owner].frames().len();
    watchers[owner]
        .wait("1,000 more events on the owner", |f| {
            f[mark..]
                .iter()
                .filter(|v| flood_seq(v, 1).is_some())
                .count()
                >= 1000
        })
        .await;
    hubs[quiet].signal("CONT");
    watchers[quiet]
        .wait("a resume gap, then live events again", |f| {
            f.iter().position(|v| is_gap(v, 1)).is_some_and(|at| {
                f[at + 1..]
                    .iter()
                    .filter(|v| flood_seq(v, 1).is_some())
                    .count()
                    >= 100
            })
        })
        .await;
    pbx.stop_flood();
    let frames = watchers[quiet].frames();
    let at = frames.iter().position(|v| is_gap(v, 1)).expect("the gap");
    let gap = &frames[at];
    assert!(
        gap["data"]["Detail"]
            .as_str()
            .is_some_and(|d| d.contains("left the shared history")),
        "{gap}"
    );
    // The Seqs it got run on without a hole on either side of the gap, and jump across it.
    let frames: Vec<&Value> = frames.iter().collect();
    let (before, after) = (seqs(&frames[..at], 1), seqs(&frames[at + 1..], 1));
    for run in [&before, &after] {
        assert!(run.windows(2).all(|w| w[1] == w[0] + 1), "{run:?}");
    }
    let (last, next) = (before.last().copied(), after.first().copied());
    assert!(
        next > last.map(|l| l + 1),
        "no frame was missed: {last:?} then {next:?}"
    );
    assert!(
        hubs[quiet].log_contains("left the shared history"),
        "the node did not log the gap"
    );
}
