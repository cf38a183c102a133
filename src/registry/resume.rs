//! Resume (SPEC §10): replays to one session what it missed of each server's history, filtered
//! by its rights and subscription as the live fan-out would have, inside the one registry
//! handler that also joins it, so no live frame falls between the replay and live traffic.
//!
//! It knows the session table and the servers' [`FrameLog`]s, not how either is stored, and
//! not the WebSocket: a session asks with [`Resume`] and receives frames like any others. The
//! same gap, found live ([`HistoryGap`]: frames of the shared history this node never read),
//! is told to every session of the server the same way.

use std::collections::{BTreeMap, HashMap};

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::{json, Map, Value};

use crate::metrics::Metrics;
use crate::ws::protocol::{encode_reply_value, encode_status_with};

use super::fanout::Outgoing;
use super::history::Position;
use super::session::Format;
use super::At;
use super::{Join, Registry, ServerEntry};
use crate::amisrv::render::status_event;

/// Reason of the type 7 a session gets for a server whose history no longer covers its request.
pub const GAP_REASON: &str = "resume gap";

/// Cluster mode: this node's reader came back to a server's stream after entries it had not
/// read were trimmed from it (`[history] max_frames`), so its sessions missed `missed` frames.
/// They are told live as a resume would tell them, with a type 7 "resume gap" (at the last
/// position they had, not kept), and know to fetch a snapshot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HistoryGap {
    pub server_id: u32,
    pub generation: u64,
    pub missed: u64,
    pub at: At,
}

impl Handler<HistoryGap> for Registry {
    type Result = ();

    fn handle(&mut self, msg: HistoryGap, ctx: &mut Context<Self>) {
        let Some(server) = self.current(msg.server_id, msg.generation) else {
            return;
        };
        let detail = format!(
            "{} frames left the shared history before this node read them",
            msg.missed
        );
        log::warn!("server {}: {detail}", msg.server_id);
        let ami = status_event(server.status.as_str(), GAP_REASON);
        let notice = Outgoing::notice(gap_frame(server, &detail), Some(ami));
        Metrics::inc(&self.metrics.resume_gaps_total);
        self.broadcast(ctx, msg.server_id, vec![(notice, Some(msg.at))]);
    }
}

/// The type 7 that tells a session it missed frames of `server` (`detail`: why).
fn gap_frame(server: &ServerEntry, detail: &str) -> ByteString {
    let extra = [("Detail", detail)];
    encode_status_with(&server.tag, server.status.as_str(), GAP_REASON, &extra)
}

/// Replay what followed these positions, then continue live. With `join`, the session joins in
/// the same step (`?resume=` on the WebSocket URL); without, it has joined before
/// (`{"ProxyAction":"Resume"}`), and what it already got live is not sent again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume {
    pub session: u64,
    pub since: BTreeMap<u32, Position>,
    /// The ProxyAction's ActionID, carried by the closing type-8 summary.
    pub action_id: Option<String>,
    pub join: Option<Join>,
}

/// Per JSON session and server, the newest offset when it joined: a replay stops there, since
/// everything after it reached the session live. A mark belongs to one server entry (its
/// generation): a server dropped and added again starts a new history the session got live.
#[derive(Default)]
pub(super) struct Marks(HashMap<u64, Vec<Mark>>);

struct Mark {
    server: u32,
    generation: u64,
    offset: u64,
}

impl Marks {
    pub(super) fn joined<'a>(
        &mut self,
        session: u64,
        servers: impl Iterator<Item = (&'a u32, &'a ServerEntry)>,
    ) {
        let marks = servers
            .map(|(id, s)| Mark {
                server: *id,
                generation: s.generation,
                offset: s.history.newest(),
            })
            .collect();
        self.0.insert(session, marks);
    }

    pub(super) fn left(&mut self, session: u64) {
        self.0.remove(&session);
    }

    /// Where live delivery of `server` began for `session` (a server added after it joined:
    /// from its first frame).
    fn mark(&self, session: u64, server: u32, generation: u64) -> u64 {
        self.0
            .get(&session)
            .and_then(|m| m.iter().find(|m| m.server == server))
            .filter(|m| m.generation == generation)
            .map_or(0, |m| m.offset)
    }

    /// After a replay from `offset`, the session has everything after it.
    fn lower(&mut self, session: u64, server: u32, generation: u64, offset: u64) {
        let marks = self.0.entry(session).or_default();
        marks.retain(|m| m.server != server || m.generation == generation);
        match marks.iter_mut().find(|m| m.server == server) {
            Some(m) => m.offset = m.offset.min(offset),
            None => marks.push(Mark {
                server,
                generation,
                offset: 0,
            }),
        }
    }
}

