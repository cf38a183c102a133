//! What the simulator writes on the wire: the `Msg` builder for responses and events, event
//! classes (the `Privilege` header against a session's event mask) and Asterisk-style time text.
//! It knows nothing about sockets or the simulated state.

use std::fmt::{Display, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

/// Asterisk event classes in the order of their bits in an event mask.
const CLASSES: [&str; 19] = [
    "system",
    "call",
    "log",
    "verbose",
    "command",
    "agent",
    "user",
    "config",
    "dtmf",
    "reporting",
    "cdr",
    "dialplan",
    "originate",
    "agi",
    "cc",
    "aoc",
    "test",
    "security",
    "message",
];

/// Mask of a session that takes every event.
pub(crate) const ALL: u32 = u32::MAX;
/// Bit of the `system` class (FullyBooted).
pub(crate) const SYSTEM: u32 = 1;
/// Bit of the `user` class (UserEvent, floods).
pub(crate) const USER: u32 = 1 << 6;
/// Bit of the `security` class (SuccessfulAuth).
pub(crate) const SECURITY: u32 = 1 << 17;

/// The bits of a `Privilege` value such as `call,all`; a value naming no known class matches
/// every session whose events are on.
pub(crate) fn class_bits(privilege: &str) -> u32 {
    let bits = privilege
        .split(',')
        .filter_map(|c| {
            CLASSES
                .iter()
                .position(|k| k.eq_ignore_ascii_case(c.trim()))
        })
        .fold(0u32, |acc, i| acc | 1 << i);
    if bits == 0 {
        ALL
    } else {
        bits
    }
}

/// Parses the `Events:` header of Login or the `EventMask:` of the Events action.
pub(crate) fn parse_mask(value: Option<&str>) -> u32 {
    let Some(v) = value.map(str::trim) else {
        return ALL;
    };
    match v.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" | "all" => ALL,
        "off" | "no" | "false" | "0" | "" => 0,
        list if list.split(',').any(|c| c.trim() == "all") => ALL,
        list => list
            .split(',')
            .filter_map(|c| CLASSES.iter().position(|k| *k == c.trim()))
            .fold(0u32, |acc, i| acc | 1 << i),
    }
}

/// Asterisk's `ast_true`.
pub(crate) fn is_true(value: Option<&str>) -> bool {
    value.is_some_and(crate::ami::ast_true)
}

/// One AMI packet being written: headers in order, then the blank line on `finish`.
pub(crate) struct Msg {
    buf: BytesMut,
    bits: u32,
}

impl Msg {
    /// A packet whose first header is `name: value`.
    pub(crate) fn new(name: &str, value: &str) -> Msg {
        let mut m = Msg {
            buf: BytesMut::with_capacity(512),
            bits: ALL,
        };
        m.h(name, value);
        m
    }

    /// An unsolicited event: `Event`, `Privilege: <class>,all`, `Timestamp` (timestampevents=yes).
    pub(crate) fn event(name: &str, class: &str) -> Msg {
        let mut m = Msg::new("Event", name);
        m.bits = class_bits(class);
        m.h("Privilege", format_args!("{class},all"))
            .h("Timestamp", Stamp(now()));
        m
    }

    /// A response; `ActionID` follows `Response` when the action carried one.
    pub(crate) fn response(status: &str, action_id: Option<&str>) -> Msg {
        let mut m = Msg::new("Response", status);
        m.aid(action_id);
        m
    }

    /// `Response: Success|Error` with one `Message`.
    pub(crate) fn reply(ok: bool, action_id: Option<&str>, message: &str) -> Bytes {
        let mut m = Msg::response(if ok { "Success" } else { "Error" }, action_id);
        m.h("Message", message);
        m.finish()
    }

    pub(crate) fn h(&mut self, name: &str, value: impl Display) -> &mut Msg {
        let _ = write!(self.buf, "{name}: {value}\r\n");
        self
    }

    /// A header whose name is `prefix` + `name` (`DestChannel`, `LocalOneUniqueid`).
    pub(crate) fn hp(&mut self, prefix: &str, name: &str, value: impl Display) -> &mut Msg {
        let _ = write!(self.buf, "{prefix}{name}: {value}\r\n");
        self
    }

    pub(crate) fn aid(&mut self, action_id: Option<&str>) -> &mut Msg {
        if let Some(id) = action_id {
            self.h("ActionID", id);
        }
        self
    }

    /// The event-class bits this packet is delivered under.
    pub(crate) fn bits(&self) -> u32 {
        self.bits
    }

    pub(crate) fn finish(mut self) -> Bytes {
        self.buf.extend_from_slice(b"\r\n");
        self.buf.freeze()
    }
}

/// Time since the Unix epoch.
pub(crate) fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Displays as `1795353464.068681`, the AMI `Timestamp` shape.
pub(crate) struct Stamp(pub(crate) Duration);

impl Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.0.as_secs(), self.0.subsec_micros())
    }
}

/// UTC calendar fields `(year, month, day, hour, minute, second)` of a Unix time.
pub(crate) fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (secs / 86_400) as i64 + 719_468;
    let rem = secs % 86_400;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (year, month, day, h as u32, m as u32, s as u32)
}

/// `2026-11-22`.
pub(crate) fn date(secs: u64) -> String {
    let (y, mo, d, ..) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}")
}

/// `13:17:40`.
pub(crate) fn clock(secs: u64) -> String {
    let (.., h, m, s) = civil(secs);
    format!("{h:02}:{m:02}:{s:02}")
}

/// `2026-11-22T13:17:44.069+0000`, the security events' `EventTV` shape.
pub(crate) fn event_tv(t: Duration) -> String {
    let s = t.as_secs();
    format!("{}T{}.{:03}+0000", date(s), clock(s), t.subsec_millis())
}

/// `00:01:05`, the CoreShowChannel `Duration` shape.
pub(crate) fn hms(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_matches_known_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_795_353_464), (2026, 11, 22, 13, 17, 44));
        assert_eq!(date(951_782_400), "2000-02-29");
    }

    #[test]
    fn masks_and_classes() {
        assert_eq!(parse_mask(None), ALL);
        assert_eq!(parse_mask(Some("off")), 0);
        assert_eq!(parse_mask(Some("user,call")), USER | 2);
        assert_eq!(class_bits("user,all"), USER);
        assert_eq!(class_bits("whatever"), ALL);
    }
}
