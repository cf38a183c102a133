//! Queues: parameters from QueueParams, members from QueueMember and the QueueMember* events
//! (status, pause, in call), waiting callers from QueueEntry and QueueCallerJoin / Leave /
//! Abandon, agent activity from AgentCalled / AgentConnect / AgentComplete. A queue's `calls` is
//! the number of waiting callers: QueueParams seeds it, every join and leave sets it to the length
//! of the caller list.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{set, set_val, MAX_CALLERS, MAX_MEMBERS, MAX_QUEUES};
use crate::ami::Packet;

#[derive(Debug, Clone, Default)]
pub(super) struct Queues {
    queues: BTreeMap<String, Queue>,
    /// Members over all queues.
    members: usize,
    /// Waiting callers over all queues.
    callers: usize,
}

#[derive(Debug, Clone, Default)]
struct Queue {
    strategy: String,
    max: String,
    holdtime: String,
    talktime: String,
    completed: String,
    abandoned: String,
    service_level: String,
    calls: usize,
    /// By interface.
    members: BTreeMap<String, Member>,
    /// In queue order; `position` is always the index plus one.
    callers: Vec<Caller>,
    /// The callers held when the last QueueParams arrived: the QueueEntry items that follow it
    /// replace the list, and take their join time from here when they were already known.
    relisted: Vec<Caller>,
}

#[derive(Debug, Clone, Default)]
struct Member {
    name: String,
    state_interface: String,
    membership: String,
    penalty: String,
    calls_taken: String,
    status: String,
    paused: bool,
    paused_reason: String,
    in_call: bool,
}

#[derive(Debug, Clone, Default)]
struct Caller {
    position: usize,
    channel: String,
    uniqueid: String,
    cid_num: String,
    cid_name: String,
    joined_ms: u64,
}

impl Queues {
    pub(super) fn queue_count(&self) -> usize {
        self.queues.len()
    }

    pub(super) fn len(&self) -> usize {
        self.queues.len() + self.members + self.callers
    }

    /// QueueParams: the queue's parameters. Its callers are about to be listed again (QueueEntry
    /// items follow), so the list starts over.
    pub(super) fn params(&mut self, p: &Packet) -> bool {
        let Some((created, q)) = queue_entry(&mut self.queues, p) else {
            return false;
        };
        let mut changed = created
            | set(&mut q.strategy, p.get("Strategy"))
            | set(&mut q.max, p.get("Max"))
            | set(&mut q.holdtime, p.get("Holdtime"))
            | set(&mut q.talktime, p.get("TalkTime"))
            | set(&mut q.completed, p.get("Completed"))
            | set(&mut q.abandoned, p.get("Abandoned"))
            | set(&mut q.service_level, p.get("ServiceLevel"));
        if let Some(calls) = p.get("Calls").and_then(|c| c.trim().parse().ok()) {
            changed |= set_val(&mut q.calls, calls);
        }
        if !q.callers.is_empty() {
            self.callers -= q.callers.len();
            q.relisted = std::mem::take(&mut q.callers);
            changed = true;
        } else {
            q.relisted.clear();
        }
        changed
    }

    /// QueueMember, QueueMemberAdded, QueueMemberStatus, QueueMemberPause(d): a member and
    /// whatever of its fields the packet carries.
    pub(super) fn member(&mut self, p: &Packet) -> bool {
        let Some(interface) = p.get("Interface").or_else(|| p.get("Location")) else {
            return false;
        };
        let Some((created_queue, m)) = self.member_entry(p, interface) else {
            return false;
        };
        let mut changed = created_queue
            | set(&mut m.name, p.get("MemberName").or_else(|| p.get("Name")))
            | set(&mut m.state_interface, p.get("StateInterface"))
            | set(&mut m.membership, p.get("Membership"))
            | set(&mut m.penalty, p.get("Penalty"))
            | set(&mut m.calls_taken, p.get("CallsTaken"))
            | set(&mut m.status, p.get("Status"));
        if let Some(v) = p.get("InCall") {
            changed |= set_val(&mut m.in_call, crate::ami::ast_true(v));
        }
        if let Some(v) = p.get("Paused") {
            changed |= set_val(&mut m.paused, crate::ami::ast_true(v));
        }
        let reason = p.get("PausedReason").or_else(|| p.get("Reason"));
        match reason {
            Some(_) => changed |= set(&mut m.paused_reason, reason),
            None if !m.paused => changed |= set(&mut m.paused_reason, Some("")),
            None => {}
        }
        changed
    }

