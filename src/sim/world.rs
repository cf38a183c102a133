//! The simulated PBX state shared by all connections of one `SimPbx`: channels, bridges, queues
//! with their members and waiting callers, device states, global variables, calls in progress and
//! the timer queue. Channel, bridge and device changes go through methods here that also write
//! the event saying so (call flows write the queue events next to their queue changes), so list
//! answers (`answers`) match what the events said. Events collect in `out` and are published by
//! whoever holds the lock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::media::Stream;
use super::model::{
    bridge_headers, cause_text, chan_headers, member_headers, Bridge, Call, Chan, Member, NewChan,
    Queue, Step,
};
use super::wire::{now, Msg};

pub(crate) struct World {
    pub(crate) rng: StdRng,
    pub(crate) system_name: String,
    pub(crate) started: Duration,
    pub(crate) chans: BTreeMap<String, Chan>,
    pub(crate) bridges: BTreeMap<String, Bridge>,
    pub(crate) queues: Vec<Queue>,
    pub(crate) devices: BTreeMap<String, &'static str>,
    pub(crate) vars: HashMap<String, String>,
    pub(crate) calls: HashMap<u64, Call>,
    /// RTP streams of the channels of connected calls.
    pub(crate) media: HashMap<String, Stream>,
    /// Gap between a call's RTCP reports.
    pub(crate) rtcp_interval: Duration,
    pub(crate) processed: u64,
    /// Events written since the last publish, with their class bits.
    pub(crate) out: Vec<(u32, Bytes)>,
    timers: BinaryHeap<Reverse<(Instant, u64, Step)>>,
    next_id: u64,
}

const AGENT_NAMES: [&str; 12] = [
    "Alice Moreau",
    "Bruno Keller",
    "Chloe Nakamura",
    "Diego Alvarez",
    "Emma Lindqvist",
    "Farid Haddad",
    "Grace Okafor",
    "Hugo Petit",
    "Ines Duarte",
    "Jonas Weber",
    "Kasia Nowak",
    "Liam O'Brien",
];

