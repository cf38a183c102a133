//! Answers to the read-only actions, rendered from the simulated state in the shapes of the
//! captures: CoreStatus, CoreSettings, the EventList actions (CoreShowChannels, Status,
//! QueueStatus, QueueSummary, BridgeList, DeviceStateList) and CLI `Command` output.

use bytes::{Bytes, BytesMut};

use super::model::{bridge_headers, chan_headers, member_headers, state_desc};
use super::wire::{clock, date, hms, now, Msg};
use super::world::World;

const AMI_VERSION: &str = "11.0.0";
const ASTERISK_VERSION: &str = "22.10.1";

/// An EventList answer being written: the start response, items, then the Complete event.
struct List {
    buf: BytesMut,
    items: usize,
}

impl List {
    fn start(aid: Option<&str>, message: &str) -> List {
        let mut m = Msg::response("Success", aid);
        m.h("EventList", "start").h("Message", message);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&m.finish());
        List { buf, items: 0 }
    }

    fn item(&mut self, m: Msg) {
        self.buf.extend_from_slice(&m.finish());
        self.items += 1;
    }

    fn complete(mut self, event: &str, aid: Option<&str>, items_too: bool) -> Bytes {
        let mut m = Msg::new("Event", event);
        m.aid(aid)
            .h("EventList", "Complete")
            .h("ListItems", self.items);
        if items_too {
            m.h("Items", self.items);
        }
        self.buf.extend_from_slice(&m.finish());
        self.buf.freeze()
    }
}

pub(crate) fn core_status(w: &World, aid: Option<&str>) -> Bytes {
    let start = w.started.as_secs();
    let mut m = Msg::response("Success", aid);
    m.h("CoreStartupDate", date(start))
        .h("CoreStartupTime", clock(start))
        .h("CoreReloadDate", date(start))
        .h("CoreReloadTime", clock(start))
        .h("CoreCurrentCalls", w.calls.len())
        .h("CoreProcessedCalls", w.processed);
    m.finish()
}

pub(crate) fn core_settings(w: &World, aid: Option<&str>) -> Bytes {
    let mut m = Msg::response("Success", aid);
    m.h("AMIversion", AMI_VERSION)
        .h("AsteriskVersion", ASTERISK_VERSION)
        .h("SystemName", &w.system_name)
        .h("CoreMaxCalls", 0)
        .h("CoreMaxLoadAvg", "0.000000")
        .h("CoreRunUser", "asterisk")
        .h("CoreRunGroup", "asterisk")
        .h("CoreMaxFilehandles", 0)
        .h("CoreRealTimeEnabled", "No")
        .h("CoreCDRenabled", "Yes")
        .h("CoreHTTPenabled", "No")
        .h("SoundsSearchCustomDir", "No");
    m.finish()
}

pub(crate) fn core_show_channels(w: &World, aid: Option<&str>) -> Bytes {
    let mut list = List::start(aid, "Channels will follow");
    for c in w.chans.values() {
        let mut m = Msg::new("Event", "CoreShowChannel");
        m.aid(aid);
        chan_headers(&mut m, "", c);
        m.h("Application", &c.app)
            .h("ApplicationData", &c.app_data)
            .h("Duration", hms(c.created.elapsed().as_secs()))
            .h("BridgeId", c.bridge.as_deref().unwrap_or(""));
        list.item(m);
    }
    list.complete("CoreShowChannelsComplete", aid, false)
}

/// `None` when a named channel does not exist.
pub(crate) fn status(w: &World, aid: Option<&str>, channel: Option<&str>) -> Option<Bytes> {
    if channel.is_some_and(|c| !w.chans.contains_key(c)) {
        return None;
    }
    let mut list = List::start(aid, "Channel status will follow");
    for c in w
        .chans
        .values()
        .filter(|c| channel.is_none_or(|n| n == c.name))
    {
        let mut m = Msg::new("Event", "Status");
        m.h("Privilege", "Call");
        chan_headers(&mut m, "", c);
        let tech = c.name.split('/').next().unwrap_or("");
        m.h("Type", tech)
            .h("DNID", "")
            .h("EffectiveConnectedLineNum", &c.conn_num)
            .h("EffectiveConnectedLineName", &c.conn_name)
            .h("TimeToHangup", 0)
            .h("BridgeID", c.bridge.as_deref().unwrap_or(""))
            .h("Application", &c.app)
            .h("Data", &c.app_data)
            .h("Nativeformats", "(ulaw)")
            .h("Readformat", "ulaw")
            .h("Readtrans", "")
            .h("Writeformat", "ulaw")
            .h("Writetrans", "")
            .h("Callgroup", 0)
            .h("Pickupgroup", 0)
            .h("Seconds", c.created.elapsed().as_secs())
            .aid(aid);
        list.item(m);
    }
    Some(list.complete("StatusComplete", aid, true))
}

