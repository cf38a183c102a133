//! What the cluster stores in Redis, encoded and decoded without I/O: stream entries (a
//! packet, a status or a banner, with the entry id `<offset>-<n>` giving its SPEC §10 offset)
//! and actions forwarded to a server's owner.

use serde::{Deserialize, Serialize};

use crate::ami::{Action, Packet};
use crate::pbx::ServerStatus;

/// A broadcast packet (unsolicited event, legacy text): entry id `<offset>-0`.
pub const KIND_EVENT: &str = "p";
/// A packet answering an amihub action (routed to its requester only): id `<last offset>-<n>`.
pub const KIND_REPLY: &str = "r";
/// A type-7 status: a broadcast frame.
pub const KIND_STATUS: &str = "s";
/// A banner (type 1 prompt): a broadcast frame.
pub const KIND_BANNER: &str = "g";

/// One item of a server's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Packet(Packet),
    Status {
        status: ServerStatus,
        reason: String,
    },
    Banner(String),
}

/// An item as read from the stream; `offset` is None for what a node says on its own (its
/// view of Redis), which is no frame of the shared history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub offset: Option<u64>,
    pub item: Item,
}

/// Why stored data could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown entry kind {0:?}")]
    Kind(String),
    #[error("unknown status {0:?}")]
    Status(String),
}

#[derive(Serialize, Deserialize)]
struct PacketWire {
    h: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    r: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StatusWire {
    s: String,
    r: String,
}

/// True for a packet answering one of amihub's own ActionIDs (a client's routed action or a
/// node's snapshot action): it is no broadcast frame. A UserEvent is, whatever its ActionID.
pub fn is_reply(p: &Packet) -> bool {
    p.action_id().is_some_and(|id| id.starts_with("amihub")) && p.event() != Some("UserEvent")
}

pub fn parse_status(s: &str) -> Option<ServerStatus> {
    [
        ServerStatus::Connecting,
        ServerStatus::Connected,
        ServerStatus::Disconnected,
        ServerStatus::AuthFailed,
    ]
    .into_iter()
    .find(|x| x.as_str() == s)
}

/// The entry kind and data of an item.
pub fn encode(item: &Item) -> (&'static str, String) {
    match item {
        Item::Packet(p) => {
            let wire = PacketWire {
                h: p.headers()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                r: p.raw_lines().map(str::to_string).collect(),
            };
            let kind = if is_reply(p) { KIND_REPLY } else { KIND_EVENT };
            (kind, serde_json::to_string(&wire).unwrap_or_default())
        }
        Item::Status { status, reason } => {
            let wire = StatusWire {
                s: status.as_str().into(),
                r: reason.clone(),
            };
            (
                KIND_STATUS,
                serde_json::to_string(&wire).unwrap_or_default(),
            )
        }
        Item::Banner(b) => (KIND_BANNER, b.clone()),
    }
}

/// The item of an entry's kind and data.
pub fn decode(kind: &str, data: &str) -> Result<Item, WireError> {
    match kind {
        KIND_EVENT | KIND_REPLY => {
            let w: PacketWire = serde_json::from_str(data)?;
            let p = Packet::from_headers(w.h).with_raw_lines(w.r.iter().map(String::as_str));
            Ok(Item::Packet(p))
        }
        KIND_STATUS => {
            let w: StatusWire = serde_json::from_str(data)?;
            let status = parse_status(&w.s).ok_or(WireError::Status(w.s))?;
            Ok(Item::Status {
                status,
                reason: w.r,
            })
        }
        KIND_BANNER => Ok(Item::Banner(data.to_string())),
        other => Err(WireError::Kind(other.to_string())),
    }
}

/// The offset of an entry id: its milliseconds part, for broadcast kinds (`<offset>-0`).
pub fn offset_of(id: &str, kind: &str) -> Option<u64> {
    if kind == KIND_REPLY {
        return None;
    }
    id.split_once('-')?.0.parse().ok()
}

/// A forwarded action, as the owner's request stream stores it.
pub fn encode_action(a: &Action) -> String {
    let pairs: Vec<(&str, &str)> = a.headers().collect();
    serde_json::to_string(&pairs).unwrap_or_default()
}

pub fn decode_action(data: &str) -> Result<Action, WireError> {
    let pairs: Vec<(String, String)> = serde_json::from_str(data)?;
    let mut a = Action::default();
    for (n, v) in pairs {
        a.push(&n, v);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(item: Item) -> (&'static str, Item) {
        let (kind, data) = encode(&item);
        (kind, decode(kind, &data).expect("decodes"))
    }

    #[test]
    fn packets_keep_order_repeats_and_raw_lines() {
        let p = Packet::from_headers([
            ("Response", "Follows"),
            ("ActionID", "amihub.00ff"),
            ("Variable", "a=1"),
            ("Variable", "b=2"),
        ])
        .with_raw_lines(["line one", "", "line: three"]);
        let (kind, back) = round_trip(Item::Packet(p.clone()));
        assert_eq!(kind, KIND_REPLY);
        assert_eq!(back, Item::Packet(p));
    }

    #[test]
    fn events_snapshot_replies_and_user_events_are_classified() {
        let ev = Packet::from_headers([("Event", "Newchannel"), ("Channel", "PJSIP/1")]);
        assert_eq!(encode(&Item::Packet(ev)).0, KIND_EVENT);
        let snap = Packet::from_headers([
            ("Event", "CoreShowChannel"),
            ("ActionID", "amihub-snap-1-0"),
        ]);
        assert_eq!(encode(&Item::Packet(snap)).0, KIND_REPLY);
        let user = Packet::from_headers([("Event", "UserEvent"), ("ActionID", "amihub.01")]);
        assert_eq!(encode(&Item::Packet(user)).0, KIND_EVENT);
    }

    #[test]
    fn statuses_and_banners_round_trip() {
        let s = Item::Status {
            status: ServerStatus::AuthFailed,
            reason: "Authentication failed".into(),
        };
        assert_eq!(round_trip(s.clone()), (KIND_STATUS, s));
        let b = Item::Banner("Asterisk Call Manager/11.0.0".into());
        assert_eq!(round_trip(b.clone()), (KIND_BANNER, b));
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        assert!(decode(KIND_EVENT, "{").is_err());
        assert!(decode(KIND_STATUS, r#"{"s":"Sleeping","r":""}"#).is_err());
        assert!(decode("x", "").is_err());
        assert!(decode_action("[1]").is_err());
    }

    #[test]
    fn offsets_come_from_broadcast_entry_ids() {
        assert_eq!(offset_of("42-0", KIND_EVENT), Some(42));
        assert_eq!(offset_of("42-3", KIND_REPLY), None);
        assert_eq!(offset_of("junk", KIND_STATUS), None);
    }

    #[test]
    fn actions_round_trip() {
        let a = Action::new("Originate")
            .header("Variable", "a=1")
            .header("Variable", "b=2");
        assert_eq!(decode_action(&encode_action(&a)).expect("decodes"), a);
    }
}
