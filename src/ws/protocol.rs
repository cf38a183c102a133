//! The JSON envelope (SPEC §4): the only module that knows how packets look to browsers and how
//! client JSON becomes an AMI action. Pure functions, no actors.

use bytestring::ByteString;
use serde_json::{Map, Value};

use crate::ami::{Action, Packet, PacketKind};

/// Envelope `type` codes, amiws-compatible (0–6) plus amihub's own (7, 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    Unknown = 0,
    Prompt = 1,
    Action = 2,
    Event = 3,
    Response = 4,
    CommandResponse = 5,
    Text = 6,
    Status = 7,
    Reply = 8,
}

/// The per-server part of every envelope, rendered once per server.
#[derive(Debug, Clone)]
pub struct ServerTag {
    pub id: u32,
    pub name: String,
    pub ssl: bool,
    /// `,"server_id":1,"server_name":"pbx1","ssl":false,"data":`
    suffix: String,
}

impl ServerTag {
    pub fn new(id: u32, name: &str, ssl: bool) -> ServerTag {
        let mut suffix = format!(",\"server_id\":{id},\"server_name\":");
        push_json_str(&mut suffix, name);
        suffix.push_str(if ssl {
            ",\"ssl\":true"
        } else {
            ",\"ssl\":false"
        });
        suffix.push_str(",\"data\":");
        ServerTag {
            id,
            name: name.to_string(),
            ssl,
            suffix,
        }
    }
}

/// The envelope type of a packet from a PBX.
pub fn packet_type(p: &Packet) -> MsgType {
    match p.kind() {
        PacketKind::Event => MsgType::Event,
        PacketKind::Response => {
            let follows = p
                .get("Response")
                .is_some_and(|r| r.eq_ignore_ascii_case("Follows"));
            if follows || p.get("Output").is_some() || p.raw_lines().next().is_some() {
                MsgType::CommandResponse
            } else {
                MsgType::Response
            }
        }
        PacketKind::Action => MsgType::Action,
        PacketKind::Text => MsgType::Text,
        PacketKind::Unknown => MsgType::Unknown,
    }
}

/// Serialises a packet once; `action_id` replaces the packet's ActionID (routing back to the
/// client's own id). Repeated headers become arrays; command output is always `Output: [lines]`.
pub fn encode_packet(tag: &ServerTag, p: &Packet, action_id: Option<&str>) -> ByteString {
    let mut out = String::new();
    encode_packet_into(&mut out, tag, p, action_id);
    ByteString::from(out)
}

/// Headers of a packet grouped without allocating (below this many headers).
const INLINE_HEADERS: usize = 64;
/// No next header of the same name.
const NONE: u32 = u32::MAX;

/// [`encode_packet`] appended to `out`, in one pass over the packet, so a batch of packets can
/// be rendered into one buffer (one allocation for the batch, not one per packet).
pub fn encode_packet_into(out: &mut String, tag: &ServerTag, p: &Packet, action_id: Option<&str>) {
    out.reserve(64 + tag.suffix.len() + p.text_len() * 5 / 4);
    out.push_str("{\"type\":");
    out.push_str(type_digit(packet_type(p)));
    out.push_str(&tag.suffix);
    out.push('{');
    let n = p.len();
    // `next[i]`: the next header named like header i (NONE: the last); `later[i]`: an earlier
    // header has its name, so header i was written with that one's key.
    let (mut next_inline, mut later_inline) = ([NONE; INLINE_HEADERS], [false; INLINE_HEADERS]);
    let (mut next_heap, mut later_heap) = (Vec::new(), Vec::new());
    let (next, later) = if n <= INLINE_HEADERS {
        (&mut next_inline[..n], &mut later_inline[..n])
    } else {
        next_heap.resize(n, NONE);
        later_heap.resize(n, false);
        (&mut next_heap[..], &mut later_heap[..])
    };
    link_repeats(p, next, later);
    let mut wrote_any = false;
    let mut wrote_output = false;
    for (i, ((name, value), &later)) in p.headers().zip(&*later).enumerate() {
        // Only the first occurrence of a name writes the key (with every value).
        if later {
            continue;
        }
        if wrote_any {
            out.push(',');
        }
        wrote_any = true;
        push_json_str(out, name);
        out.push(':');
        let values = Repeats {
            p,
            next: &*next,
            at: i as u32,
        };
        if name == "Output" {
            wrote_output = true;
            push_json_array(out, values.chain(p.raw_lines()));
        } else if next[i] != NONE {
            push_json_array(out, values);
        } else if let (Some(id), true) = (action_id, name.eq_ignore_ascii_case("ActionID")) {
            push_json_str(out, id);
        } else {
            push_json_str(out, value);
        }
    }
    if !wrote_output && p.raw_lines().next().is_some() {
        if wrote_any {
            out.push(',');
        }
        out.push_str("\"Output\":");
        push_json_array(out, p.raw_lines());
    }
    out.push_str("}}");
}

