//! The JSON envelope (SPEC §4): the only module that knows how packets look to browsers and how
//! client JSON becomes an AMI action. Pure functions, no actors.

use std::fmt::Write;

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
    let mut out = String::with_capacity(64 + tag.suffix.len() + p.heap_bytes() * 5 / 4);
    out.push_str("{\"type\":");
    out.push_str(type_digit(packet_type(p)));
    out.push_str(&tag.suffix);
    out.push('{');
    let headers: Vec<(&str, &str)> = p.headers().collect();
    let raw: Vec<&str> = p.raw_lines().collect();
    // Group repeated names: `first[i]` is the index of the first header named like header i.
    // Names are compared by a cheap hash first, so the quadratic scan stays cheap.
    let keys: Vec<u64> = headers.iter().map(|(n, _)| name_key(n)).collect();
    let mut first: Vec<usize> = (0..headers.len()).collect();
    let mut count = vec![0u32; headers.len()];
    for i in 0..headers.len() {
        if let Some(j) = (0..i).find(|&j| keys[j] == keys[i] && headers[j].0 == headers[i].0) {
            first[i] = first[j];
        }
        count[first[i]] += 1;
    }
    let mut wrote_any = false;
    let mut wrote_output = false;
    for (i, (name, value)) in headers.iter().enumerate() {
        // Only the first occurrence of a name writes the key (with every value).
        if first[i] != i {
            continue;
        }
        if wrote_any {
            out.push(',');
        }
        wrote_any = true;
        push_json_str(&mut out, name);
        out.push(':');
        let values = headers[i..]
            .iter()
            .zip(&first[i..])
            .filter(|(_, f)| **f == i)
            .map(|((_, v), _)| *v);
        if *name == "Output" {
            wrote_output = true;
            push_json_array(&mut out, values.chain(raw.iter().copied()));
        } else if count[i] > 1 {
            push_json_array(&mut out, values);
        } else if let (Some(id), true) = (action_id, name.eq_ignore_ascii_case("ActionID")) {
            push_json_str(&mut out, id);
        } else {
            push_json_str(&mut out, value);
        }
    }
    let first = !wrote_any;
    if !wrote_output && !raw.is_empty() {
        if !first {
            out.push(',');
        }
        out.push_str("\"Output\":");
        push_json_array(&mut out, raw.iter().copied());
    }
    out.push_str("}}");
    ByteString::from(out)
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
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let mut out = String::with_capacity(frame.len() + epoch.len() + 34);
    out.push_str(body);
    out.push_str(",\"epoch\":");
    push_json_str(&mut out, epoch);
    let _ = write!(out, ",\"offset\":{offset}}}");
    ByteString::from(out)
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

/// FNV-1a of a header name (grouping repeated headers).
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bytes that need escaping inside a JSON string: controls, `"` and `\`.
const ESCAPE: [bool; 256] = {
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
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
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
}
