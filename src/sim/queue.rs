//! Queue calls: an outside caller joins `support` or `sales` (QueueCallerJoin), free agents are
//! rung in turn (AgentCalled, QueueMemberStatus ringing), the first to answer is bridged with the
//! caller (QueueCallerLeave, AgentConnect), and callers who wait too long give up
//! (QueueCallerAbandon). Agents also pause and unpause now and then (QueueMemberPause).

use std::time::{Duration, Instant};

use rand::Rng;

use super::model::{Call, NewChan, Step, Waiting};
use super::traffic::end_call;
use super::wire::now;
use super::world::World;

const CALLER_NAMES: [&str; 10] = [
    "Acme Corp",
    "J. Smith",
    "Globex",
    "M. Rossi",
    "Initech",
    "K. Tanaka",
    "Umbrella Ltd",
    "P. Novak",
    "Hooli",
    "S. Dubois",
];

/// An outside caller reaches queue `q` through the trunk.
pub(crate) fn start_queue_call(w: &mut World, q: usize) {
    let num = format!("+1415555{:04}", w.rng.gen_range(0..10_000));
    let name = CALLER_NAMES[w.rng.gen_range(0..CALLER_NAMES.len())];
    let qname = w.queues[q].name.clone();
    let (id, seq) = (w.next_id(), w.next_id());
    let chan = w.new_chan(NewChan {
        name: format!("PJSIP/trunk-{seq:08x}"),
        state: 4,
        cid: (&num, name),
        connected: ("", ""),
        context: "from-trunk",
        exten: &qname,
        app: ("Queue", &format!("{qname},t,,,300")),
        device: None,
        linkedid: None,
    });
    w.set_state(&chan, 6);
    w.calls.insert(
        id,
        Call {
            chans: vec![chan.clone()],
            ..Call::default()
        },
    );
    join_queue(w, id, q, &chan);
    let patience = w.rng.gen_range(8..90);
    w.schedule(Duration::from_secs(patience), Step::Abandon(id));
}

/// Puts `chan` (of call `id`) at the end of queue `q` and offers callers to free agents.
pub(crate) fn join_queue(w: &mut World, id: u64, q: usize, chan: &str) {
    let queue = &mut w.queues[q];
    let position = queue.waiting.len() + 1;
    queue.waiting.push(Waiting {
        call: id,
        chan: chan.to_string(),
        joined: Instant::now(),
        original_position: position,
        offered: false,
    });
    let qname = queue.name.clone();
    let pos = position.to_string();
    w.chan_event(
        "QueueCallerJoin",
        "agent",
        chan,
        &[("Queue", &qname), ("Position", &pos), ("Count", &pos)],
    );
    if let Some(c) = w.calls.get_mut(&id) {
        c.queue = Some(q);
    }
    dispatch(w, q);
}

/// Rings a free agent for each waiting caller not yet offered, in queue order.
pub(crate) fn dispatch(w: &mut World, q: usize) {
    loop {
        let queue = &w.queues[q];
        let Some(entry) = queue.waiting.iter().find(|e| !e.offered) else {
            return;
        };
        let free: Vec<usize> = (0..queue.members.len())
            .filter(|&m| queue.members[m].free())
            .collect();
        let Some(&m) = free.iter().min_by_key(|&&m| queue.members[m].calls_taken) else {
            return;
        };
        let (id, caller) = (entry.call, entry.chan.clone());
        let (qname, member) = (queue.name.clone(), &queue.members[m]);
        let (interface, member_name) = (member.interface.clone(), member.name.clone());
        let agent = interface
            .trim_start_matches("Local/")
            .trim_end_matches("@agents")
            .to_string();
        if let Some(e) = w.queues[q].waiting.iter_mut().find(|e| e.call == id) {
            e.offered = true;
        }
        let (cid, linked) = match w.chans.get(&caller) {
            Some(c) => (
                (c.cid_num.clone(), c.cid_name.clone()),
                Some(c.linkedid.clone()),
            ),
            None => return,
        };
        let seq = w.next_id();
        let agent_chan = w.new_chan(NewChan {
            name: format!("Local/{agent}@agents-{seq:08x};1"),
            state: 0,
            cid: (&cid.0, &cid.1),
            connected: ("", ""),
            context: "agents",
            exten: &agent,
            app: ("AppQueue", "(Outgoing Line)"),
            device: Some(interface.clone()),
            linkedid: linked,
        });
        let who = [
            ("Queue", qname.as_str()),
            ("Interface", &interface),
            ("MemberName", &member_name),
        ];
        w.pair_event("AgentCalled", "agent", &caller, &agent_chan, &who);
        w.pair_event(
            "DialBegin",
            "call",
            &caller,
            &agent_chan,
            &[("DialString", &interface)],
        );
        w.set_state(&agent_chan, 5);
        w.queues[q].members[m].status = 6;
        w.member_event("QueueMemberStatus", q, m);
        w.device_state(&interface, "RINGING");
        if let Some(c) = w.calls.get_mut(&id) {
            c.member = Some(m);
            c.agent_chan = Some(agent_chan);
            c.offered_at = Some(Instant::now());
        }
        let ring = w.rng.gen_range(1000..5000);
        w.schedule(Duration::from_millis(ring), Step::AgentAnswer(id));
    }
}

