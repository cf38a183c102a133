//! Keeps a PBX's live state (`crate::state::PbxState`) in step: after every login it resets the
//! state and asks the snapshot actions, feeds their list items and every live event into it,
//! and announces `state ready` (type 7 with a new StateVersion) once the rebuild is complete.

use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{json, Value};

use super::{PbxConn, Phase};
use crate::ami::Packet;
use crate::state::{snapshot_actions, Thresholds};

/// Prefix of the ActionIDs of snapshot actions: `amihub-snap-<i>`.
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

pub(super) fn now_ms() -> u64 {
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

impl PbxConn {
    /// Starts the rebuild right after a successful login.
    pub(super) fn start_snapshot(&mut self, ctx: &mut Context<Self>) {
        self.state.reset();
        self.snapshot_open.clear();
        for (i, mut action) in snapshot_actions().into_iter().enumerate() {
            let id = format!("{SNAP_PREFIX}{i}");
            action.set("ActionID", id.as_str());
            self.snapshot_open.push(id);
            self.write(ctx, action);
        }
    }

    /// Feeds a packet; returns it back unless it belonged to a snapshot action.
    pub(super) fn track_state(&mut self, p: Packet) -> Option<Packet> {
        let id = p.action_id().unwrap_or("");
        if id.starts_with(SNAP_PREFIX) {
            if p.get("Response").is_none() {
                self.state.apply(&p, now_ms());
            }
            if ends_reply(&p) {
                self.snapshot_open.retain(|x| x != id);
                if self.snapshot_open.is_empty() {
                    self.state_version += 1;
                    // Announced with the packets handed over from this read, after them.
                    self.ready_version = Some(self.state_version);
                }
            }
            return None;
        }
        if p.event().is_some() {
            self.state.apply(&p, now_ms());
            if let Some(sample) = self.state.take_quality_sample() {
                self.metrics.rtcp_mos.observe_value(sample.mos);
                self.metrics.rtcp_loss.observe_value(sample.loss_pct);
            }
        }
        Some(p)
    }

    /// True while the rebuild after a login is still collecting answers.
    pub(super) fn snapshot_pending(&self) -> bool {
        self.phase == Phase::Connected && !self.snapshot_open.is_empty()
    }
}

impl Handler<GetState> for PbxConn {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(json!({
            "server_id": self.settings.id,
            "server_name": self.settings.name,
            "connected": self.phase == Phase::Connected,
            "complete": self.phase == Phase::Connected && !self.snapshot_pending(),
            "state_version": self.state_version,
            "state": self.state.snapshot(now_ms()),
        }))
    }
}

impl Handler<GetQuality> for PbxConn {
    type Result = MessageResult<GetQuality>;

    fn handle(&mut self, msg: GetQuality, _ctx: &mut Context<Self>) -> Self::Result {
        let mut v = self.state.quality_report(
            now_ms(),
            msg.limit,
            &msg.thresholds,
            msg.endpoint.as_deref(),
        );
        v["server_id"] = json!(self.settings.id);
        v["server_name"] = json!(self.settings.name);
        v["connected"] = json!(self.phase == Phase::Connected);
        v["complete"] = json!(self.phase == Phase::Connected && !self.snapshot_pending());
        MessageResult(v)
    }
}
