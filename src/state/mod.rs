//! The live state of one PBX: channels, bridges, queues (members and waiting callers), endpoints
//! and device states, fed one AMI packet at a time and rendered as the dashboard's JSON.
//!
//! After every (re)login the caller forgets everything ([`PbxState::reset`]), sends
//! [`snapshot_actions`] and feeds every packet to [`PbxState::apply`]: the list items of those
//! answers and the live events build the same model. Layout: `channels` (channels and bridges),
//! `queues` (queues, members, callers), `devices` (endpoints and device states), `rtcp` (one
//! RTCP event's loss, jitter, round trip and MOS), `quality` (those over time per call and per
//! endpoint, graded by thresholds), `changes` (each endpoint's log of status, address,
//! user-agent, availability and registration changes).
//!
//! Invariants: this module is pure — no actix, sockets or clocks; time comes in as `now_ms`
//! (milliseconds since the Unix epoch). Every map is capped, so a misbehaving PBX cannot grow it
//! without bound; inserts past a cap are ignored, updates of known entries still apply.

pub(crate) mod changes;
mod channels;
mod devices;
pub(crate) mod quality;
mod queues;
pub(crate) mod rtcp;

#[cfg(test)]
mod tests;

use serde_json::{json, Value};

use crate::ami::{Action, Packet};
pub use quality::{Grade, Thresholds};
pub use rtcp::{
    clock_from_srs, compact_ntp, endpoint_of, mos, rtt_from_lsr, sample_from, sender_report,
    Direction, Sample, SenderReport,
};

/// Most rows `quality_report` lists of calls and of endpoints.
pub const MAX_REPORT_ROWS: usize = 1000;
/// Change-log entries shown per endpoint in `quality_report`'s endpoint rows.
const REPORT_CHANGES: usize = 5;

/// Most channels held: far above any single Asterisk's practical load.
pub const MAX_CHANNELS: usize = 100_000;
/// Most bridges held; a bridge has at least one channel, so this matches the channel cap.
pub const MAX_BRIDGES: usize = 100_000;
/// Most queues held.
pub const MAX_QUEUES: usize = 10_000;
/// Most queue members held, over all queues.
pub const MAX_MEMBERS: usize = 10_000;
/// Most waiting callers held, over all queues (each is a channel).
pub const MAX_CALLERS: usize = 100_000;
/// Most endpoints (PJSIP endpoints, SIP/IAX2 peers) held.
pub const MAX_ENDPOINTS: usize = 10_000;
/// Most device states held (endpoints plus `Local/…`, `Queue:…` and custom devices).
pub const MAX_DEVICES: usize = 10_000;

/// The state model of one PBX. Cheap to create; `Default` is empty.
#[derive(Debug, Clone, Default)]
pub struct PbxState {
    calls: channels::Calls,
    queues: queues::Queues,
    devices: devices::Devices,
    quality: quality::Quality,
    changes: changes::Changes,
}

impl PbxState {
    pub fn new() -> Self {
        PbxState::default()
    }

    /// Forget everything (before a rebuild after a reconnect).
    pub fn reset(&mut self) {
        *self = PbxState::default();
    }

    /// Feeds one packet: a live event or a snapshot list item (CoreShowChannel, BridgeListItem,
    /// QueueParams, QueueMember, QueueEntry, DeviceStateChange, EndpointList, PeerEntry, ...).
    /// Responses and unrelated events cost one look at the first header and one match on the
    /// event name. Returns true if the state changed.
    pub fn apply(&mut self, p: &Packet, now_ms: u64) -> bool {
        // Asterisk always writes `Event` first; anything else is a response or not an event.
        let event = match p.headers().next() {
            Some((name, value)) if name.eq_ignore_ascii_case("Event") => value,
            _ => return false,
        };
        let (c, q, d) = (&mut self.calls, &mut self.queues, &mut self.devices);
        let quality = &mut self.quality;
        // Endpoint health changes are logged beside the devices model, never instead of it.
        let logged = self.changes.apply(event, p, now_ms);
        let changed = match event {
            "Newchannel" => c.new_channel(p, now_ms),
            "CoreShowChannel" => c.listed_channel(p, now_ms),
            "Newstate" | "NewCallerid" | "NewConnectedLine" => c.update_channel(p, false),
            "Newexten" => c.update_channel(p, true),
            "Rename" => c.rename(p),
            "Hangup" => {
                let call = c.hangup(p);
                quality.hangup(p) || call
            }
            "BridgeCreate" | "BridgeListItem" => c.bridge_seen(p, now_ms),
            "BridgeEnter" => c.bridge_enter(p, now_ms),
            "BridgeLeave" => c.bridge_leave(p),
            "BridgeDestroy" => c.bridge_destroy(p),
            "BridgeMerge" => c.bridge_merge(p, now_ms),
            "QueueParams" => q.params(p),
            "QueueMember" | "QueueMemberAdded" | "QueueMemberStatus" | "QueueMemberPause"
            | "QueueMemberPaused" => q.member(p),
            "QueueMemberRemoved" => q.member_removed(p),
            "QueueEntry" => q.entry(p, now_ms),
            "QueueCallerJoin" | "Join" => q.caller_join(p, now_ms),
            "QueueCallerLeave" | "Leave" => q.caller_leave(p, false),
            "QueueCallerAbandon" => q.caller_leave(p, true),
            "AgentCalled" | "AgentConnect" | "AgentComplete" | "AgentRingNoAnswer" => {
                q.agent(event, p)
            }
            "EndpointList" => d.endpoint_list(p),
            "PeerEntry" => d.peer_entry(p),
            "DeviceStateChange" => d.device_state(p),
            "PeerStatus" => d.peer_status(p),
            "ContactStatus" => d.contact_status(p),
            "RTCPSent" | "RTCPReceived" => quality.rtcp(p, now_ms),
            _ => false,
        };
        changed || logged
    }

