//! Tests of the state model: `captures` replays real Asterisk captures; `calls`, `queues` and
//! `model` drive single events (bridges and channels; callers and members; endpoints, caps and
//! reset); `quality` checks the RTCP figures; `sim` checks the live model against the simulator's own list answers.

mod calls;
mod captures;
mod model;
mod quality;
mod queues;
mod sim;

use bytes::BytesMut;
use serde_json::Value;
use tokio_util::codec::Decoder;

use super::PbxState;
use crate::ami::{AmiDecoder, Frame, Limits, Packet};

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/captures");

/// The packets of a capture from a real Asterisk (`name` without `.txt`), banner skipped.
fn capture(name: &str) -> Vec<Packet> {
    let path = format!("{CAPTURES}/{name}.txt");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut decoder = AmiDecoder::new(Limits::default(), true);
    let mut buf = BytesMut::from(&bytes[..]);
    let mut packets = Vec::new();
    loop {
        match decoder.decode_eof(&mut buf).expect("decode") {
            Some(Frame::Packet(p)) => packets.push(p),
            Some(Frame::Banner(_)) => {}
            Some(Frame::Discarded(reason)) => panic!("{name}: discarded {reason:?}"),
            None => return packets,
        }
    }
}

/// A packet from (name, value) pairs.
fn pkt(headers: &[(&str, &str)]) -> Packet {
    Packet::from_headers(headers.iter().copied())
}

/// Milliseconds of an event's `Timestamp` (`1795353467.091302`), if it has one.
fn stamp_ms(p: &Packet) -> Option<u64> {
    let (secs, frac) = p.get("Timestamp")?.split_once('.')?;
    let millis: u64 = frac.get(..3)?.parse().ok()?;
    Some(secs.parse::<u64>().ok()? * 1000 + millis)
}

/// Feeds a capture packet by packet at its own timestamps (list items, which have none, at the
/// last one seen), calling `check(state, packet, now_ms)` after each.
fn replay(packets: &[Packet], mut check: impl FnMut(&PbxState, &Packet, u64)) -> PbxState {
    let mut state = PbxState::new();
    let mut now = 0;
    for p in packets {
        now = stamp_ms(p).unwrap_or(now);
        state.apply(p, now);
        check(&state, p, now);
    }
    state
}

/// The snapshot's list `key` (channels, bridges, queues, endpoints).
fn list<'a>(snap: &'a Value, key: &str) -> &'a Vec<Value> {
    snap[key].as_array().expect("a list")
}

/// The item of list `key` whose `field` is `value`.
fn find<'a>(snap: &'a Value, key: &str, field: &str, value: &str) -> Option<&'a Value> {
    list(snap, key).iter().find(|v| v[field] == value)
}

/// The uniqueids of the snapshot's channels, sorted.
fn uniqueids(snap: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list(snap, "channels")
        .iter()
        .map(|c| c["uniqueid"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A Newchannel for `uid` named `name`.
fn newchannel(uid: &str, name: &str) -> Packet {
    pkt(&[
        ("Event", "Newchannel"),
        ("Channel", name),
        ("ChannelState", "4"),
        ("ChannelStateDesc", "Ring"),
        ("CallerIDNum", "100"),
        ("CallerIDName", "Alice"),
        ("Context", "demo"),
        ("Exten", "200"),
        ("Uniqueid", uid),
        ("Linkedid", uid),
    ])
}

/// A bridge event, about channel `uid` if given.
fn bridge_event(event: &str, bridge: &str, uid: Option<&str>) -> Packet {
    let mut h = vec![
        ("Event", event),
        ("BridgeUniqueid", bridge),
        ("BridgeType", "basic"),
        ("BridgeTechnology", "simple_bridge"),
    ];
    if let Some(uid) = uid {
        h.push(("Uniqueid", uid));
    }
    pkt(&h)
}

/// A queue caller event (QueueCallerJoin, QueueEntry, ...) at `position`.
fn queue_caller(event: &str, queue: &str, uid: &str, position: &str) -> Packet {
    pkt(&[
        ("Event", event),
        ("Channel", &format!("PJSIP/trunk-{uid}")),
        ("CallerIDNum", "+14155550000"),
        ("CallerIDName", "Acme"),
        ("Uniqueid", uid),
        ("Queue", queue),
        ("Position", position),
    ])
}