/// The values of header `at` and of every later header with its name, in order.
struct Repeats<'a> {
    p: &'a Packet,
    next: &'a [u32],
    at: u32,
}

impl<'a> Iterator for Repeats<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let i = self.at as usize;
        let (_, value) = self.p.header(i)?;
        self.at = self.next.get(i).copied().unwrap_or(NONE);
        Some(value)
    }
}

/// Links every header to the next one with the same name (exact comparison) through a small
/// open-addressing table keyed by a cheap digest of the name: linear in the headers.
fn link_repeats(p: &Packet, next: &mut [u32], later: &mut [bool]) {
    let n = next.len();
    // Slots hold (header index + 1, digest) of the last header seen with a name; twice the
    // headers, a power of two, so probes stay short.
    let size = (2 * n).next_power_of_two().max(8);
    let mut inline = [(0u32, 0u32); 2 * INLINE_HEADERS];
    let mut heap = Vec::new();
    let slots = if size <= inline.len() {
        &mut inline[..size]
    } else {
        heap.resize(size, (0u32, 0u32));
        &mut heap[..]
    };
    for (i, (name, _)) in p.headers().enumerate().take(n) {
        let digest = name_digest(name);
        let mut slot = (digest.wrapping_mul(0x9e37_79b9) >> 7) as usize & (size - 1);
        loop {
            let (held, held_digest) = slots[slot];
            if held == 0 {
                slots[slot] = (i as u32 + 1, digest);
                break;
            }
            let j = held as usize - 1;
            if held_digest == digest && p.header(j).is_some_and(|(other, _)| other == name) {
                next[j] = i as u32;
                later[i] = true;
                slots[slot].0 = i as u32 + 1;
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
    }
}

/// A cheap digest of a header name: its length and three of its bytes.
fn name_digest(name: &str) -> u32 {
    let b = name.as_bytes();
    let at = |i: usize| b.get(i).copied().map_or(0, u32::from);
    (b.len() as u32) ^ (at(0) << 8) ^ (at(b.len() / 2) << 16) ^ (at(b.len().wrapping_sub(1)) << 24)
}

/// The `data` object of a packet as a JSON value (HTTP results), ActionID restored as given.
pub fn packet_value(p: &Packet, action_id: Option<&str>) -> Value {
    let tag = ServerTag::new(0, "", false);
    serde_json::from_str::<Value>(&encode_packet(&tag, p, action_id))
        .ok()
        .and_then(|mut v| v.get_mut("data").map(Value::take))
        .unwrap_or(Value::Null)
}

/// Type 1: the banner a PBX greeted us with.
pub fn encode_prompt(tag: &ServerTag, banner: &str) -> ByteString {
    encode_fields(MsgType::Prompt, Some(tag), &[("Prompt", banner)])
}

/// Type 7: a server's connection status changed.
pub fn encode_status(tag: &ServerTag, status: &str, reason: &str) -> ByteString {
    encode_status_with(tag, status, reason, &[])
}

/// Type 7 with extra fields (e.g. `StateVersion` once the state was rebuilt).
pub fn encode_status_with(
    tag: &ServerTag,
    status: &str,
    reason: &str,
    extra: &[(&str, &str)],
) -> ByteString {
    let mut fields = vec![("Status", status), ("Reason", reason)];
    fields.extend_from_slice(extra);
    encode_fields(MsgType::Status, Some(tag), &fields)
}

/// A broadcast frame with its place in the server's history as two more top-level fields,
/// `"epoch"` and `"offset"` (SPEC §10): the only place they are written. `frame` is one of the
/// JSON objects rendered above; its bytes are copied once, never serialised again.
pub fn with_position(frame: &str, epoch: &str, offset: u64) -> ByteString {
    with_positions(std::iter::once(frame), epoch, offset)
        .pop()
        .unwrap_or_default()
}

/// [`with_position`] for consecutive frames of one server, at offsets `first`, `first + 1`, …:
/// the stamped frames are slices of one shared buffer, one allocation for the whole run.
pub fn with_positions<'a, I>(frames: I, epoch: &str, first: u64) -> Vec<ByteString>
where
    I: Iterator<Item = &'a str> + Clone,
{
    let mut head = String::from(",\"epoch\":");
    push_json_str(&mut head, epoch);
    head.push_str(",\"offset\":");
    let (count, bytes) = frames
        .clone()
        .fold((0, 0), |(n, b), f| (n + 1, b + f.len()));
    // 20 digits for any u64, and the closing brace.
    let mut out = String::with_capacity(bytes + count * (head.len() + 21));
    let mut ends = Vec::with_capacity(count);
    // Decimal digits without the formatting machinery on the hot path.
    let mut digits = itoa::Buffer::new();
    for (frame, offset) in frames.zip(first..) {
        out.push_str(frame.strip_suffix('}').unwrap_or(frame));
        out.push_str(&head);
        out.push_str(digits.format(offset));
        out.push('}');
        ends.push(out.len());
    }
    let out = ByteString::from(out);
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let frame = out
                .get(start..end)
                .map_or_else(ByteString::new, |s| out.slice_ref(s));
            start = end;
            frame
        })
        .collect()
}

