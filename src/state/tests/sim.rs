//! The model against the real simulator over loopback: a state rebuilt from the snapshot actions
//! and then fed live demo traffic must agree with fresh list answers. The simulator queues each
//! answer under the same lock as its events, so at the first packet of an answer the live model
//! has seen exactly the events that answer reflects: the comparison is exact, not a tolerance.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::*;
use crate::ami::Action;
use crate::sim::{SimConfig, SimPbx};
use crate::state::snapshot_actions;

/// Patience for anything the simulator should do promptly.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long live traffic is fed before the first comparison.
const LIVE: Duration = Duration::from_secs(3);
/// Comparisons made, each after a further moment of traffic.
const ROUNDS: usize = 3;
/// The list actions asked again for each comparison, with the part of the model each lists.
const CHECKS: [(&str, &str); 4] = [
    ("CoreShowChannels", "channels"),
    ("BridgeList", "bridges"),
    ("QueueStatus", "queues"),
    ("DeviceStateList", "device_states"),
];

struct Conn {
    rd: FramedRead<OwnedReadHalf, AmiDecoder>,
    wr: OwnedWriteHalf,
}

impl Conn {
    async fn connect(pbx: &SimPbx) -> Conn {
        let stream = TcpStream::connect(pbx.addr()).await.expect("connect");
        let (rd, wr) = stream.into_split();
        let rd = FramedRead::new(rd, AmiDecoder::new(Limits::default(), true));
        Conn { rd, wr }
    }

    async fn write(&mut self, text: &str) {
        self.wr.write_all(text.as_bytes()).await.expect("write");
    }

    async fn send(&mut self, action: &Action) {
        let bytes = action.to_bytes().expect("encodable action");
        self.wr.write_all(&bytes).await.expect("write");
    }

    /// The next packet (the banner is skipped).
    async fn packet(&mut self) -> Packet {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.rd.next())
                .await
                .expect("the simulator went quiet")
                .expect("connection closed")
                .expect("read");
            match frame {
                Frame::Packet(p) => return p,
                Frame::Banner(_) => {}
                Frame::Discarded(reason) => panic!("discarded {reason:?}"),
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What must agree between the live model and a fresh one built from list answers.
fn essentials(snap: &Value) -> Value {
    let channels: Vec<Value> = list(snap, "channels")
        .iter()
        .map(|c| serde_json::json!([c["uniqueid"], c["channel"], c["state_code"], c["bridge"]]))
        .collect();
    let mut bridges: Vec<Value> = list(snap, "bridges")
        .iter()
        .map(|b| b["id"].clone())
        .collect();
    bridges.sort_by_key(|b| b.as_str().unwrap_or_default().to_owned());
    let queues: Vec<Value> = list(snap, "queues")
        .iter()
        .map(|q| {
            let callers: Vec<&Value> = q["callers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| &c["uniqueid"])
                .collect();
            let members: Vec<Value> = q["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    serde_json::json!([m["interface"], m["status"], m["paused"], m["in_call"]])
                })
                .collect();
            serde_json::json!({"name": q["name"], "calls": q["calls"], "callers": callers,
                "members": members})
        })
        .collect();
    let mut channels = channels;
    channels.sort_by_key(|c| c[0].as_str().unwrap_or_default().to_owned());
    serde_json::json!({"channels": channels, "bridges": bridges, "queues": queues,
        "device_states": snap["device_states"]})
}

/// The live model and what it went through.
#[derive(Default)]
struct Live {
    state: PbxState,
    max_channels: usize,
    max_callers: u64,
    changes: usize,
}

impl Live {
    fn feed(&mut self, p: &Packet) {
        if self.state.apply(p, now_ms()) {
            self.changes += 1;
        }
        self.max_channels = self.max_channels.max(self.state.channel_count());
        let snap = self.state.snapshot(0);
        let callers = list(&snap, "queues")
            .iter()
            .map(|q| q["calls"].as_u64().unwrap_or(0))
            .sum::<u64>();
        self.max_callers = self.max_callers.max(callers);
    }

    /// Feeds live traffic for `how_long`.
    async fn follow(&mut self, c: &mut Conn, how_long: Duration) {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            let p = c.packet().await;
            self.feed(&p);
        }
    }
}

/// Logs in with events on, then sends the snapshot actions.
async fn login_and_ask_snapshot(c: &mut Conn) {
    c.write("Action: Login\r\nActionID: login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n")
        .await;
    loop {
        let p = c.packet().await;
        if p.action_id() == Some("login") {
            assert_eq!(p.get("Response"), Some("Success"), "{p:?}");
            break;
        }
    }
    for (i, action) in snapshot_actions().into_iter().enumerate() {
        c.send(&action.header("ActionID", format!("snap-{i}")))
            .await;
    }
}

/// Asks the [`CHECKS`] again and compares each answer with the live model as it stood at the
/// answer's first packet; live events around the answers keep feeding the live model.
async fn check(c: &mut Conn, live: &mut Live, round: &str) {
    for (action, _) in CHECKS {
        let id = format!("check-{round}-{action}");
        c.send(&Action::new(action).header("ActionID", id)).await;
    }
    let mut at_start: HashMap<String, Value> = HashMap::new();
    let mut fresh: HashMap<String, PbxState> = HashMap::new();
    let mut done = 0;
    while done < CHECKS.len() {
        let p = c.packet().await;
        let Some(id) = p.action_id().filter(|a| a.starts_with("check-")) else {
            live.feed(&p);
            continue;
        };
        if p.get("Response").is_some() {
            assert_eq!(p.get("EventList"), Some("start"), "{p:?}");
            at_start.insert(id.to_owned(), live.state.snapshot(0));
        } else if p.event().is_some_and(|e| e.ends_with("Complete")) {
            done += 1;
        } else {
            fresh.entry(id.to_owned()).or_default().apply(&p, now_ms());
        }
    }
    for (action, key) in CHECKS {
        let id = format!("check-{round}-{action}");
        let want = essentials(&at_start[&id]);
        let got = essentials(&fresh.remove(&id).unwrap_or_default().snapshot(0));
        assert_eq!(want[key], got[key], "round {round}: {action} disagrees");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_model_agrees_with_fresh_list_answers() {
    let cfg = SimConfig {
        demo_traffic: true,
        demo_interval_ms: 100,
        ..SimConfig::default()
    };
    let pbx = SimPbx::start("127.0.0.1:0", cfg).await.expect("simulator");
    let mut c = Conn::connect(&pbx).await;
    login_and_ask_snapshot(&mut c).await;
    let mut live = Live::default();
    live.follow(&mut c, LIVE).await;
    for round in 0..ROUNDS {
        check(&mut c, &mut live, &round.to_string()).await;
        live.follow(&mut c, Duration::from_millis(300)).await;
    }
    assert!(live.max_channels > 0, "no demo call was seen");
    assert!(live.max_callers > 0, "no queue caller was seen");
    assert!(live.changes > 20, "only {} changes", live.changes);
    assert_eq!(live.state.queue_count(), 2);
    let snap = live.state.snapshot(0);
    assert!(snap["device_states"]
        .as_object()
        .is_some_and(|d| d.len() > 20));

    // A reconnect: forget everything, rebuild from the snapshot actions, follow again.
    pbx.kill_connections();
    let mut c = Conn::connect(&pbx).await;
    live.state.reset();
    assert!(live.state.is_empty());
    login_and_ask_snapshot(&mut c).await;
    live.follow(&mut c, Duration::from_millis(500)).await;
    assert!(live.state.channel_count() > 0);
    check(&mut c, &mut live, "after-reconnect").await;
    pbx.stop();
}
