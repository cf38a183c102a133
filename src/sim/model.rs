//! The records of the simulated PBX — channels, bridges, queue members, waiting callers, calls
//! and timed steps — and the header blocks each is written as in events and list answers.

use std::time::Instant;

use super::wire::Msg;

pub(crate) struct Chan {
    pub(crate) name: String,
    pub(crate) state: u8,
    pub(crate) cid_num: String,
    pub(crate) cid_name: String,
    pub(crate) conn_num: String,
    pub(crate) conn_name: String,
    pub(crate) context: String,
    pub(crate) exten: String,
    pub(crate) priority: u32,
    pub(crate) uniqueid: String,
    pub(crate) linkedid: String,
    pub(crate) app: String,
    pub(crate) app_data: String,
    pub(crate) bridge: Option<String>,
    /// The device whose state this channel drives (`PJSIP/101`, `Local/201@agents`).
    pub(crate) device: Option<String>,
    pub(crate) created: Instant,
}

/// What a new channel is created with; the rest starts empty.
pub(crate) struct NewChan<'a> {
    pub(crate) name: String,
    pub(crate) state: u8,
    pub(crate) cid: (&'a str, &'a str),
    pub(crate) connected: (&'a str, &'a str),
    pub(crate) context: &'a str,
    pub(crate) exten: &'a str,
    pub(crate) app: (&'a str, &'a str),
    pub(crate) device: Option<String>,
    pub(crate) linkedid: Option<String>,
}

pub(crate) struct Bridge {
    pub(crate) id: String,
    pub(crate) channels: Vec<String>,
}

pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) interface: String,
    pub(crate) penalty: u32,
    pub(crate) calls_taken: u64,
    pub(crate) last_call: u64,
    pub(crate) last_pause: u64,
    pub(crate) login_time: u64,
    pub(crate) in_call: bool,
    /// Device state number: 1 not in use, 2 in use, 6 ringing.
    pub(crate) status: u8,
    pub(crate) paused: bool,
    pub(crate) paused_reason: String,
}

impl Member {
    /// Can be offered a caller now.
    pub(crate) fn free(&self) -> bool {
        !self.paused && !self.in_call && self.status == 1
    }
}

pub(crate) struct Waiting {
    pub(crate) call: u64,
    pub(crate) chan: String,
    pub(crate) joined: Instant,
    pub(crate) original_position: usize,
    pub(crate) offered: bool,
}

pub(crate) struct Queue {
    pub(crate) name: String,
    pub(crate) strategy: &'static str,
    pub(crate) members: Vec<Member>,
    pub(crate) waiting: Vec<Waiting>,
    pub(crate) completed: u64,
    pub(crate) abandoned: u64,
    pub(crate) hold_total: u64,
    pub(crate) talk_total: u64,
}

/// A call in progress: every channel it owns and where it stands.
#[derive(Default)]
pub(crate) struct Call {
    /// The calling channel first.
    pub(crate) chans: Vec<String>,
    /// The dialled party of an internal call.
    pub(crate) callee: Option<String>,
    pub(crate) bridge: Option<String>,
    pub(crate) queue: Option<usize>,
    pub(crate) member: Option<usize>,
    pub(crate) agent_chan: Option<String>,
    pub(crate) offered_at: Option<Instant>,
    pub(crate) connected_at: Option<Instant>,
}

/// A timed transition, keyed by call id or queue/member index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    NewCall,
    PauseToggle,
    Answer(u64),
    Reject(u64, u8),
    AgentAnswer(u64),
    Abandon(u64),
    Hangup(u64),
    Unpause(usize, usize),
    /// The next RTCP exchange of a call.
    Rtcp(u64),
    /// Step n of the demo's endpoint health script.
    Health(u8),
}

/// The 13 channel headers every channel event carries, names prefixed (`Dest`, `LocalOne`).
pub(crate) fn chan_headers(m: &mut Msg, p: &str, c: &Chan) {
    m.hp(p, "Channel", &c.name)
        .hp(p, "ChannelState", c.state)
        .hp(p, "ChannelStateDesc", state_desc(c.state))
        .hp(p, "CallerIDNum", or_unknown(&c.cid_num))
        .hp(p, "CallerIDName", or_unknown(&c.cid_name))
        .hp(p, "ConnectedLineNum", or_unknown(&c.conn_num))
        .hp(p, "ConnectedLineName", or_unknown(&c.conn_name))
        .hp(p, "Language", "en")
        .hp(p, "AccountCode", "")
        .hp(p, "Context", &c.context)
        .hp(p, "Exten", &c.exten)
        .hp(p, "Priority", c.priority)
        .hp(p, "Uniqueid", &c.uniqueid)
        .hp(p, "Linkedid", &c.linkedid);
}

pub(crate) fn bridge_headers(m: &mut Msg, b: &Bridge) {
    m.h("BridgeUniqueid", &b.id)
        .h("BridgeType", "basic")
        .h("BridgeTechnology", "simple_bridge")
        .h("BridgeCreator", "<unknown>")
        .h("BridgeName", "<unknown>")
        .h("BridgeNumChannels", b.channels.len())
        .h("BridgeVideoSourceMode", "none");
}

/// Member headers after `Queue` and the name header, as QueueMember/QueueMemberStatus carry them.
pub(crate) fn member_headers(m: &mut Msg, member: &Member, with_interface: bool) {
    if with_interface {
        m.h("Interface", &member.interface);
    } else {
        m.h("Location", &member.interface);
    }
    m.h("StateInterface", &member.interface)
        .h("Membership", "dynamic")
        .h("Penalty", member.penalty)
        .h("CallsTaken", member.calls_taken)
        .h("LastCall", member.last_call)
        .h("LastPause", member.last_pause)
        .h("LoginTime", member.login_time)
        .h("InCall", u8::from(member.in_call))
        .h("Status", member.status)
        .h("Paused", u8::from(member.paused))
        .h("PausedReason", &member.paused_reason);
    if with_interface {
        m.h("Ringinuse", 0);
    }
    m.h("Wrapuptime", 0);
}

pub(crate) fn state_desc(state: u8) -> &'static str {
    match state {
        0 => "Down",
        1 => "Rsrvd",
        2 => "OffHook",
        3 => "Dialing",
        4 => "Ring",
        5 => "Ringing",
        6 => "Up",
        7 => "Busy",
        _ => "Unknown",
    }
}

pub(crate) fn cause_text(cause: u8) -> &'static str {
    match cause {
        1 => "Unallocated (unassigned) number",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "No answer",
        21 => "Call Rejected",
        34 => "Circuit/channel congestion",
        _ => "Unknown",
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "<unknown>"
    } else {
        s
    }
}
