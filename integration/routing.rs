//! Reply routing against scripted PBXs over real sockets: an async Originate replayed byte for
//! byte from a real Asterisk 22 (capture 10) completes over HTTP and frees its WebSocket slot,
//! and a hostile PBX spraying guessed ActionIDs cannot answer anyone else's actions.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use amihub::ami::{AmiDecoder, Frame, Limits, Packet};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/captures");

/// What a scripted PBX writes in answer to one action (empty: nothing).
type Script = dyn Fn(&Packet) -> Vec<u8> + Send + Sync;

/// A scripted fake PBX on 127.0.0.1: greets with the Asterisk banner, answers each action with
/// what its script returns, and writes whatever the test injects. One connection at a time.
struct FakePbx {
    addr: SocketAddr,
    inject: mpsc::UnboundedSender<Vec<u8>>,
}

impl FakePbx {
    async fn start(script: Arc<Script>) -> FakePbx {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (inject, mut injected) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (rd, mut wr) = stream.into_split();
                let mut actions = FramedRead::new(rd, AmiDecoder::new(Limits::default(), false));
                if wr
                    .write_all(b"Asterisk Call Manager/11.0.0\r\n")
                    .await
                    .is_err()
                {
                    continue;
                }
                loop {
                    let out = tokio::select! {
                        a = actions.next() => match a {
                            Some(Ok(Frame::Packet(p))) => script(&p),
                            Some(Ok(_)) => continue,
                            _ => break,
                        },
                        bytes = injected.recv() => match bytes {
                            Some(b) => b,
                            None => return,
                        },
                    };
                    if wr.write_all(&out).await.is_err() {
                        break;
                    }
                }
            }
        });
        FakePbx { addr, inject }
    }

    /// Writes `bytes` on the current connection, after anything already queued.
    fn inject(&self, bytes: Vec<u8>) {
        self.inject.send(bytes).expect("fake PBX is running");
    }

    /// A `[[servers]]` entry for it (plain login, no keepalive pings in the way).
    fn server_toml(&self, id: u32, name: &str) -> String {
        format!(
            "[[servers]]\nid = {id}\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nusername = \"admin\"\nsecret = \"secret\"\nauth = \"plain\"\nping_interval_s = 3600\n",
            self.addr.ip(),
            self.addr.port()
        )
    }
}

/// `Response: <status>` with the action's ActionID and a Message, as Asterisk writes it.
fn reply(p: &Packet, status: &str, message: &str) -> Vec<u8> {
    let id = p.action_id().unwrap_or("");
    format!("Response: {status}\r\nActionID: {id}\r\nMessage: {message}\r\n\r\n").into_bytes()
}

/// Login, Ping and anything else answered the way Asterisk answers them.
fn basic_answer(p: &Packet) -> Vec<u8> {
    match p.get("Action").unwrap_or("") {
        "Login" => reply(p, "Success", "Authentication accepted"),
        "Ping" => {
            let id = p.action_id().unwrap_or("");
            format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1795353467.091071\r\n\r\n").into_bytes()
        }
        _ => reply(p, "Error", "Invalid/unknown command"),
    }
}

/// What Asterisk 22 wrote after an async Originate (capture 10): from its response to the last
/// event before the next action's response, `OriginateResponse` included, exactly as recorded.
fn capture_10_originate_bytes() -> Vec<u8> {
    let bytes =
        std::fs::read(format!("{CAPTURES}/10_originate_local100_async.txt")).expect("capture 10");
    let text = String::from_utf8(bytes).expect("capture 10 is text");
    let start = text
        .find("Response: Success\r\nActionID: originate-39\r\n")
        .expect("the Originate response");
    let end = text
        .find("Response: Success\r\nActionID: coreshowchannels-40\r\n")
        .expect("the next response");
    let segment = &text[start..end];
    assert!(segment.contains("Event: OriginateResponse\r\n"));
    segment.as_bytes().to_vec()
}

/// A fake PBX that answers every Originate with capture 10's bytes under the action's own id.
async fn capture_10_pbx() -> FakePbx {
    let recorded = capture_10_originate_bytes();
    FakePbx::start(Arc::new(move |p: &Packet| {
        if p.get("Action") == Some("Originate") {
            let id = p.action_id().unwrap_or("");
            String::from_utf8_lossy(&recorded)
                .replace("ActionID: originate-39\r\n", &format!("ActionID: {id}\r\n"))
                .into_bytes()
        } else {
            basic_answer(p)
        }
    }))
    .await
}

