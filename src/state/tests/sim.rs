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
/// The list actions asked again for each comparison, with their Complete events.
const CHECKS: [(&str, &str); 4] = [
    ("CoreShowChannels", "CoreShowChannelsComplete"),
    ("BridgeList", "BridgeListComplete"),
    ("QueueStatus", "QueueStatusComplete"),
    ("DeviceStateList", "DeviceStateListComplete"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_model_agrees_with_fresh_list_answers() {
    let cfg = SimConfig {
        demo_traffic: true,
        demo_interval_ms: 100,
        ..SimConfig::default()
    };
    let pbx = SimPbx::start("127.0.0.1:0", cfg).await.expect("simulator");
    let mut c = Conn::connect(&pbx).await;
    c.write("Action: Login\r\nActionID: login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n")
        .await;
    loop {
        let p = c.packet().await;
        if p.action_id() == Some("login") {
            assert_eq!(p.get("Response"), Some("Success"), "{p:?}");
            break;
        }
    }
    // Rebuild as after a login, then follow the live events.
    let mut live = PbxState::new();
    for (i, action) in snapshot_actions().into_iter().enumerate() {
        c.send(&action.header("ActionID", format!("snap-{i}")))
            .await;
    }
    let (mut max_channels, mut max_callers, mut changes) = (0, 0, 0);
    let mut live_for = |live: &mut PbxState, p: &Packet| {
        if live.apply(p, now_ms()) {
            changes += 1;
        }
        max_channels = max_channels.max(live.channel_count());
        let snap = live.snapshot(0);
        let callers = list(&snap, "queues")
            .iter()
            .map(|q| q["calls"].as_u64().unwrap_or(0))
            .sum::<u64>();
        max_callers = max_callers.max(callers);
    };
    let until = Instant::now() + LIVE;
    while Instant::now() < until {
        let p = c.packet().await;
        live_for(&mut live, &p);
    }
    for round in 0..ROUNDS {
        for (action, _) in CHECKS {
            let id = format!("check-{round}-{action}");
            c.send(&Action::new(action).header("ActionID", id)).await;
        }
        // Per answer: the live snapshot at its first packet, and a fresh model of its items.
        let mut at_start: HashMap<String, Value> = HashMap::new();
        let mut fresh: HashMap<String, PbxState> = HashMap::new();
        let mut done = 0;
        while done < CHECKS.len() {
            let p = c.packet().await;
            let Some(id) = p.action_id().filter(|a| a.starts_with("check-")) else {
                live_for(&mut live, &p);
                continue;
            };
            if p.get("Response").is_some() {
                assert_eq!(p.get("EventList"), Some("start"), "{p:?}");
                at_start.insert(id.to_owned(), live.snapshot(0));
                continue;
            }
            if p.event().is_some_and(|e| e.ends_with("Complete")) {
                done += 1;
                continue;
            }
            fresh.entry(id.to_owned()).or_default().apply(&p, now_ms());
        }
        for (action, _) in CHECKS {
            let id = format!("check-{round}-{action}");
            let want = essentials(&at_start[&id]);
            let got = essentials(&fresh.remove(&id).unwrap_or_default().snapshot(0));
            let key = match action {
                "CoreShowChannels" => "channels",
                "BridgeList" => "bridges",
                "QueueStatus" => "queues",
                _ => "device_states",
            };
            assert_eq!(want[key], got[key], "round {round}: {action} disagrees");
        }
        // A little more traffic before the next round.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            let p = c.packet().await;
            live_for(&mut live, &p);
        }
    }
    assert!(max_channels > 0, "no demo call was seen");
    assert!(changes > 20, "only {changes} changes");
    // Queues and device states are always there; callers show up at this call rate.
    assert!(live.queue_count() == 2, "{}", live.queue_count());
    let _ = max_callers;
    pbx.stop();
}