    /// The whole state as JSON; durations and waits are computed against `now_ms`.
    pub fn snapshot(&self, now_ms: u64) -> Value {
        json!({
            "channels": self.calls.channels_json(now_ms),
            "bridges": self.calls.bridges_json(now_ms),
            "queues": self.queues.to_json(now_ms),
            "endpoints": self.devices.endpoints_json(),
            "device_states": self.devices.states_json(),
            "quality": self.quality.to_json(now_ms),
            "endpoint_changes": self.changes.to_json(),
        })
    }

    /// The RTCP sample the last applied packet produced, once (for the metrics).
    pub fn take_quality_sample(&mut self) -> Option<Sample> {
        self.quality.take_last()
    }

    /// The quality summary for scripts and alerting: live calls worst first, endpoints worst
    /// first over the window (with their health and newest changes), unreachable endpoints, and
    /// with `endpoint` that endpoint's bucket series and whole change log. At most `limit` (capped
    /// at [`MAX_REPORT_ROWS`]) calls and endpoints.
    pub fn quality_report(
        &self,
        now_ms: u64,
        limit: usize,
        th: &Thresholds,
        endpoint: Option<&str>,
    ) -> Value {
        let limit = limit.min(MAX_REPORT_ROWS);
        let (calls, active, [bad, warn]) = self.quality.worst_calls(limit, th);
        let endpoints: Vec<Value> = self
            .quality
            .worst_endpoints(now_ms, limit, th)
            .into_iter()
            .map(|(name, mut v)| {
                v["health"] = self
                    .changes
                    .endpoint_json(&name, REPORT_CHANGES)
                    .unwrap_or(Value::Null);
                v["endpoint"] = Value::String(name);
                v
            })
            .collect();
        let detail = endpoint.map(|name| {
            json!({
                "name": name,
                "quality": self.quality.endpoint_detail(name, now_ms, th),
                "health": self.changes.endpoint_json(name, changes::CHANGES_PER_ENDPOINT),
            })
        });
        json!({
            "window_s": quality::ENDPOINT_WINDOW_MS / 1000,
            "bucket_s": quality::BUCKET_MS / 1000,
            "thresholds": th,
            "active_calls": active,
            "bad_calls": bad,
            "warn_calls": warn,
            "calls": calls,
            "endpoints": endpoints,
            "unreachable": self.changes.unreachable(),
            "endpoint": detail,
        })
    }

    pub fn channel_count(&self) -> usize {
        self.calls.channel_count()
    }

    pub fn bridge_count(&self) -> usize {
        self.calls.bridge_count()
    }

    pub fn queue_count(&self) -> usize {
        self.queues.queue_count()
    }

    /// Total entries held (channels, bridges, queues, members, callers, endpoints, device
    /// states), for bounding memory.
    pub fn len(&self) -> usize {
        self.calls.len()
            + self.queues.len()
            + self.devices.len()
            + self.quality.len()
            + self.changes.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The actions that rebuild the state after a login, in order (ActionIDs are set by the caller):
/// CoreShowChannels, BridgeList, QueueStatus, DeviceStateList, PJSIPShowEndpoints, SIPpeers.
/// (A PBX without chan_sip answers SIPpeers with an error — harmless.)
pub fn snapshot_actions() -> Vec<Action> {
    [
        "CoreShowChannels",
        "BridgeList",
        "QueueStatus",
        "DeviceStateList",
        "PJSIPShowEndpoints",
        "SIPpeers",
    ]
    .into_iter()
    .map(Action::new)
    .collect()
}

/// Copies `value` into `dst` when present and different; true if it did.
fn set(dst: &mut String, value: Option<&str>) -> bool {
    match value {
        Some(v) if dst != v => {
            v.clone_into(dst);
            true
        }
        _ => false,
    }
}

/// Sets `dst` to `value`; true if it differed.
fn set_val<T: PartialEq>(dst: &mut T, value: T) -> bool {
    if *dst == value {
        false
    } else {
        *dst = value;
        true
    }
}