/// Type 8: amihub's own reply to one session (errors, ProxyAction results).
pub fn encode_reply(tag: Option<&ServerTag>, fields: &[(&str, &str)]) -> ByteString {
    encode_fields(MsgType::Reply, tag, fields)
}

/// Type 8 with an arbitrary JSON `data` value (ProxyAction results with lists).
pub fn encode_reply_value(data: &Value) -> ByteString {
    let mut out = String::from("{\"type\":8,\"data\":");
    out.push_str(&data.to_string());
    out.push('}');
    ByteString::from(out)
}

fn encode_fields(ty: MsgType, tag: Option<&ServerTag>, fields: &[(&str, &str)]) -> ByteString {
    let mut out = String::with_capacity(128);
    out.push_str("{\"type\":");
    out.push_str(type_digit(ty));
    match tag {
        Some(tag) => out.push_str(&tag.suffix),
        None => out.push_str(",\"data\":"),
    }
    out.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, k);
        out.push(':');
        push_json_str(&mut out, v);
    }
    out.push_str("}}");
    ByteString::from(out)
}

fn type_digit(t: MsgType) -> &'static str {
    ["0", "1", "2", "3", "4", "5", "6", "7", "8"][t as usize]
}

fn push_json_array<'a>(out: &mut String, values: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, v);
    }
    out.push(']');
}