pub(crate) fn agent_answer(w: &mut World, id: u64) {
    let Some(call) = w.calls.get(&id) else {
        return;
    };
    let (Some(q), Some(m), Some(agent_chan), Some(caller)) = (
        call.queue,
        call.member,
        call.agent_chan.clone(),
        call.chans.last().cloned(),
    ) else {
        return;
    };
    let ring = call.offered_at.map_or(0, |t| t.elapsed().as_secs());
    let Some(pos) = w.queues[q].waiting.iter().position(|e| e.call == id) else {
        return;
    };
    w.set_state(&agent_chan, 6);
    w.pair_event(
        "DialEnd",
        "call",
        &caller,
        &agent_chan,
        &[("DialStatus", "ANSWER")],
    );
    let hold = leave_queue(w, q, pos);
    let (interface, name) = {
        let mem = &w.queues[q].members[m];
        (mem.interface.clone(), mem.name.clone())
    };
    let (hold_s, ring_s, qname) = (hold.to_string(), ring.to_string(), w.queues[q].name.clone());
    let who = [
        ("Queue", qname.as_str()),
        ("Interface", &interface),
        ("MemberName", &name),
    ];
    let times = [("HoldTime", hold_s.as_str()), ("RingTime", &ring_s)];
    w.pair_event(
        "AgentConnect",
        "agent",
        &caller,
        &agent_chan,
        &[&who[..], &times[..]].concat(),
    );
    w.queues[q].hold_total += hold;
    let mem = &mut w.queues[q].members[m];
    mem.in_call = true;
    mem.status = 2;
    w.member_event("QueueMemberStatus", q, m);
    w.device_state(&interface, "INUSE");
    let bridge = w.bridge_create();
    w.bridge_enter(&bridge, &agent_chan);
    w.bridge_enter(&bridge, &caller);
    if let Some(c) = w.calls.get_mut(&id) {
        c.bridge = Some(bridge);
        c.connected_at = Some(Instant::now());
    }
    let degrading = super::media::start(w, id);
    let talk = super::media::talk_time(w, degrading);
    w.schedule(talk, Step::Hangup(id));
}

/// Removes the caller at `pos` of queue `q` with QueueCallerLeave; returns its hold time in
/// seconds.
pub(crate) fn leave_queue(w: &mut World, q: usize, pos: usize) -> u64 {
    let entry = w.queues[q].waiting.remove(pos);
    let (qname, count) = (
        w.queues[q].name.clone(),
        w.queues[q].waiting.len().to_string(),
    );
    let position = (pos + 1).to_string();
    w.chan_event(
        "QueueCallerLeave",
        "agent",
        &entry.chan,
        &[
            ("Queue", &qname),
            ("Position", &position),
            ("Count", &count),
        ],
    );
    entry.joined.elapsed().as_secs()
}

/// A caller still waiting, and not being offered to an agent, gives up.
pub(crate) fn abandon(w: &mut World, id: u64) {
    let Some(q) = w.calls.get(&id).and_then(|c| c.queue) else {
        return;
    };
    let Some(pos) = w.queues[q]
        .waiting
        .iter()
        .position(|e| e.call == id && !e.offered)
    else {
        return;
    };
    let e = &w.queues[q].waiting[pos];
    let (chan, orig, hold) = (
        e.chan.clone(),
        e.original_position.to_string(),
        e.joined.elapsed().as_secs().to_string(),
    );
    let (qname, position) = (w.queues[q].name.clone(), (pos + 1).to_string());
    let extra = [
        ("Queue", qname.as_str()),
        ("Position", &position),
        ("OriginalPosition", &orig),
        ("HoldTime", &hold),
    ];
    w.chan_event("QueueCallerAbandon", "agent", &chan, &extra);
    w.queues[q].abandoned += 1;
    end_call(w, id, 16);
}

pub(crate) fn toggle_pause(w: &mut World) {
    let q = w.rng.gen_range(0..w.queues.len());
    let m = w.rng.gen_range(0..w.queues[q].members.len());
    let member = &w.queues[q].members[m];
    if member.paused {
        set_pause(w, q, m, false);
        dispatch(w, q);
    } else if member.free() {
        set_pause(w, q, m, true);
        let back = w.rng.gen_range(10..40);
        w.schedule(Duration::from_secs(back), Step::Unpause(q, m));
    }
}

pub(crate) fn set_pause(w: &mut World, q: usize, m: usize, on: bool) {
    const REASONS: [&str; 4] = ["Lunch", "Break", "Meeting", "Admin"];
    let reason = REASONS[w.rng.gen_range(0..REASONS.len())];
    let mem = &mut w.queues[q].members[m];
    if mem.paused == on {
        return;
    }
    mem.paused = on;
    mem.paused_reason = if on {
        reason.to_string()
    } else {
        String::new()
    };
    if on {
        mem.last_pause = now().as_secs();
    }
    w.member_event("QueueMemberPause", q, m);
}