fn originate(id: &str) -> Value {
    json!({"Action":"Originate","ActionID":id,"AMIServerID":1,"Channel":"Local/100@demo",
           "Application":"Wait","Data":"1","Async":"true","CallerID":"AMI Test <5551000>"})
}

/// A message for our action `id` (a response or one of its events).
fn for_action(v: &Value, id: &str) -> bool {
    v["data"]["ActionID"] == id
}

#[tokio::test]
async fn an_async_originate_replayed_from_asterisk_completes_over_http() {
    let pbx = capture_10_pbx().await;
    let hub = Amihub::start(&pbx.server_toml(1, "pbx1"));
    hub.wait_status(1, "Connected").await;
    let body = originate("crm-1").to_string();
    let (status, text) = hub
        .http(
            "POST",
            "/api/v1/servers/1/actions?timeout_s=3",
            &[("Content-Type", "application/json")],
            &body,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["response"]["Response"], "Success", "{v}");
    assert_eq!(v["response"]["Message"], "Originate successfully queued");
    assert_eq!(v["response"]["ActionID"], "crm-1");
    let events = v["events"].as_array().expect("events");
    let result = events
        .iter()
        .find(|e| e["Event"] == "OriginateResponse")
        .unwrap_or_else(|| panic!("no OriginateResponse in {v}"));
    assert_eq!(result["Response"], "Success", "{result}");
    assert_eq!(result["Reason"], "4");
    assert_eq!(result["ActionID"], "crm-1");
    assert_eq!(result["Channel"], "Local/100@demo-00000000;1");
    // The call's other events carry no ActionID: they are everyone's, not this result's.
    assert_eq!(events.len(), 1, "{v}");
}

#[tokio::test]
async fn async_originates_free_their_websocket_slot_when_answered() {
    const CAP: usize = 3;
    let pbx = capture_10_pbx().await;
    let hub = Amihub::start(&format!(
        "[limits]\nmax_pending_actions_per_session = {CAP}\n{}",
        pbx.server_toml(1, "pbx1")
    ));
    let mut c = hub.ws().await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    // Three times the cap, one after another: each slot must be free once its call is placed.
    for n in 0..CAP * 3 {
        let id = format!("o{n}");
        c.send_json(originate(&id)).await;
        let r = c
            .wait_for("the Originate response", |v| for_action(v, &id))
            .await;
        assert_eq!(r["type"], 4, "{r}");
        assert_eq!(r["data"]["Response"], "Success", "{r}");
        let e = c
            .wait_for("its OriginateResponse", |v| {
                for_action(v, &id) && v["data"]["Event"] == "OriginateResponse"
            })
            .await;
        assert_eq!(e["type"], 3, "{e}");
        assert_eq!(e["data"]["Response"], "Success", "{e}");
    }
    let refused: Vec<&Value> = c
        .seen
        .iter()
        .filter(|v| v["type"] == 8 && v["data"]["Response"] == "Error")
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    // The events between response and result reached the session once, as broadcasts.
    let newchannels = c
        .seen
        .iter()
        .filter(|v| is_event(v, 1, "Newchannel"))
        .count();
    assert_eq!(newchannels, 2 * CAP * 3);
}

const ALICE: &str = "alice-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef";