/// Bytes that need escaping inside a JSON string: controls, `"` and `\`.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any byte of `bytes` needs escaping, eight bytes at a time: a byte below 0x20, `"` or
/// `\` in a word sets its high bit in the test (bytes of 0x80 and above never do).
fn needs_escape(bytes: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero_in = |w: u64| w.wrapping_sub(LO) & !w & HI;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let w = u64::from_le_bytes(w);
        let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
        if below_space | zero_in(w ^ (LO * u64::from(b'"'))) | zero_in(w ^ (LO * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| ESCAPE[b as usize])
}

/// What a client sent, once understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// An AMI action for one server (`AMIServerID`) or all the user may act on.
    Action {
        action: Action,
        server: Option<u32>,
        /// The client's own ActionID, restored on every reply.
        client_id: Option<String>,
    },
    /// `{"ProxyAction": name, …}` handled by amihub itself.
    Proxy {
        name: String,
        body: Map<String, Value>,
    },
}

/// Why a client message was refused (answered with type 8, nothing sent upstream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("message is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("message must be a JSON object")]
    NotObject,
    #[error("missing Action")]
    MissingAction,
    #[error("{key}: nested objects are not allowed")]
    Nested { key: String },
    #[error("{key}: CR or LF is not allowed in keys or values")]
    CrLf { key: String },
    #[error("{key}: invalid header name")]
    BadKey { key: String },
    #[error("{key}: null is not allowed")]
    Null { key: String },
    #[error("AMIServerID must be a positive integer")]
    BadServerId,
}

/// Parses one client text frame.
pub fn parse_client(text: &str) -> Result<ClientMessage, ClientError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ClientError::InvalidJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ClientError::NotObject);
    };
    if let Some(name) = map.get("ProxyAction") {
        let name = scalar_text("ProxyAction", name)?;
        return Ok(ClientMessage::Proxy { name, body: map });
    }
    let name = match map.get("Action") {
        Some(v) => scalar_text("Action", v)?,
        None => return Err(ClientError::MissingAction),
    };
    if name.trim().is_empty() {
        return Err(ClientError::MissingAction);
    }
    let mut action = Action::new(&name);
    let mut server = None;
    let mut client_id = None;
    for (key, value) in &map {
        check_key(key)?;
        if key.eq_ignore_ascii_case("Action") {
            continue;
        }
        if key.eq_ignore_ascii_case("AMIServerID") {
            let id = match value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match id {
                Some(id) if id > 0 && id <= u32::MAX as u64 => server = Some(id as u32),
                _ => return Err(ClientError::BadServerId),
            }
            continue;
        }
        if key.eq_ignore_ascii_case("ActionID") {
            client_id = Some(scalar_text(key, value)?);
            continue;
        }
        match value {
            Value::Array(items) => {
                for item in items {
                    action.push(key, scalar_text(key, item)?);
                }
            }
            other => action.push(key, scalar_text(key, other)?),
        }
    }
    Ok(ClientMessage::Action {
        action,
        server,
        client_id,
    })
}

fn check_key(key: &str) -> Result<(), ClientError> {
    if key.contains(['\r', '\n']) {
        return Err(ClientError::CrLf { key: key.into() });
    }
    if key.is_empty() || key.contains(':') || key.trim() != key {
        return Err(ClientError::BadKey { key: key.into() });
    }
    Ok(())
}