    /// QueueMemberRemoved.
    pub(super) fn member_removed(&mut self, p: &Packet) -> bool {
        let Some(interface) = p.get("Interface").or_else(|| p.get("Location")) else {
            return false;
        };
        let Some(q) = p.get("Queue").and_then(|n| self.queues.get_mut(n)) else {
            return false;
        };
        let removed = q.members.remove(interface).is_some();
        self.members -= usize::from(removed);
        removed
    }

    /// AgentCalled (the member rings), AgentConnect (it took the call), AgentComplete (the call
    /// ended), AgentRingNoAnswer (it stopped ringing). QueueMemberStatus follows with the device's
    /// own status; this keeps the model right in between.
    pub(super) fn agent(&mut self, event: &str, p: &Packet) -> bool {
        let Some(interface) = p.get("Interface") else {
            return false;
        };
        let Some((created_queue, m)) = self.member_entry(p, interface) else {
            return false;
        };
        let mut changed = created_queue | set(&mut m.name, p.get("MemberName"));
        changed |= match event {
            "AgentCalled" if !m.in_call => set(&mut m.status, Some("6")),
            "AgentConnect" => {
                let ringing = m.status == "6" || m.status.is_empty();
                set_val(&mut m.in_call, true) | (ringing && set(&mut m.status, Some("2")))
            }
            "AgentComplete" => set_val(&mut m.in_call, false),
            "AgentRingNoAnswer" if m.status == "6" => set(&mut m.status, Some("1")),
            _ => false,
        };
        if event == "AgentComplete" {
            if let Some(q) = p.get("Queue").and_then(|n| self.queues.get_mut(n)) {
                changed |= bump(&mut q.completed);
            }
        }
        changed
    }

    /// QueueEntry: a caller listed by QueueStatus, waiting for `Wait` seconds.
    pub(super) fn entry(&mut self, p: &Packet, now_ms: u64) -> bool {
        let wait_ms = p
            .get("Wait")
            .and_then(|w| w.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1000);
        self.add_caller(p, now_ms.saturating_sub(wait_ms), true)
    }

    /// QueueCallerJoin (or the pre-12 `Join`): a caller starts waiting now.
    pub(super) fn caller_join(&mut self, p: &Packet, now_ms: u64) -> bool {
        self.add_caller(p, now_ms, false)
    }

    /// QueueCallerLeave (or `Leave`), QueueCallerAbandon (`abandon`, which also counts it): the
    /// caller stops waiting. Asterisk sends Leave after Abandon; the second finds nothing.
    pub(super) fn caller_leave(&mut self, p: &Packet, abandon: bool) -> bool {
        let Some(q) = p.get("Queue").and_then(|n| self.queues.get_mut(n)) else {
            return false;
        };
        let mut changed = abandon && bump(&mut q.abandoned);
        if let Some(i) = find_caller(&q.relisted, p) {
            q.relisted.swap_remove(i);
        }
        if let Some(i) = find_caller(&q.callers, p) {
            q.callers.remove(i);
            self.callers -= 1;
            renumber(&mut q.callers);
            q.calls = q.callers.len();
            changed = true;
        }
        changed
    }

    /// Inserts or moves the caller of `p` to its `Position` (appended when absent). A `listed`
    /// caller (QueueEntry) keeps the join time it had before the relisting.
    fn add_caller(&mut self, p: &Packet, joined_ms: u64, listed: bool) -> bool {
        let Some(uid) = p
            .get("Uniqueid")
            .or_else(|| p.get("Channel"))
            .filter(|u| !u.is_empty())
        else {
            return false;
        };
        let room = self.callers < MAX_CALLERS;
        let Some((created, q)) = queue_entry(&mut self.queues, p) else {
            return false;
        };
        let mut joined_ms = joined_ms;
        if let Some(old) = find_caller(&q.relisted, p).map(|i| q.relisted.swap_remove(i)) {
            if listed {
                joined_ms = joined_ms.min(old.joined_ms);
            }
        }
        let mut c = match find_caller(&q.callers, p) {
            Some(i) => {
                let mut c = q.callers.remove(i);
                c.joined_ms = c.joined_ms.min(joined_ms);
                c
            }
            None if room => {
                self.callers += 1;
                Caller {
                    joined_ms,
                    ..Caller::default()
                }
            }
            None => return created,
        };
        uid.clone_into(&mut c.uniqueid);
        set(&mut c.channel, p.get("Channel"));
        set(&mut c.cid_num, p.get("CallerIDNum"));
        set(&mut c.cid_name, p.get("CallerIDName"));
        let at = p
            .get("Position")
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(q.callers.len(), |pos| pos.saturating_sub(1));
        q.callers.insert(at.min(q.callers.len()), c);
        renumber(&mut q.callers);
        q.calls = q.callers.len();
        true
    }