#[tokio::test]
async fn a_hostile_pbx_spraying_guessed_action_ids_reaches_no_other_server_s_user() {
    let victim = sim("pbx1").await;
    let hostile = FakePbx::start(Arc::new(basic_answer)).await;
    let hub = Amihub::start(&format!(
        "[limits]\naction_timeout_s = 2\n{}{}\
         [[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nservers = [\"1\"]\n\
         [[users]]\nname = \"ops\"\ntoken = \"{OPS}\"\nactions = [\"*\"]\nadmin = true\n",
        server_toml(
            1,
            "pbx1",
            &victim,
            "admin",
            "secret",
            "ping_interval_s = 3600"
        ),
        hostile.server_toml(2, "hostile"),
    ));
    let mut ops = Client::connect(&hub.ws_url(&format!("/ws?token={OPS}"))).await;
    for id in [1, 2] {
        ops.wait_for("Connected", |v| is_status(v, id, "Connected"))
            .await;
    }
    let mut alice = Client::connect(&hub.ws_url(&format!("/ws?token={ALICE}"))).await;
    alice
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    // Alice's actions stay in flight: her PBX takes them but does not answer.
    victim.set_silent(true);
    let mut reached = victim.actions();
    alice
        .send_json(json!({"Action":"Ping","ActionID":"p1","AMIServerID":1}))
        .await;
    let auth = format!("Bearer {ALICE}");
    let addr = hub.addr;
    let http = tokio::spawn(async move {
        http_to(
            addr,
            "POST",
            "/api/v1/servers/1/actions",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            r#"{"Action":"CoreShowChannels","ActionID":"h1"}"#,
        )
        .await
    });
    let mut pending = 0;
    while pending < 2 {
        let p = tokio::time::timeout(PATIENCE, reached.recv())
            .await
            .expect("alice's actions reach her PBX")
            .expect("action");
        if p.action_id().is_some_and(|i| i.starts_with("amihub.")) {
            pending += 1;
        }
    }
    // The hostile PBX answers every id it can guess, responses and list items alike.
    let mut spray = String::new();
    for n in 0..=2000 {
        spray.push_str(&format!(
            "Response: Success\r\nActionID: amihub.{n}\r\nMessage: forged\r\n\r\n\
             Event: CoreShowChannel\r\nActionID: amihub.{n}\r\nChannel: forged\r\n\r\n"
        ));
    }
    spray.push_str("Event: SprayDone\r\n\r\n");
    hostile.inject(spray.into_bytes());
    ops.wait_for("the end of the spray", |v| is_event(v, 2, "SprayDone"))
        .await;
    // Alice's own actions end the only way they can: unanswered.
    let r = alice
        .wait_for("p1's end", |v| v["data"]["ActionID"] == "p1")
        .await;
    assert_eq!(r["type"], 8, "{r}");
    assert_eq!(r["data"]["Response"], "Error", "{r}");
    let (status, body) = http.await.expect("http task");
    assert_eq!(status, 504, "{body}");
    let leaked: Vec<&Value> = alice
        .seen
        .iter()
        .filter(|v| v["server_id"] == 2 || v.to_string().contains("forged"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
    // Alice's session still routes: her PBX answers again.
    victim.set_silent(false);
    alice
        .send_json(json!({"Action":"Ping","ActionID":"p2","AMIServerID":1}))
        .await;
    let r = alice
        .wait_for("p2", |v| v["data"]["ActionID"] == "p2")
        .await;
    assert_eq!(
        (r["type"].clone(), r["server_id"].clone()),
        (json!(4), json!(1)),
        "{r}"
    );
    // Nothing of the spray went to anyone: the orphaned replies were dropped, not broadcast.
    assert!(
        !ops.seen.iter().any(|v| v.to_string().contains("forged")),
        "{:#?}",
        ops.seen
    );
}

const VIEWER: &str = "viewer-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";

/// Every action the PBX received up to a marker Ping that `c` sends (the only client Ping).
async fn actions_until_marker(
    rx: &mut tokio::sync::broadcast::Receiver<Packet>,
    c: &mut Client,
    marker: &str,
) -> Vec<Packet> {
    c.send_json(json!({"Action":"Ping","ActionID":marker,"AMIServerID":1}))
        .await;
    c.wait_for("the marker's response", |v| v["data"]["ActionID"] == marker)
        .await;
    let mut seen = Vec::new();
    loop {
        let p = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("the marker reaches the PBX")
            .expect("action");
        let marker = p.get("Action") == Some("Ping")
            && p.action_id().is_some_and(|i| i.starts_with("amihub."));
        seen.push(p);
        if marker {
            return seen;
        }
    }
}

#[tokio::test]
async fn status_variables_need_the_getvar_right() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[[users]]\nname = \"viewer\"\ntoken = \"{VIEWER}\"\n\
         [[users]]\nname = \"reader\"\ntoken = \"{READER}\"\nactions = [\"Status\", \"Getvar\", \"Ping\"]\n",
        server_toml(1, "pbx1", &pbx, "admin", "secret", "ping_interval_s = 3600"),
    ));
    let mut viewer = Client::connect(&hub.ws_url(&format!("/ws?token={VIEWER}"))).await;
    viewer
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    let mut rx = pbx.actions();
    let secret = "AST_CONFIG(manager.conf,admin,secret)";
    let tricks = [
        json!({"Action":"Status","ActionID":"s1","AMIServerID":1,"Variables":secret}),
        json!({"Action":"status","ActionID":"s2","AMIServerID":1,"variables":["CHANNEL(name)",secret]}),
        json!({"Action":"Status","ActionID":"s3","AMIServerID":1,"AllVariables":true}),
        json!({"Action":"Status","ActionID":"s4","AMIServerID":1,"Channel":"x","VARIABLES":"ENV(HOME)"}),
    ];
    for t in &tricks {
        viewer.send_json(t.clone()).await;
        let id = t["ActionID"].as_str().unwrap_or("");
        let r = viewer.wait_for(id, |v| v["data"]["ActionID"] == id).await;
        assert_eq!(r["type"], 8, "{r}");
        assert_eq!(r["data"]["Response"], "Error", "{r}");
        let msg = r["data"]["Message"].as_str().unwrap_or("");
        assert!(msg.contains("Getvar") && msg.contains("viewer"), "{msg}");
    }
    let auth = format!("Bearer {VIEWER}");
    for t in &tricks {
        let (status, body) = hub
            .http(
                "POST",
                "/api/v1/servers/1/actions",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                &t.to_string(),
            )
            .await;
        assert_eq!(status, 403, "{t}: {body}");
        assert!(body.contains("Getvar"), "{body}");
    }
    // A plain Status is still read-only, and still works.
    viewer
        .send_json(json!({"Action":"Status","ActionID":"plain","AMIServerID":1}))
        .await;
    let r = viewer
        .wait_for("plain Status", |v| v["data"]["ActionID"] == "plain")
        .await;
    assert_eq!(r["type"], 4, "{r}");
    let seen = actions_until_marker(&mut rx, &mut viewer, "marker").await;
    let statuses: Vec<&Packet> = seen
        .iter()
        .filter(|p| {
            p.get("Action")
                .is_some_and(|a| a.eq_ignore_ascii_case("Status"))
        })
        .collect();
    assert_eq!(statuses.len(), 1, "{seen:?}");
    assert!(statuses[0].get("Variables").is_none() && statuses[0].get("AllVariables").is_none());

    // A user who may Getvar may ask Status for variables: the header reaches the PBX.
    let mut reader = Client::connect(&hub.ws_url(&format!("/ws?token={READER}"))).await;
    reader
        .wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    reader
        .send_json(
            json!({"Action":"Status","ActionID":"r1","AMIServerID":1,"Variables":"CHANNEL(name)"}),
        )
        .await;
    let r = reader
        .wait_for("reader's Status", |v| v["data"]["ActionID"] == "r1")
        .await;
    assert_eq!(r["type"], 4, "{r}");
    let seen = actions_until_marker(&mut rx, &mut reader, "marker2").await;
    assert!(
        seen.iter()
            .any(|p| p.get("Action") == Some("Status")
                && p.get("Variables") == Some("CHANNEL(name)")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_challenge_answered_without_a_challenge_is_a_failed_login() {
    let received = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = received.clone();
    let pbx = FakePbx::start(Arc::new(move |p: &Packet| {
        let name = p.get("Action").unwrap_or("").to_string();
        log.lock().expect("log").push(name.clone());
        match name.as_str() {
            // Success, but no `Challenge:` to answer.
            "Challenge" => reply(p, "Success", "Challenge issued"),
            _ => basic_answer(p),
        }
    }))
    .await;
    let toml = pbx
        .server_toml(1, "pbx1")
        .replace("auth = \"plain\"", "auth = \"md5\"");
    let hub = Amihub::start(&toml);
    hub.wait_status(1, "AuthFailed").await;
    let v = hub.get_json("/api/v1/servers").await;
    let reason = v["servers"][0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("without a Challenge header"), "{v}");
    let seen = received.lock().expect("log").clone();
    assert!(seen.iter().any(|a| a == "Challenge"), "{seen:?}");
    assert!(!seen.iter().any(|a| a == "Login"), "{seen:?}");
    assert!(
        !seen.iter().any(|a| a != "Challenge"),
        "nothing else was sent: {seen:?}"
    );
}

#[tokio::test]
async fn admin_only_proxy_actions_are_refused_with_the_clients_action_id() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[[users]]\nname = \"viewer\"\ntoken = \"{VIEWER}\"\n",
        server_toml(1, "pbx1", &pbx, "admin", "secret", "ping_interval_s = 3600"),
    ));
    let mut c = Client::connect(&hub.ws_url(&format!("/ws?token={VIEWER}"))).await;
    for (n, name) in ["ListSessions", "AddServer", "DropServer"]
        .iter()
        .enumerate()
    {
        let id = format!("admin-{n}");
        c.send_json(json!({"ProxyAction":name,"ActionID":id,"AMIServerID":1}))
            .await;
        let r = c
            .wait_for("the refusal", |v| {
                v["type"] == 8 && v["data"]["Response"] == "Error"
            })
            .await;
        assert_eq!(r["data"]["ActionID"], id.as_str(), "{r}");
        assert!(r.to_string().contains("requires an admin user"), "{r}");
    }
}

