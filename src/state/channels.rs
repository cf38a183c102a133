//! Channels and bridges: created by Newchannel / CoreShowChannel and BridgeCreate /
//! BridgeListItem, updated by the channel events, linked by BridgeEnter / BridgeLeave (or a
//! listed channel's `BridgeId`), gone on Hangup and BridgeDestroy. Channels are keyed by
//! `Uniqueid`, which survives a Rename.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{json, Value};

use super::{set, MAX_BRIDGES, MAX_CHANNELS};
use crate::ami::Packet;

/// How many hung-up Uniqueids are remembered, so a channel listed by a CoreShowChannels answer
/// that raced with its Hangup event is not brought back as a ghost.
const TOMBSTONES: usize = 4096;

#[derive(Debug, Clone, Default)]
pub(super) struct Calls {
    channels: HashMap<String, Channel>,
    bridges: HashMap<String, Bridge>,
    /// Recently hung-up Uniqueids, oldest first, and the same as a set.
    gone_order: VecDeque<String>,
    gone: HashSet<String>,
}

#[derive(Debug, Clone, Default)]
struct Channel {
    name: String,
    uniqueid: String,
    linkedid: String,
    state: String,
    state_code: String,
    cid_num: String,
    cid_name: String,
    conn_num: String,
    conn_name: String,
    context: String,
    exten: String,
    application: String,
    bridge: Option<String>,
    created_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct Bridge {
    id: String,
    kind: String,
    technology: String,
    /// Uniqueids of the channels in it, in the order they entered.
    channels: Vec<String>,
    created_ms: u64,
}

impl Channel {
    /// Copies the channel snapshot headers every channel event carries; true if any changed.
    ///
    /// One pass over the headers (a channel event has twenty-odd, and `Packet::get` per field
    /// would walk them ten times); as with `Packet::get`, names match without regard to case and
    /// the first header of a name is the one that counts.
    fn update(&mut self, p: &Packet) -> bool {
        let (mut seen, mut changed) = (0u16, false);
        for (name, value) in p.headers() {
            let Some((bit, field)) = self.snapshot_field(name) else {
                continue;
            };
            if seen & bit == 0 {
                seen |= bit;
                changed |= set(field, Some(value));
            }
        }
        changed
    }

    /// The field a channel snapshot header fills, and its bit among them.
    fn snapshot_field(&mut self, name: &str) -> Option<(u16, &mut String)> {
        let is = |want: &str| name.eq_ignore_ascii_case(want);
        let (bit, field) = match name.len() {
            5 if is("Exten") => (0, &mut self.exten),
            7 if is("Channel") => (1, &mut self.name),
            7 if is("Context") => (2, &mut self.context),
            8 if is("Linkedid") => (3, &mut self.linkedid),
            11 if is("CallerIDNum") => (4, &mut self.cid_num),
            12 if is("ChannelState") => (5, &mut self.state_code),
            12 if is("CallerIDName") => (6, &mut self.cid_name),
            16 if is("ChannelStateDesc") => (7, &mut self.state),
            16 if is("ConnectedLineNum") => (8, &mut self.conn_num),
            17 if is("ConnectedLineName") => (9, &mut self.conn_name),
            _ => return None,
        };
        Some((1 << bit, field))
    }

    fn to_json(&self, now_ms: u64) -> Value {
        json!({
            "channel": self.name,
            "uniqueid": self.uniqueid,
            "linkedid": self.linkedid,
            "state": self.state,
            "state_code": self.state_code,
            "caller_id_num": self.cid_num,
            "caller_id_name": self.cid_name,
            "connected_num": self.conn_num,
            "connected_name": self.conn_name,
            "context": self.context,
            "exten": self.exten,
            "application": self.application,
            "bridge": self.bridge,
            "created_ms": self.created_ms,
            "duration_s": now_ms.saturating_sub(self.created_ms) / 1000,
        })
    }
}

impl Calls {
    pub(super) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub(super) fn bridge_count(&self) -> usize {
        self.bridges.len()
    }

