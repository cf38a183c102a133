//! The task that drives the simulated PBX through its timer queue, the demo generator, internal
//! calls between extensions 100–120, and the end of any call (its time is up, or a Hangup
//! action). Queue calls live in `queue`, Originate calls in `originate`. With `demo_traffic` the
//! task also starts new calls at random; without it only Originate creates calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::media;
use super::model::{Call, NewChan, Step};
use super::queue::{
    abandon, agent_answer, dispatch, leave_queue, set_pause, start_queue_call, toggle_pause,
};
use super::wire::now;
use super::world::World;
use super::{lock, Inner};

/// Demo calls are not started while this many are in progress.
const MAX_DEMO_CALLS: usize = 24;

/// Runs the timer queue until the PBX stops; with demo traffic it seeds the generator steps.
pub(crate) async fn run(inner: Arc<Inner>) {
    let demo = inner.cfg.demo_traffic;
    if demo {
        let mut w = lock(&inner.world);
        w.schedule(Duration::from_millis(200), Step::NewCall);
        w.schedule(Duration::from_secs(5), Step::PauseToggle);
        let first = w.rtcp_interval;
        w.schedule(first, Step::Health(0));
    }
    loop {
        let next = {
            let mut w = lock(&inner.world);
            let now = Instant::now();
            while let Some(step) = w.pop_due(now) {
                run_step(&mut w, step, inner.cfg.demo_interval_ms);
            }
            inner.publish(&mut w);
            w.next_due()
        };
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.world_wake.notified() => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

fn run_step(w: &mut World, step: Step, interval_ms: u64) {
    match step {
        Step::NewCall => {
            if w.calls.len() < MAX_DEMO_CALLS {
                if w.rng.gen_bool(0.55) {
                    start_internal(w);
                } else {
                    let q = usize::from(w.rng.gen_bool(0.4));
                    start_queue_call(w, q);
                }
            }
            // Exponential gaps around the configured mean.
            let mean = interval_ms.max(1) as f64;
            let u: f64 = w.rng.gen_range(0.001..1.0);
            let gap = (-u.ln() * mean).clamp(mean / 10.0, mean * 8.0);
            w.schedule(Duration::from_millis(gap as u64), Step::NewCall);
        }
        Step::PauseToggle => {
            toggle_pause(w);
            let gap = w.rng.gen_range(6..20);
            w.schedule(Duration::from_secs(gap), Step::PauseToggle);
        }
        Step::Answer(id) => answer_internal(w, id),
        Step::Reject(id, cause) => end_call(w, id, cause),
        Step::AgentAnswer(id) => agent_answer(w, id),
        Step::Abandon(id) => abandon(w, id),
        Step::Hangup(id) => end_call(w, id, 16),
        Step::Rtcp(id) => media::report(w, id),
        Step::Health(n) => media::health(w, n),
        Step::Unpause(q, m) => {
            set_pause(w, q, m, false);
            dispatch(w, q);
        }
    }
}

/// An extension calls another; answered, unanswered or busy.
fn start_internal(w: &mut World) {
    let free: Vec<u32> = (100..=120)
        .filter(|e| w.devices.get(&format!("PJSIP/{e}")) == Some(&"NOT_INUSE"))
        .collect();
    if free.len() < 2 {
        return;
    }
    let a = free[w.rng.gen_range(0..free.len())];
    let b = loop {
        let b = free[w.rng.gen_range(0..free.len())];
        if b != a {
            break b;
        }
    };
    let (an, bn) = (a.to_string(), b.to_string());
    let (a_name, b_name) = (format!("Ext {a}"), format!("Ext {b}"));
    let id = w.next_id();
    let (seq_a, seq_b) = (w.next_id(), w.next_id());
    let caller = w.new_chan(NewChan {
        name: format!("PJSIP/{a}-{seq_a:08x}"),
        state: 4,
        cid: (&an, &a_name),
        connected: ("", ""),
        context: "from-internal",
        exten: &bn,
        app: ("Dial", &format!("PJSIP/{b},30")),
        device: Some(format!("PJSIP/{a}")),
        linkedid: None,
    });
    w.device_state(&format!("PJSIP/{a}"), "INUSE");
    let linked = w.chans.get(&caller).map(|c| c.linkedid.clone());
    let callee = w.new_chan(NewChan {
        name: format!("PJSIP/{b}-{seq_b:08x}"),
        state: 0,
        cid: (&bn, &b_name),
        connected: (&an, &a_name),
        context: "from-internal",
        exten: &bn,
        app: ("AppDial", "(Outgoing Line)"),
        device: Some(format!("PJSIP/{b}")),
        linkedid: linked,
    });
    w.pair_event(
        "DialBegin",
        "call",
        &caller,
        &callee,
        &[("DialString", &format!("PJSIP/{b}"))],
    );
    w.set_state(&callee, 5);
    w.device_state(&format!("PJSIP/{b}"), "RINGING");
    let roll: f64 = w.rng.gen();
    let (after, step) = if roll < 0.78 {
        (w.rng.gen_range(1000..6000), Step::Answer(id))
    } else if roll < 0.9 {
        (15_000, Step::Reject(id, 19))
    } else {
        (w.rng.gen_range(300..1500), Step::Reject(id, 17))
    };
    w.calls.insert(
        id,
        Call {
            chans: vec![caller, callee.clone()],
            callee: Some(callee),
            ..Call::default()
        },
    );
    w.schedule(Duration::from_millis(after), step);
}

fn answer_internal(w: &mut World, id: u64) {
    let Some((caller, callee)) = w
        .calls
        .get(&id)
        .and_then(|c| Some((c.chans.first()?.clone(), c.callee.clone()?)))
    else {
        return;
    };
    w.set_state(&callee, 6);
    w.pair_event(
        "DialEnd",
        "call",
        &caller,
        &callee,
        &[("DialStatus", "ANSWER")],
    );
    w.set_state(&caller, 6);
    if let Some(device) = w.chans.get(&callee).and_then(|c| c.device.clone()) {
        w.device_state(&device, "INUSE");
    }
    let bridge = w.bridge_create();
    w.bridge_enter(&bridge, &caller);
    w.bridge_enter(&bridge, &callee);
    if let Some(c) = w.calls.get_mut(&id) {
        c.bridge = Some(bridge);
        c.connected_at = Some(Instant::now());
    }
    let degrading = media::start(w, id);
    let talk = media::talk_time(w, degrading);
    w.schedule(talk, Step::Hangup(id));
}

/// Tears a call down: dial/queue bookkeeping, bridge, hangups, the agent freed.
pub(crate) fn end_call(w: &mut World, id: u64, cause: u8) {
    let Some(call) = w.calls.remove(&id) else {
        return;
    };
    let caller = call.chans.last().cloned().unwrap_or_default();
    if let (Some(callee), None) = (&call.callee, call.connected_at) {
        let status = match cause {
            17 => "BUSY",
            19 => "NOANSWER",
            _ => "CANCEL",
        };
        let first = call.chans.first().cloned().unwrap_or_default();
        w.pair_event("DialEnd", "call", &first, callee, &[("DialStatus", status)]);
    }
    if let Some(q) = call.queue {
        if let Some(pos) = w.queues[q].waiting.iter().position(|e| e.call == id) {
            if let Some(agent) = &call.agent_chan {
                w.pair_event(
                    "DialEnd",
                    "call",
                    &caller,
                    agent,
                    &[("DialStatus", "CANCEL")],
                );
            }
            leave_queue(w, q, pos);
        } else if let (Some(agent), Some(m), Some(t)) =
            (&call.agent_chan, call.member, call.connected_at)
        {
            let mem = &w.queues[q].members[m];
            let (interface, name, qname) = (
                mem.interface.clone(),
                mem.name.clone(),
                w.queues[q].name.clone(),
            );
            let talk = t.elapsed().as_secs();
            let (talk_s, reason) = (
                talk.to_string(),
                if cause == 16 { "agent" } else { "caller" },
            );
            let extra = [
                ("Queue", qname.as_str()),
                ("Interface", &interface),
                ("MemberName", &name),
                ("HoldTime", "0"),
                ("TalkTime", &talk_s),
                ("Reason", reason),
            ];
            w.pair_event("AgentComplete", "agent", &caller, agent, &extra);
            w.queues[q].completed += 1;
            w.queues[q].talk_total += talk;
        }
    }
    if let Some(bridge) = &call.bridge {
        w.bridge_destroy(bridge);
    }
    for chan in call.agent_chan.iter().chain(call.chans.iter().rev()) {
        w.hangup_chan(chan, cause);
    }
    if let (Some(q), Some(m)) = (call.queue, call.member) {
        let mem = &mut w.queues[q].members[m];
        if call.connected_at.is_some() {
            mem.calls_taken += 1;
            mem.last_call = now().as_secs();
        }
        mem.in_call = false;
        mem.status = 1;
        w.member_event("QueueMemberStatus", q, m);
        dispatch(w, q);
    }
    w.processed += 1;
}

/// Ends the call owning `chan` after a HangupRequest on it; false if no such channel.
pub(crate) fn hangup_channel(w: &mut World, chan: &str, cause: u8) -> bool {
    if !w.chans.contains_key(chan) {
        return false;
    }
    w.chan_event(
        "HangupRequest",
        "call",
        chan,
        &[("Cause", &cause.to_string())],
    );
    let owner = w
        .calls
        .iter()
        .find(|(_, c)| c.chans.iter().chain(c.agent_chan.iter()).any(|n| n == chan));
    match owner.map(|(id, _)| *id) {
        Some(id) => end_call(w, id, cause),
        None => w.hangup_chan(chan, cause),
    }
    true
}