    /// The member `interface` of the queue of `p`, both created if unknown and under the caps;
    /// `(created, member)`.
    fn member_entry(&mut self, p: &Packet, interface: &str) -> Option<(bool, &mut Member)> {
        if interface.is_empty() {
            return None;
        }
        let room = self.members < MAX_MEMBERS;
        let (queue_created, q) = queue_entry(&mut self.queues, p)?;
        let created = !q.members.contains_key(interface);
        if created {
            if !room {
                return None;
            }
            q.members.insert(interface.to_owned(), Member::default());
            self.members += 1;
        }
        let m = q.members.get_mut(interface)?;
        Some((queue_created || created, m))
    }

    /// Queues by name, members by interface, callers by position.
    pub(super) fn to_json(&self, now_ms: u64) -> Value {
        let items = self.queues.iter().map(|(name, q)| {
            let members: Vec<Value> = q
                .members
                .iter()
                .map(|(interface, m)| {
                    json!({
                        "name": m.name,
                        "interface": interface,
                        "state_interface": m.state_interface,
                        "membership": m.membership,
                        "penalty": m.penalty,
                        "calls_taken": m.calls_taken,
                        "status": m.status,
                        "status_text": status_text(&m.status),
                        "paused": m.paused,
                        "paused_reason": m.paused_reason,
                        "in_call": m.in_call,
                    })
                })
                .collect();
            let callers: Vec<Value> = q
                .callers
                .iter()
                .map(|c| {
                    json!({
                        "position": c.position,
                        "channel": c.channel,
                        "uniqueid": c.uniqueid,
                        "caller_id_num": c.cid_num,
                        "caller_id_name": c.cid_name,
                        "joined_ms": c.joined_ms,
                        "wait_s": now_ms.saturating_sub(c.joined_ms) / 1000,
                    })
                })
                .collect();
            json!({
                "name": name,
                "strategy": q.strategy,
                "calls": q.calls,
                "max": q.max,
                "holdtime": q.holdtime,
                "talktime": q.talktime,
                "completed": q.completed,
                "abandoned": q.abandoned,
                "service_level": q.service_level,
                "members": members,
                "callers": callers,
            })
        });
        Value::Array(items.collect())
    }
}

/// The queue named by `Queue` in `p`, created if unknown and under the cap; `(created, queue)`.
fn queue_entry<'a>(
    queues: &'a mut BTreeMap<String, Queue>,
    p: &Packet,
) -> Option<(bool, &'a mut Queue)> {
    let name = p.get("Queue").filter(|n| !n.is_empty())?;
    let created = !queues.contains_key(name);
    if created {
        if queues.len() >= MAX_QUEUES {
            return None;
        }
        queues.insert(name.to_owned(), Queue::default());
    }
    queues.get_mut(name).map(|q| (created, q))
}

/// The index of the caller `p` is about, by Uniqueid, else by channel name.
fn find_caller(list: &[Caller], p: &Packet) -> Option<usize> {
    match p.get("Uniqueid").filter(|u| !u.is_empty()) {
        Some(uid) => list.iter().position(|c| c.uniqueid == uid),
        None => {
            let chan = p.get("Channel")?;
            list.iter().position(|c| c.channel == chan)
        }
    }
}

/// Positions 1..n in list order, as Asterisk renumbers a queue when a caller leaves.
fn renumber(list: &mut [Caller]) {
    for (i, c) in list.iter_mut().enumerate() {
        c.position = i + 1;
    }
}

/// Adds one to a counter kept as text; true unless it is not a number.
fn bump(counter: &mut String) -> bool {
    let n = if counter.is_empty() {
        Some(0u64)
    } else {
        counter.trim().parse::<u64>().ok()
    };
    match n {
        Some(n) => {
            *counter = n.saturating_add(1).to_string();
            true
        }
        None => false,
    }
}

/// Asterisk's device status numbers as `queue show` words them.
fn status_text(status: &str) -> &'static str {
    match status.trim() {
        "0" => "Unknown",
        "1" => "Not in use",
        "2" => "In use",
        "3" => "Busy",
        "4" => "Invalid",
        "5" => "Unavailable",
        "6" => "Ringing",
        "7" => "Ring+Inuse",
        "8" => "On Hold",
        _ => "",
    }
}
