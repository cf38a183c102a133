//! Keeps a PBX's live state (`crate::state::PbxState`) in step: after every login it resets the
//! state and asks the snapshot actions, feeds their list items and every live event into it,
//! and announces `state ready` (type 7 with a new StateVersion) once the rebuild is complete.
//!
//! [`StateTracker`] is the I/O-free part, shared by the PBX actor and the cluster's mirror of a
//! PBX another node owns; it knows nothing of where packets come from.

use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{json, Value};

use super::{PbxConn, Phase};
use crate::ami::{Action, Packet};
use crate::state::{snapshot_actions, PbxState, Sample, Thresholds};

/// Prefix of the ActionIDs of snapshot actions: `amihub-snap-<tracker>-<i>`.
pub(super) const SNAP_PREFIX: &str = "amihub-snap-";

/// The state of one server, as `GET /api/v1/servers/{id}/state` returns it.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetState;

/// The quality summary of one server, as `GET /api/v1/servers/{id}/quality` returns it.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetQuality {
    pub limit: usize,
    pub thresholds: Thresholds,
    /// Also this endpoint's bucket series and whole change log.
    pub endpoint: Option<String>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether a list-action reply is finished: an error response, a plain success, or `…Complete`.
fn ends_reply(p: &Packet) -> bool {
    if let Some(r) = p.get("Response") {
        let list = p
            .get("EventList")
            .is_some_and(|v| v.eq_ignore_ascii_case("start"))
            || p.get("Message").is_some_and(|m| m.ends_with("will follow"));
        return !r.eq_ignore_ascii_case("Success") || !list;
    }
    p.get("EventList")
        .is_some_and(|v| v.eq_ignore_ascii_case("Complete"))
        || p.event().is_some_and(|e| e.ends_with("Complete"))
}

/// One server's live state and its rebuild. Snapshot ActionIDs carry a random tracker id, so
/// where several trackers see one PBX's replies (cluster nodes) each takes only its own.
pub struct StateTracker {
    state: PbxState,
    version: u64,
    open: Vec<String>,
    prefix: String,
    ready: Option<u64>,
    /// Cluster owner: other trackers' snapshot replies pass through (to the shared stream).
    relay: bool,
}

impl Default for StateTracker {
    fn default() -> Self {
        StateTracker {
            state: PbxState::new(),
            version: 0,
            open: Vec::new(),
            prefix: format!("{SNAP_PREFIX}{:08x}-", rand::random::<u32>()),
            ready: None,
            relay: false,
        }
    }
}

impl StateTracker {
    /// A tracker whose PBX's packets also feed other trackers (a cluster owner publishing to
    /// the shared stream, `relay`): their snapshot replies are handed back, not dropped.
    pub fn relaying(relay: bool) -> StateTracker {
        StateTracker {
            relay,
            ..StateTracker::default()
        }
    }

    /// Resets the state; returns the snapshot actions to send (their ActionIDs set).
    pub fn start(&mut self) -> Vec<Action> {
        self.state.reset();
        self.open.clear();
        let mut out = Vec::new();
        for (i, mut action) in snapshot_actions().into_iter().enumerate() {
            let id = format!("{}{i}", self.prefix);
            action.set("ActionID", id.as_str());
            self.open.push(id);
            out.push(action);
        }
        out
    }

    /// Feeds a packet; returns it back unless it belonged to a snapshot action (this tracker's,
    /// or another's, which is dropped unless this tracker relays).
    pub fn track(&mut self, p: Packet) -> Option<Packet> {
        let id = p.action_id().unwrap_or("");
        if id.starts_with(SNAP_PREFIX) {
            if !self.open.iter().any(|x| x == id) {
                return self.relay.then_some(p);
            }
            if p.get("Response").is_none() {
                self.state.apply(&p, now_ms());
            }
            if ends_reply(&p) {
                self.open.retain(|x| x != id);
                if self.open.is_empty() {
                    self.version += 1;
                    self.ready = Some(self.version);
                }
            }
            return None;
        }
        if p.event().is_some() {
            self.state.apply(&p, now_ms());
        }
        Some(p)
    }

    /// The RTCP sample the last tracked packet produced, once (for the metrics).
    pub fn take_quality_sample(&mut self) -> Option<Sample> {
        self.state.take_quality_sample()
    }

    /// The version of a rebuild completed since the last call, to announce once.
    pub fn take_ready(&mut self) -> Option<u64> {
        self.ready.take()
    }

    /// Forgets a rebuild in progress (the connection ended).
    pub fn abandon(&mut self) {
        self.open.clear();
    }

    /// The state as `GET /api/v1/servers/{id}/state` shows it.
    pub fn json(&self, id: u32, name: &str, connected: bool) -> Value {
        json!({
            "server_id": id,
            "server_name": name,
            "connected": connected,
            "complete": connected && self.open.is_empty(),
            "state_version": self.version,
            "state": self.state.snapshot(now_ms()),
        })
    }

    /// The quality summary as `GET /api/v1/servers/{id}/quality` shows it.
    pub fn quality(&self, id: u32, name: &str, connected: bool, q: &GetQuality) -> Value {
        let mut v =
            self.state
                .quality_report(now_ms(), q.limit, &q.thresholds, q.endpoint.as_deref());
        v["server_id"] = json!(id);
        v["server_name"] = json!(name);
        v["connected"] = json!(connected);
        v["complete"] = json!(connected && self.open.is_empty());
        v
    }
}

impl PbxConn {
    /// Starts the rebuild right after a successful login.
    pub(super) fn start_snapshot(&mut self, ctx: &mut Context<Self>) {
        for action in self.tracker.start() {
            self.write(ctx, action);
        }
    }
}

impl Handler<GetState> for PbxConn {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        let connected = self.phase == Phase::Connected;
        MessageResult(
            self.tracker
                .json(self.settings.id, &self.settings.name, connected),
        )
    }
}

impl Handler<GetQuality> for PbxConn {
    type Result = MessageResult<GetQuality>;

    fn handle(&mut self, msg: GetQuality, _ctx: &mut Context<Self>) -> Self::Result {
        let connected = self.phase == Phase::Connected;
        MessageResult(
            self.tracker
                .quality(self.settings.id, &self.settings.name, connected, &msg),
        )
    }
}