pub(crate) fn queue_status(w: &World, aid: Option<&str>, queue: Option<&str>) -> Bytes {
    let mut list = List::start(aid, "Queue status will follow");
    for q in w
        .queues
        .iter()
        .filter(|q| queue.is_none_or(|n| n == q.name))
    {
        let answered = q.completed.max(1);
        let mut m = Msg::new("Event", "QueueParams");
        m.h("Queue", &q.name)
            .h("Max", 0)
            .h("Strategy", q.strategy)
            .h("Calls", q.waiting.len())
            .h("Holdtime", q.hold_total / answered)
            .h("TalkTime", q.talk_total / answered)
            .h("Completed", q.completed)
            .h("Abandoned", q.abandoned)
            .h("ServiceLevel", 60)
            .h("ServicelevelPerf", "0.0")
            .h("ServicelevelPerf2", "0.0")
            .h("Weight", 0)
            .aid(aid);
        list.item(m);
        for member in &q.members {
            let mut m = Msg::new("Event", "QueueMember");
            m.h("Queue", &q.name).h("Name", &member.name);
            member_headers(&mut m, member, false);
            m.aid(aid);
            list.item(m);
        }
        for (i, e) in q.waiting.iter().enumerate() {
            let Some(c) = w.chans.get(&e.chan) else {
                continue;
            };
            let mut m = Msg::new("Event", "QueueEntry");
            m.h("Queue", &q.name)
                .h("Position", i + 1)
                .h("Channel", &c.name)
                .h("Uniqueid", &c.uniqueid)
                .h("CallerIDNum", &c.cid_num)
                .h("CallerIDName", &c.cid_name)
                .h("ConnectedLineNum", "<unknown>")
                .h("ConnectedLineName", "<unknown>")
                .h("Wait", e.joined.elapsed().as_secs())
                .h("Priority", 0)
                .aid(aid);
            list.item(m);
        }
    }
    list.complete("QueueStatusComplete", aid, false)
}

pub(crate) fn queue_summary(w: &World, aid: Option<&str>, queue: Option<&str>) -> Bytes {
    let mut list = List::start(aid, "Queue summary will follow");
    for q in w
        .queues
        .iter()
        .filter(|q| queue.is_none_or(|n| n == q.name))
    {
        let longest = q
            .waiting
            .first()
            .map_or(0, |e| e.joined.elapsed().as_secs());
        let mut m = Msg::new("Event", "QueueSummary");
        m.h("Queue", &q.name)
            .h("LoggedIn", q.members.len())
            .h("Available", q.members.iter().filter(|m| m.free()).count())
            .h("Callers", q.waiting.len())
            .h("HoldTime", q.hold_total / q.completed.max(1))
            .h("TalkTime", q.talk_total / q.completed.max(1))
            .h("LongestHoldTime", longest)
            .aid(aid);
        list.item(m);
    }
    list.complete("QueueSummaryComplete", aid, false)
}

pub(crate) fn bridge_list(w: &World, aid: Option<&str>) -> Bytes {
    let mut list = List::start(aid, "Bridge listing will follow");
    for b in w.bridges.values() {
        let mut m = Msg::new("Event", "BridgeListItem");
        m.aid(aid);
        bridge_headers(&mut m, b);
        list.item(m);
    }
    list.complete("BridgeListComplete", aid, false)
}

pub(crate) fn device_state_list(w: &World, aid: Option<&str>) -> Bytes {
    let mut list = List::start(aid, "Device State Changes will follow");
    for (device, state) in &w.devices {
        let mut m = Msg::new("Event", "DeviceStateChange");
        m.aid(aid).h("Device", device).h("State", state);
        list.item(m);
    }
    list.complete("DeviceStateListComplete", aid, false)
}