    pub(super) fn len(&self) -> usize {
        self.channels.len() + self.bridges.len()
    }

    /// Newchannel: a channel starts now.
    pub(super) fn new_channel(&mut self, p: &Packet, now_ms: u64) -> bool {
        let Some(uid) = p.get("Uniqueid").filter(|u| !u.is_empty()) else {
            return false;
        };
        let room = self.channels.len() < MAX_CHANNELS;
        match self.channels.get_mut(uid) {
            Some(c) => c.update(p),
            None if room => {
                let mut c = Channel {
                    uniqueid: uid.to_owned(),
                    created_ms: now_ms,
                    ..Channel::default()
                };
                c.update(p);
                self.channels.insert(uid.to_owned(), c);
                true
            }
            None => false,
        }
    }

    /// CoreShowChannel: a listed channel, up for `Duration` (h:mm:ss), maybe in `BridgeId`.
    pub(super) fn listed_channel(&mut self, p: &Packet, now_ms: u64) -> bool {
        let Some(uid) = p.get("Uniqueid").filter(|u| !u.is_empty()) else {
            return false;
        };
        if self.gone.contains(uid) {
            return false;
        }
        let mut changed = false;
        if !self.channels.contains_key(uid) {
            if self.channels.len() >= MAX_CHANNELS {
                return false;
            }
            let age_ms = p.get("Duration").map_or(0, parse_hms).saturating_mul(1000);
            let c = Channel {
                uniqueid: uid.to_owned(),
                created_ms: now_ms.saturating_sub(age_ms),
                ..Channel::default()
            };
            self.channels.insert(uid.to_owned(), c);
            changed = true;
        }
        if let Some(c) = self.channels.get_mut(uid) {
            changed |= c.update(p) | set(&mut c.application, p.get("Application"));
        }
        if let Some(bridge) = p.get("BridgeId").filter(|b| !b.is_empty()) {
            changed |= self.link(bridge, uid, now_ms, None);
        }
        changed
    }

    /// Newstate, NewCallerid, NewConnectedLine, Newexten (`with_app`): a known channel changed.
    pub(super) fn update_channel(&mut self, p: &Packet, with_app: bool) -> bool {
        let Some(c) = p.get("Uniqueid").and_then(|u| self.channels.get_mut(u)) else {
            return false;
        };
        let app = if with_app { p.get("Application") } else { None };
        c.update(p) | set(&mut c.application, app)
    }

    /// Rename: `Channel` became `Newname`.
    pub(super) fn rename(&mut self, p: &Packet) -> bool {
        let Some(c) = p.get("Uniqueid").and_then(|u| self.channels.get_mut(u)) else {
            return false;
        };
        set(&mut c.name, p.get("Newname"))
    }

    /// Hangup: the channel is gone, and out of its bridge.
    pub(super) fn hangup(&mut self, p: &Packet) -> bool {
        let Some(uid) = p.get("Uniqueid") else {
            return false;
        };
        if !self.gone.contains(uid) {
            if self.gone_order.len() >= TOMBSTONES {
                if let Some(old) = self.gone_order.pop_front() {
                    self.gone.remove(&old);
                }
            }
            self.gone_order.push_back(uid.to_owned());
            self.gone.insert(uid.to_owned());
        }
        let Some(c) = self.channels.remove(uid) else {
            return false;
        };
        if let Some(b) = c.bridge.and_then(|id| self.bridges.get_mut(&id)) {
            b.channels.retain(|u| u != uid);
        }
        true
    }

    /// BridgeCreate or BridgeListItem: a bridge exists (its channels come from elsewhere).
    pub(super) fn bridge_seen(&mut self, p: &Packet, now_ms: u64) -> bool {
        let Some(id) = p.get("BridgeUniqueid").filter(|b| !b.is_empty()) else {
            return false;
        };
        let Some((created, b)) = self.bridge_entry(id, now_ms) else {
            return false;
        };
        created
            | set(&mut b.kind, p.get("BridgeType"))
            | set(&mut b.technology, p.get("BridgeTechnology"))
    }