/// The rule: a user's `events` list (and a Subscribe) narrows what reaches a session unasked;
/// the reply to the session's own action (response, list items, `…Complete`) is that action's
/// result, governed by `actions`, and arrives whole.
#[tokio::test]
async fn an_events_list_narrows_broadcasts_never_the_reply_to_ones_own_action() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&format!(
        "{}[[users]]\nname = \"hangups\"\ntoken = \"{VIEWER}\"\nevents = [\"Hangup\"]\n",
        server_toml(1, "pbx1", &pbx, "admin", "secret", "ping_interval_s = 3600"),
    ));
    let mut c = Client::connect(&hub.ws_url(&format!("/ws?token={VIEWER}"))).await;
    c.wait_for("Connected", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.emit(&[("Event", "QueueMember"), ("Queue", "unasked")]);
    c.send_json(json!({"Action":"QueueStatus","ActionID":"q1","AMIServerID":1}))
        .await;
    c.wait_for("QueueStatusComplete", |v| {
        v["data"]["ActionID"] == "q1" && v["data"]["Event"] == "QueueStatusComplete"
    })
    .await;
    pbx.emit(&[("Event", "Hangup"), ("Uniqueid", "marker")]);
    c.wait_for("the marker", |v| v["data"]["Uniqueid"] == "marker")
        .await;
    let events: Vec<&Value> = c.seen.iter().filter(|v| v["type"] == 3).collect();
    let mine = events
        .iter()
        .filter(|v| v["data"]["ActionID"] == "q1" && v["data"]["Event"] == "QueueMember")
        .count();
    assert!(mine > 0, "{events:#?}");
    assert!(
        events
            .iter()
            .all(|v| v["data"]["ActionID"] == "q1" || v["data"]["Event"] == "Hangup"),
        "only Hangup arrives unasked: {events:#?}"
    );
    // Over HTTP the result is the same whole list.
    let auth = format!("Bearer {VIEWER}");
    let (status, body) = hub
        .http(
            "POST",
            "/api/v1/servers/1/actions",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            r#"{"Action":"QueueStatus"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"QueueMember\"") && body.contains("QueueStatusComplete"),
        "{body}"
    );
}