/// The Asterisk 14+ shape: `Message: Command output follows` and one `Output` per line.
pub(crate) fn command(w: &World, aid: Option<&str>, cmd: Option<&str>) -> Bytes {
    let Some(cmd) = cmd else {
        return Msg::reply(false, aid, "No command provided");
    };
    let (ok, lines) = cli(w, cmd);
    let mut m = Msg::response(if ok { "Success" } else { "Error" }, aid);
    m.h("Message", "Command output follows");
    for line in lines {
        m.h("Output", line);
    }
    m.finish()
}

pub(crate) fn list_commands(aid: Option<&str>) -> Bytes {
    let mut m = Msg::response("Success", aid);
    for (action, what) in COMMANDS {
        m.h(action, format_args!("{what}.  (Priv: <none>)"));
    }
    m.finish()
}

/// What ListCommands lists: the actions the simulator answers.
const COMMANDS: [(&str, &str); 19] = [
    ("BridgeList", "Get a list of bridges in the system"),
    ("Challenge", "Generate Challenge for MD5 Auth"),
    ("Command", "Execute Asterisk CLI Command"),
    ("CoreSettings", "Show PBX core settings (version etc)"),
    ("CoreShowChannels", "List currently active channels"),
    ("CoreStatus", "Show PBX core status variables"),
    ("DeviceStateList", "List the current known device states"),
    ("Events", "Control Event Flow"),
    ("Getvar", "Gets a channel variable or function value"),
    ("Hangup", "Hangup channel"),
    ("ListCommands", "List available manager commands"),
    ("Login", "Login Manager"),
    ("Logoff", "Logoff Manager"),
    ("Originate", "Originate a call"),
    ("Ping", "Keepalive command"),
    ("QueueStatus", "Show queue status"),
    ("QueueSummary", "Show queue summary"),
    ("Setvar", "Sets a channel variable or function value"),
    ("Status", "List channel status"),
];

/// What `core show version` says after the version number.
const BUILD_INFO: &str = "built by sim @ amihub on a x86_64 running Linux on";

/// Output lines of a CLI command, and whether it exists.
fn cli(w: &World, cmd: &str) -> (bool, Vec<String>) {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let start = w.started.as_secs();
    let up = span(now().as_secs().saturating_sub(start));
    let row = |a: &str, b: &str, c: &str, d: &str| format!("{a:<32} {b:<24} {c:<7} {d}");
    let lines = match words.as_slice() {
        ["core", "show", "version"] => {
            let built = format!("{} {} UTC", date(start), clock(start));
            vec![format!("Asterisk {ASTERISK_VERSION} {BUILD_INFO} {built}")]
        }
        ["core", "show", "uptime", ..] => {
            vec![format!("System uptime: {up}"), format!("Last reload: {up}")]
        }
        ["core", "show", "channels", ..] => {
            let mut out = vec![row("Channel", "Location", "State", "Application(Data)")];
            for c in w.chans.values() {
                let location = format!("{}@{}:{}", c.exten, c.context, c.priority);
                let app = format!("{}({})", c.app, c.app_data);
                out.push(row(&c.name, &location, state_desc(c.state), &app));
            }
            out.push(plural(w.chans.len() as u64, "active channel", ""));
            out.push(plural(w.calls.len() as u64, "active call", ""));
            out.push(plural(w.processed, "call", " processed"));
            out
        }
        _ => {
            let hint = words.iter().take(2).copied().collect::<Vec<_>>().join(" ");
            let help = format!("type 'core show help {hint}' for other possible commands");
            return (false, vec![format!("No such command '{cmd}' ({help})")]);
        }
    };
    (true, lines)
}

/// `1 active channel`, `2 calls processed`.
fn plural(n: u64, noun: &str, suffix: &str) -> String {
    format!("{n} {noun}{}{suffix}", if n == 1 { "" } else { "s" })
}

/// `1 hour, 2 minutes, 5 seconds`, Asterisk's uptime wording.
fn span(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "day"),
        (secs / 3600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
    ];
    let mut out: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| plural(*n, u, ""))
        .collect();
    if !secs.is_multiple_of(60) || out.is_empty() {
        out.push(plural(secs % 60, "second", ""));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_wording() {
        assert_eq!(span(5), "5 seconds");
        assert_eq!(span(3661), "1 hour, 1 minute, 1 second");
        assert_eq!(plural(1, "active channel", ""), "1 active channel");
        assert_eq!(plural(3, "call", " processed"), "3 calls processed");
    }
}