    /// BridgeEnter: a channel joins a bridge.
    pub(super) fn bridge_enter(&mut self, p: &Packet, now_ms: u64) -> bool {
        let (Some(id), Some(uid)) = (p.get("BridgeUniqueid"), p.get("Uniqueid")) else {
            return false;
        };
        self.link(id, uid, now_ms, Some(p))
    }

    /// BridgeLeave: a channel leaves a bridge.
    pub(super) fn bridge_leave(&mut self, p: &Packet) -> bool {
        let (Some(id), Some(uid)) = (p.get("BridgeUniqueid"), p.get("Uniqueid")) else {
            return false;
        };
        let mut changed = false;
        if let Some(b) = self.bridges.get_mut(id) {
            let before = b.channels.len();
            b.channels.retain(|u| u != uid);
            changed = b.channels.len() != before;
        }
        if let Some(c) = self.channels.get_mut(uid) {
            if c.bridge.as_deref() == Some(id) {
                c.bridge = None;
                changed = true;
            }
        }
        changed
    }

    /// BridgeDestroy: the bridge is gone; any channel still linked to it is unlinked.
    pub(super) fn bridge_destroy(&mut self, p: &Packet) -> bool {
        let Some(b) = p
            .get("BridgeUniqueid")
            .and_then(|id| self.bridges.remove(id))
        else {
            return false;
        };
        for uid in &b.channels {
            if let Some(c) = self.channels.get_mut(uid) {
                if c.bridge.as_deref() == Some(b.id.as_str()) {
                    c.bridge = None;
                }
            }
        }
        true
    }

    /// BridgeMerge: every channel of `From…` moves to `To…`, and `From…` is gone.
    pub(super) fn bridge_merge(&mut self, p: &Packet, now_ms: u64) -> bool {
        let (Some(to), Some(from)) = (p.get("ToBridgeUniqueid"), p.get("FromBridgeUniqueid"))
        else {
            return false;
        };
        if to == from {
            return false;
        }
        let Some(old) = self.bridges.remove(from) else {
            return false;
        };
        for uid in &old.channels {
            self.link(to, uid, now_ms, None);
        }
        true
    }

    /// Puts channel `uid` into bridge `id` (created if unknown, typed from `p` if given), taking it
    /// out of any other bridge first.
    fn link(&mut self, id: &str, uid: &str, now_ms: u64, p: Option<&Packet>) -> bool {
        let mut changed = false;
        let known = self.channels.contains_key(uid);
        if let Some(c) = self.channels.get_mut(uid) {
            if c.bridge.as_deref() != Some(id) {
                if let Some(old) = c.bridge.replace(id.to_owned()) {
                    if let Some(b) = self.bridges.get_mut(&old) {
                        b.channels.retain(|u| u != uid);
                    }
                }
                changed = true;
            }
        }
        let Some((created, b)) = self.bridge_entry(id, now_ms) else {
            return changed;
        };
        changed |= created;
        if let Some(p) = p {
            changed |= set(&mut b.kind, p.get("BridgeType"))
                | set(&mut b.technology, p.get("BridgeTechnology"));
        }
        // Only channels amihub knows are linked: a stream of BridgeEnter for unknown channels
        // (a long-lived holding bridge) must not grow the list without bound.
        if known && !b.channels.iter().any(|u| u == uid) {
            b.channels.push(uid.to_owned());
            changed = true;
        }
        changed
    }

    /// The bridge `id`, created now if unknown and under the cap; `(created, bridge)`.
    fn bridge_entry(&mut self, id: &str, now_ms: u64) -> Option<(bool, &mut Bridge)> {
        let created = !self.bridges.contains_key(id);
        if created {
            if self.bridges.len() >= MAX_BRIDGES {
                return None;
            }
            let b = Bridge {
                id: id.to_owned(),
                created_ms: now_ms,
                ..Bridge::default()
            };
            self.bridges.insert(id.to_owned(), b);
        }
        self.bridges.get_mut(id).map(|b| (created, b))
    }