#[tokio::test]
async fn subscribe_filters_are_bounded_and_rate_limited() {
    let pbx = sim("pbx1").await;
    let hub = Amihub::start(&server_toml(
        1,
        "pbx1",
        &pbx,
        "admin",
        "secret",
        "ping_interval_s = 3600",
    ));
    let mut c = hub.ws().await;
    let long = format!("Event: {}", "a".repeat(200));
    c.send_json(json!({"ProxyAction":"Subscribe","ActionID":"long","Filters":[long]}))
        .await;
    let r = c
        .wait_for("long", |v| v["data"]["ActionID"] == "long")
        .await;
    assert_eq!(r["data"]["Response"], "Error", "{r}");
    assert!(r.to_string().contains("longer than 128"), "{r}");
    // Back to back: the burst passes, the rest is refused with a clear error.
    for n in 0..30 {
        c.send_json(json!({"ProxyAction":"Subscribe","ActionID":format!("s{n}"),"Filters":["Event: Hangup"]}))
            .await;
    }
    let mut refused = 0;
    for n in 0..30 {
        let id = format!("s{n}");
        let r = c
            .wait_for(&id, |v| v["data"]["ActionID"] == id.as_str())
            .await;
        if r["data"]["Response"] == "Error" {
            assert!(
                r.to_string().contains("Subscribe rate limit exceeded"),
                "{r}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused} of 30 refused");
}