/// What the replay of one server came to.
enum Outcome {
    Replayed(usize),
    Gap(String),
}

impl Handler<Resume> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Resume, ctx: &mut Context<Self>) {
        self.flush(ctx);
        // The statuses of a joining session follow its replay: positions only ever grow.
        let statuses = msg.join.map(|join| self.join(join)).unwrap_or_default();
        let session = msg.session;
        let Some(entry) = self.sessions.map.get(&session) else {
            return;
        };
        if entry.select.format != Format::Json {
            return;
        }
        Metrics::inc(&self.metrics.resume_requests_total);
        let joining: usize = statuses.iter().map(|f| f.len()).sum();
        let room = self
            .sessions
            .queue_limit()
            .saturating_sub(entry.io.queued() + joining);
        let mut frames: Vec<ByteString> = Vec::new();
        let mut bytes = 0;
        let mut summary = Map::new();
        let mut unknown = Vec::new();
        let mut replayed = Vec::new();
        for (id, asked) in &msg.since {
            let Some(server) = self
                .servers
                .get(id)
                .filter(|s| entry.select.rights.may_see_server(*id, &s.tag.name))
            else {
                // Unknown and not permitted read alike: nothing about the server leaks.
                unknown.push(*id);
                continue;
            };
            let outcome = match server.history.since(&asked.epoch, asked.offset) {
                Err(gap) => Outcome::Gap(gap.to_string()),
                Ok(kept) => {
                    let mark = self.marks.mark(session, *id, server.generation);
                    let missed = mark.saturating_sub(asked.offset);
                    let seen = entry.select.sees_server(*id, &server.tag.name);
                    // A session that takes everything needs no packet to look at.
                    let all = entry.select.takes_all();
                    let mine: Vec<ByteString> = kept
                        .into_iter()
                        .take(missed as usize)
                        .filter(|k| {
                            seen && (all || k.outgoing().is_some_and(|o| entry.select.admits(&o)))
                        })
                        .map(|k| k.frame().clone())
                        .collect();
                    let size: usize = mine.iter().map(|f| f.len()).sum();
                    if bytes + size > room {
                        // Cutting it as a slow consumer would only make it come back for the
                        // same replay: it gets a gap and takes a snapshot instead.
                        Outcome::Gap(format!(
                            "replay of {size} bytes exceeds what session_queue_bytes leaves ({})",
                            room.saturating_sub(bytes)
                        ))
                    } else {
                        bytes += size;
                        let n = mine.len();
                        frames.extend(mine);
                        Outcome::Replayed(n)
                    }
                }
            };
            let detail = match outcome {
                Outcome::Replayed(n) => {
                    replayed.push((*id, server.generation, asked.offset));
                    Metrics::add(&self.metrics.resume_frames_total, n as u64);
                    json!({"Replayed": n, "epoch": server.history.epoch(),
                           "offset": server.history.newest()})
                }
                Outcome::Gap(why) => {
                    Metrics::inc(&self.metrics.resume_gaps_total);
                    frames.push(gap_frame(server, &why));
                    json!({"Gap": why})
                }
            };
            summary.insert(id.to_string(), detail);
        }
        for (id, generation, offset) in replayed {
            self.marks.lower(session, id, generation, offset);
        }
        frames.extend(statuses);
        let mut data = Map::new();
        data.insert("Response".into(), json!("Success"));
        data.insert("ProxyAction".into(), json!("Resume"));
        if let Some(id) = msg.action_id {
            data.insert("ActionID".into(), json!(id));
        }
        data.insert("Servers".into(), Value::Object(summary));
        if !unknown.is_empty() {
            data.insert("Unknown".into(), json!(unknown));
        }
        frames.push(encode_reply_value(&Value::Object(data)));
        if !self.sessions.send(session, frames.into()) {
            self.cut_loose(ctx, session);
        }
    }
}