fn scalar_text(key: &str, v: &Value) -> Result<String, ClientError> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => return Err(ClientError::Null { key: key.into() }),
        Value::Array(_) | Value::Object(_) => return Err(ClientError::Nested { key: key.into() }),
    };
    if text.contains(['\r', '\n']) {
        return Err(ClientError::CrLf { key: key.into() });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> ServerTag {
        ServerTag::new(1, "pbx1", false)
    }

    fn json(b: &ByteString) -> Value {
        serde_json::from_str(b).expect("valid json")
    }

    #[test]
    fn event_envelope_matches_the_spec() {
        let p = Packet::from_headers([
            ("Event", "Newchannel"),
            ("Channel", "PJSIP/100-00000001"),
            ("ChanVariable", "A=1"),
            ("ChanVariable", "B=2"),
        ]);
        let v = json(&encode_packet(&tag(), &p, None));
        assert_eq!(
            v,
            serde_json::json!({"type":3,"server_id":1,"server_name":"pbx1","ssl":false,
                "data":{"Event":"Newchannel","Channel":"PJSIP/100-00000001","ChanVariable":["A=1","B=2"]}})
        );
    }

    #[test]
    fn command_output_is_an_array_in_every_shape() {
        let modern = Packet::from_headers([
            ("Response", "Success"),
            ("Message", "Command output follows"),
            ("Output", "only line"),
        ]);
        let v = json(&encode_packet(&tag(), &modern, None));
        assert_eq!(v["type"], 5);
        assert_eq!(v["data"]["Output"], serde_json::json!(["only line"]));
    }

    #[test]
    fn action_id_is_restored_for_the_client() {
        let p = Packet::from_headers([("Response", "Success"), ("ActionID", "amihub-7")]);
        let v = json(&encode_packet(&tag(), &p, Some("c1")));
        assert_eq!(v["type"], 4);
        assert_eq!(v["data"]["ActionID"], "c1");
    }

    #[test]
    fn strings_are_escaped() {
        let p = Packet::from_headers([("Event", "X"), ("Q", "a\"b\\c\u{1}é")]);
        let v = json(&encode_packet(&ServerTag::new(2, "p\"x", true), &p, None));
        assert_eq!(v["data"]["Q"], "a\"b\\c\u{1}é");
        assert_eq!(v["server_name"], "p\"x");
        assert_eq!(v["ssl"], true);
    }

    #[test]
    fn client_action_with_arrays_numbers_and_server() {
        let m = parse_client(
            r#"{"Action":"Originate","AMIServerID":1,"ActionID":"c1","Channel":"Local/100@demo","Timeout":30000,"Async":true,"Variable":["a=1","b=2"]}"#,
        )
        .unwrap();
        let ClientMessage::Action {
            action,
            server,
            client_id,
        } = m
        else {
            panic!()
        };
        assert_eq!(server, Some(1));
        assert_eq!(client_id.as_deref(), Some("c1"));
        let h: Vec<(&str, &str)> = action.headers().collect();
        assert_eq!(
            h,
            vec![
                ("Action", "Originate"),
                ("Channel", "Local/100@demo"),
                ("Timeout", "30000"),
                ("Async", "true"),
                ("Variable", "a=1"),
                ("Variable", "b=2")
            ]
        );
    }

    #[test]
    fn bad_client_messages_are_refused() {
        assert!(matches!(
            parse_client("{"),
            Err(ClientError::InvalidJson(_))
        ));
        assert_eq!(parse_client("[1]"), Err(ClientError::NotObject));
        assert_eq!(
            parse_client(r#"{"Channel":"x"}"#),
            Err(ClientError::MissingAction)
        );
        assert!(matches!(
            parse_client(r#"{"Action":"Ping","X":{"a":1}}"#),
            Err(ClientError::Nested { .. })
        ));
        assert!(matches!(
            parse_client(r#"{"Action":"Ping","X":"a\r\nAction: Originate"}"#),
            Err(ClientError::CrLf { .. })
        ));
        assert!(matches!(
            parse_client(r#"{"Action":"Ping\nAction: Originate"}"#),
            Err(ClientError::CrLf { .. })
        ));
        assert!(matches!(
            parse_client(r#"{"Action":"Ping","Bad:Key":"1"}"#),
            Err(ClientError::BadKey { .. })
        ));
        assert_eq!(
            parse_client(r#"{"Action":"Ping","AMIServerID":"x"}"#),
            Err(ClientError::BadServerId)
        );
    }

    #[test]
    fn proxy_action_is_recognised() {
        let m = parse_client(r#"{"ProxyAction":"ListServers"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Proxy { ref name, .. } if name == "ListServers"));
    }

    #[test]
    fn position_becomes_two_top_level_fields_of_any_broadcast_frame() {
        let p = Packet::from_headers([("Event", "Hangup"), ("Channel", "PJSIP/1-01")]);
        for frame in [
            encode_packet(&tag(), &p, None),
            encode_status(&tag(), "Connected", ""),
            encode_prompt(&tag(), "Asterisk Call Manager/9.0.0"),
        ] {
            let v = json(&with_position(&frame, "e\"1", 42));
            let mut plain = json(&frame);
            assert_eq!(v["epoch"], "e\"1");
            assert_eq!(v["offset"], 42);
            plain["epoch"] = Value::from("e\"1");
            plain["offset"] = Value::from(42);
            assert_eq!(v, plain);
        }
    }

    #[test]
    fn escaping_matches_json_for_every_byte_at_every_word_position() {
        // The eight-bytes-at-a-time test must see a byte needing escape in any lane.
        let specials = [
            '"', '\\', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{8}', ' ', 'é', '\u{7f}',
        ];
        for len in 0..20 {
            for at in 0..len {
                for &c in &specials {
                    let mut s: String = "a".repeat(len);
                    s.replace_range(at..at + 1, &c.to_string());
                    let mut out = String::new();
                    push_json_str(&mut out, &s);
                    let back: String = serde_json::from_str(&out).expect("valid JSON string");
                    assert_eq!(back, s, "{s:?} -> {out}");
                    let escaped = !matches!(c, ' ' | 'é' | '\u{7f}');
                    assert_eq!(out.len() > s.len() + 2, escaped, "{s:?} -> {out}");
                }
            }
        }
    }

    #[test]
    fn repeated_headers_group_in_large_packets_too() {
        // Past the inline tables (64 headers): 70 Output lines and interleaved repeats.
        let mut headers = vec![("Response".to_string(), "Success".to_string())];
        for i in 0..70 {
            headers.push(("Output".into(), format!("line {i}")));
            if i % 10 == 0 {
                headers.push(("X".into(), format!("x{i}")));
            }
        }
        headers.push(("ActionID".into(), "amihub-1".into()));
        let p = Packet::from_headers(headers).with_raw_lines(["raw tail"]);
        let v = json(&encode_packet(&tag(), &p, Some("mine")));
        let mut lines: Vec<Value> = (0..70).map(|i| Value::from(format!("line {i}"))).collect();
        lines.push(Value::from("raw tail"));
        assert_eq!(v["data"]["Output"], Value::Array(lines));
        let xs: Vec<Value> = (0..7)
            .map(|i| Value::from(format!("x{}", i * 10)))
            .collect();
        assert_eq!(v["data"]["X"], Value::Array(xs));
        assert_eq!(v["data"]["ActionID"], "mine");
        let keys: Vec<&String> = v["data"].as_object().expect("object").keys().collect();
        assert_eq!(keys, ["Response", "Output", "X", "ActionID"]);
    }

    #[test]
    fn names_that_differ_only_inside_are_not_grouped() {
        // Same length, first, middle and last bytes: one digest, two names.
        let p = Packet::from_headers([("Event", "E"), ("AxxB", "1"), ("AyxB", "2"), ("AxxB", "3")]);
        let v = json(&encode_packet(&tag(), &p, None));
        assert_eq!(v["data"]["AxxB"], serde_json::json!(["1", "3"]));
        assert_eq!(v["data"]["AyxB"], "2");
    }

    #[test]
    fn a_run_of_positions_is_each_frame_stamped_alone() {
        let p = Packet::from_headers([("Event", "Hangup"), ("Channel", "PJSIP/1-01")]);
        let frames = [
            encode_packet(&tag(), &p, None),
            encode_status(&tag(), "Connected", ""),
            encode_prompt(&tag(), "Asterisk Call Manager/9.0.0"),
        ];
        let stamped = with_positions(frames.iter().map(|f| &**f), "e1", 999_999);
        assert_eq!(stamped.len(), 3);
        for ((frame, one), offset) in frames.iter().zip(&stamped).zip(999_999..) {
            assert_eq!(*one, with_position(frame, "e1", offset));
        }
        assert_eq!(json(&stamped[2])["offset"], 1_000_001);
    }
}