impl World {
    pub(crate) fn new(system_name: &str, seed: u64, rtcp_interval: Duration) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let started = now();
        let mut devices = BTreeMap::new();
        for ext in 100..=120 {
            devices.insert(format!("PJSIP/{ext}"), "NOT_INUSE");
        }
        let mut queues = Vec::new();
        for (qi, (name, strategy, base)) in
            [("support", "rrmemory", 201), ("sales", "leastrecent", 221)]
                .into_iter()
                .enumerate()
        {
            let count = rng.gen_range(4..=6);
            let members = (0..count)
                .map(|i| {
                    let interface = format!("Local/{}@agents", base + i);
                    devices.insert(interface.clone(), "NOT_INUSE");
                    Member {
                        name: AGENT_NAMES[(qi * 6 + i) % AGENT_NAMES.len()].to_string(),
                        interface,
                        penalty: 0,
                        calls_taken: 0,
                        last_call: 0,
                        last_pause: 0,
                        login_time: started.as_secs(),
                        in_call: false,
                        status: 1,
                        paused: false,
                        paused_reason: String::new(),
                    }
                })
                .collect();
            queues.push(Queue {
                name: name.to_string(),
                strategy,
                members,
                waiting: Vec::new(),
                completed: 0,
                abandoned: 0,
                hold_total: 0,
                talk_total: 0,
            });
        }
        World {
            rng,
            system_name: system_name.to_string(),
            started,
            chans: BTreeMap::new(),
            bridges: BTreeMap::new(),
            queues,
            devices,
            vars: HashMap::new(),
            calls: HashMap::new(),
            media: HashMap::new(),
            rtcp_interval,
            processed: 0,
            out: Vec::new(),
            timers: BinaryHeap::new(),
            next_id: 1,
        }
    }

    /// A fresh number for call ids, unique ids, channel suffixes and timers.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn schedule(&mut self, after: Duration, step: Step) {
        let id = self.next_id();
        self.timers
            .push(Reverse((Instant::now() + after, id, step)));
    }

    /// The earliest step due at `now`, removed from the queue.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Step> {
        match self.timers.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.timers.pop().map(|Reverse(t)| t.2),
            _ => None,
        }
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Keeps an event for publishing.
    pub(crate) fn emit(&mut self, m: Msg) {
        let bits = m.bits();
        self.out.push((bits, m.finish()));
    }

    /// Creates a channel and writes its Newchannel.
    pub(crate) fn new_chan(&mut self, spec: NewChan<'_>) -> String {
        let uniqueid = format!("{}.{}", now().as_secs(), self.next_id());
        let chan = Chan {
            name: spec.name.clone(),
            state: spec.state,
            cid_num: spec.cid.0.to_string(),
            cid_name: spec.cid.1.to_string(),
            conn_num: spec.connected.0.to_string(),
            conn_name: spec.connected.1.to_string(),
            context: spec.context.to_string(),
            exten: spec.exten.to_string(),
            priority: 1,
            linkedid: spec.linkedid.unwrap_or_else(|| uniqueid.clone()),
            uniqueid,
            app: spec.app.0.to_string(),
            app_data: spec.app.1.to_string(),
            bridge: None,
            device: spec.device,
            created: Instant::now(),
        };
        self.chans.insert(spec.name.clone(), chan);
        self.chan_event("Newchannel", "call", &spec.name, &[]);
        spec.name
    }

    /// Writes an event made of the headers of each `(prefix, channel)` in turn, then `extra`;
    /// nothing if a channel is gone.
    pub(crate) fn event_of(
        &mut self,
        event: &str,
        class: &str,
        chans: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) {
        let mut m = Msg::event(event, class);
        for (prefix, name) in chans {
            let Some(c) = self.chans.get(*name) else {
                return;
            };
            chan_headers(&mut m, prefix, c);
        }
        for (n, v) in extra {
            m.h(n, v);
        }
        self.emit(m);
    }

    /// An event about one channel.
    pub(crate) fn chan_event(
        &mut self,
        event: &str,
        class: &str,
        chan: &str,
        extra: &[(&str, &str)],
    ) {
        self.event_of(event, class, &[("", chan)], extra);
    }

    /// An event about a caller and its `Dest` channel (DialBegin, AgentCalled, …).
    pub(crate) fn pair_event(
        &mut self,
        event: &str,
        class: &str,
        chan: &str,
        dest: &str,
        extra: &[(&str, &str)],
    ) {
        self.event_of(event, class, &[("", chan), ("Dest", dest)], extra);
    }

    pub(crate) fn set_state(&mut self, chan: &str, state: u8) {
        if let Some(c) = self.chans.get_mut(chan) {
            c.state = state;
            self.chan_event("Newstate", "call", chan, &[]);
        }
    }

    /// Writes Hangup and forgets the channel; its device goes idle when nothing else uses it.
    pub(crate) fn hangup_chan(&mut self, chan: &str, cause: u8) {
        let code = cause.to_string();
        self.chan_event(
            "Hangup",
            "call",
            chan,
            &[("Cause", &code), ("Cause-txt", cause_text(cause))],
        );
        self.media.remove(chan);
        if let Some(device) = self.chans.remove(chan).and_then(|c| c.device) {
            // An unreachable phone stays unavailable after its last call.
            if self.devices.get(&device) != Some(&"UNAVAILABLE")
                && !self
                    .chans
                    .values()
                    .any(|c| c.device.as_deref() == Some(device.as_str()))
            {
                self.device_state(&device, "NOT_INUSE");
            }
        }
    }

    /// Records and writes a device state; extensions also get ExtensionStatus.
    pub(crate) fn device_state(&mut self, device: &str, state: &'static str) {
        self.devices.insert(device.to_string(), state);
        let mut m = Msg::event("DeviceStateChange", "call");
        m.h("Device", device).h("State", state);
        self.emit(m);
        if let Some(ext) = device.strip_prefix("PJSIP/") {
            let (status, text) = match state {
                "INUSE" => (1, "InUse"),
                "RINGING" => (8, "Ringing"),
                "BUSY" => (2, "Busy"),
                "UNAVAILABLE" => (4, "Unavailable"),
                _ => (0, "Idle"),
            };
            let mut m = Msg::event("ExtensionStatus", "call");
            m.h("Exten", ext)
                .h("Context", "ext-local")
                .h("Hint", device)
                .h("Status", status)
                .h("StatusText", text);
            self.emit(m);
        }
    }

    /// Creates a basic bridge and writes BridgeCreate.
    pub(crate) fn bridge_create(&mut self) -> String {
        let r: u128 = self.rng.gen();
        let h = format!("{r:032x}");
        let id = format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        );
        self.bridges.insert(
            id.clone(),
            Bridge {
                id: id.clone(),
                channels: Vec::new(),
            },
        );
        self.bridge_event("BridgeCreate", &id, None);
        id
    }

    pub(crate) fn bridge_enter(&mut self, id: &str, chan: &str) {
        if let (Some(b), Some(c)) = (self.bridges.get_mut(id), self.chans.get_mut(chan)) {
            b.channels.push(chan.to_string());
            c.bridge = Some(id.to_string());
            self.bridge_event("BridgeEnter", id, Some(chan));
        }
    }

    /// Every channel leaves (BridgeLeave each), then BridgeDestroy.
    pub(crate) fn bridge_destroy(&mut self, id: &str) {
        while let Some(chan) = self.bridges.get_mut(id).and_then(|b| b.channels.pop()) {
            if let Some(c) = self.chans.get_mut(&chan) {
                c.bridge = None;
            }
            self.bridge_event("BridgeLeave", id, Some(&chan));
        }
        self.bridge_event("BridgeDestroy", id, None);
        self.bridges.remove(id);
    }

    fn bridge_event(&mut self, event: &str, id: &str, chan: Option<&str>) {
        let Some(b) = self.bridges.get(id) else {
            return;
        };
        let mut m = Msg::event(event, "call");
        bridge_headers(&mut m, b);
        if let Some(c) = chan.and_then(|c| self.chans.get(c)) {
            chan_headers(&mut m, "", c);
        }
        self.emit(m);
    }

    /// Writes QueueMemberStatus or QueueMemberPause for one member.
    pub(crate) fn member_event(&mut self, event: &str, q: usize, m: usize) {
        let Some(queue) = self.queues.get(q) else {
            return;
        };
        let Some(member) = queue.members.get(m) else {
            return;
        };
        let mut e = Msg::event(event, "agent");
        e.h("Queue", &queue.name).h("MemberName", &member.name);
        member_headers(&mut e, member, true);
        self.emit(e);
    }
}