    /// Channels sorted by creation time, then name, then Uniqueid.
    pub(super) fn channels_json(&self, now_ms: u64) -> Value {
        let mut list: Vec<&Channel> = self.channels.values().collect();
        list.sort_by(|a, b| {
            (a.created_ms, &a.name, &a.uniqueid).cmp(&(b.created_ms, &b.name, &b.uniqueid))
        });
        Value::Array(list.into_iter().map(|c| c.to_json(now_ms)).collect())
    }

    /// Bridges sorted by creation time, then id; channels in the order they entered.
    pub(super) fn bridges_json(&self, now_ms: u64) -> Value {
        let mut list: Vec<&Bridge> = self.bridges.values().collect();
        list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        let items = list.into_iter().map(|b| {
            json!({
                "id": b.id,
                "type": b.kind,
                "technology": b.technology,
                "channels": b.channels,
                "created_ms": b.created_ms,
                "duration_s": now_ms.saturating_sub(b.created_ms) / 1000,
            })
        });
        Value::Array(items.collect())
    }

    /// The bridge a channel is in, for tests.
    #[cfg(test)]
    pub(super) fn bridge_of(&self, uid: &str) -> Option<&str> {
        self.channels.get(uid)?.bridge.as_deref()
    }
}

/// Seconds in a CoreShowChannel `Duration` such as `00:01:05` (hours may exceed two digits); 0
/// when unreadable.
fn parse_hms(text: &str) -> u64 {
    text.trim()
        .split(':')
        .try_fold(0u64, |acc, part| {
            part.trim()
                .parse::<u64>()
                .ok()
                .map(|n| acc.saturating_mul(60).saturating_add(n))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{parse_hms, Channel};
    use crate::ami::Packet;

    #[test]
    fn a_snapshot_takes_the_first_header_of_each_name_whatever_its_case_as_packet_get_does() {
        let p = Packet::from_headers([
            ("Event", "Newstate"),
            ("channel", "PJSIP/101-00000001"),
            ("ChannelState", "6"),
            ("ChannelStateDesc", "Up"),
            ("CallerIDNum", "101"),
            ("CallerIDName", "Alice"),
            ("ConnectedLineNum", "202"),
            ("ConnectedLineName", "Bob"),
            ("Context", "from-internal"),
            ("EXTEN", "202"),
            ("Linkedid", "1.1"),
            ("Channel", "PJSIP/other-00000009"),
            ("Exten", "999"),
            ("Uniqueid", "1.1"),
        ]);
        let mut c = Channel::default();
        assert!(c.update(&p));
        let fields = [
            (&c.name, "Channel"),
            (&c.state_code, "ChannelState"),
            (&c.state, "ChannelStateDesc"),
            (&c.cid_num, "CallerIDNum"),
            (&c.cid_name, "CallerIDName"),
            (&c.conn_num, "ConnectedLineNum"),
            (&c.conn_name, "ConnectedLineName"),
            (&c.context, "Context"),
            (&c.exten, "Exten"),
            (&c.linkedid, "Linkedid"),
        ];
        for (field, name) in fields {
            assert_eq!(Some(field.as_str()), p.get(name), "{name}");
        }
        assert_eq!(c.name, "PJSIP/101-00000001");
        assert!(!c.update(&p), "the same snapshot again changes nothing");
        let partial =
            Packet::from_headers([("Event", "Newstate"), ("ChannelStateDesc", "Ringing")]);
        assert!(c.update(&partial));
        assert_eq!((c.state.as_str(), c.exten.as_str()), ("Ringing", "202"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_hms("00:00:00"), 0);
        assert_eq!(parse_hms("00:01:05"), 65);
        assert_eq!(parse_hms("123:00:01"), 442_801);
        assert_eq!(parse_hms("junk"), 0);
        assert_eq!(
            parse_hms("99999999999999999999999"),
            0,
            "unparseable is zero, no overflow"
        );
        assert_eq!(
            parse_hms("99999999999999999:0:0").saturating_mul(1000),
            u64::MAX
        );
    }
}
