//! AMI text as the listener writes it to clients: a PBX packet with one `Server:` header added
//! and its ActionID restored (or removed), amihub's own replies in Asterisk's shape (`Response:`
//! first, then `ActionID:`), and the `ServerStatus` event. Pure: packets in, bytes out.

use bytestring::ByteString;

use crate::ami::{parse_packet, Limits, Packet, PacketKind};

/// What to do with a packet's `ActionID` header on its way to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRewrite<'a> {
    /// Leave it as the PBX sent it (broadcast events).
    Keep,
    /// Replace its value with the requester's own id.
    Restore(&'a str),
    /// Drop the header: the requester sent no ActionID, so Asterisk would have sent none.
    Remove,
}

/// Marker that ends the body of a pre-14 `Response: Follows` command output.
const END_COMMAND: &str = "--END COMMAND--";

/// Renders a PBX packet: every header in order (only the first `ActionID` rewritten), then
/// `Server: <server>`, then raw lines (command output of `Response: Follows`, closed by its
/// `--END COMMAND--` marker as the PBX sent it), then the blank line.
pub fn render_packet(p: &Packet, server: Option<&str>, id: IdRewrite<'_>) -> ByteString {
    let mut out = String::with_capacity(p.heap_bytes() + 64);
    let mut id_done = false;
    for (name, value) in p.headers() {
        if !id_done && name.eq_ignore_ascii_case("ActionID") {
            id_done = true;
            match id {
                IdRewrite::Keep => push_header(&mut out, name, value),
                IdRewrite::Restore(own) => push_header(&mut out, name, own),
                IdRewrite::Remove => {}
            }
            continue;
        }
        push_header(&mut out, name, value);
    }
    let text = p.kind() == PacketKind::Text;
    if let (Some(server), false) = (server, text) {
        push_header(&mut out, "Server", server);
    }
    let follows = p
        .get("Response")
        .is_some_and(|r| r.eq_ignore_ascii_case("Follows"));
    for line in p.raw_lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    if follows {
        out.push_str(END_COMMAND);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    ByteString::from(out)
}

/// Parses a frame rendered here (or by the registry) back into a packet, without the codec's
/// bounds: it was bounded when it came in.
pub fn parse_rendered(frame: &str) -> Packet {
    let unbounded = Limits {
        max_line_bytes: usize::MAX,
        max_packet_bytes: usize::MAX,
        max_headers: usize::MAX,
    };
    parse_packet(frame.as_bytes(), &unbounded).unwrap_or_default()
}

/// amihub's own reply in Asterisk's order: `fields[0]` (the `Response:` line), then `ActionID:`
/// when the client gave one, then the other fields, then `Server:` when it concerns one PBX.
pub fn render_reply(fields: &[(&str, &str)], id: Option<&str>, server: Option<&str>) -> ByteString {
    let mut out = String::with_capacity(128);
    let mut rest = fields.iter();
    if let Some((name, value)) = rest.next() {
        push_header(&mut out, name, value);
    }
    if let Some(id) = id {
        push_header(&mut out, "ActionID", id);
    }
    for (name, value) in rest {
        push_header(&mut out, name, value);
    }
    if let Some(server) = server {
        push_header(&mut out, "Server", server);
    }
    out.push_str("\r\n");
    ByteString::from(out)
}

/// The event AMI clients get when a PBX's connection changes state (amihub's own event; the
/// `Server:` header is added when it is rendered).
pub fn status_event(status: &str, reason: &str) -> Packet {
    Packet::from_headers([
        ("Event", "ServerStatus"),
        ("Privilege", "system,all"),
        ("Status", status),
        ("Reason", reason),
    ])
}

fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::{parse_packet, Limits};

    fn parse(text: &str) -> Packet {
        parse_packet(text.as_bytes(), &Limits::default()).unwrap()
    }

    #[test]
    fn event_gains_server_and_keeps_everything_in_order() {
        let p = parse("Event: Newchannel\r\nChannel: PJSIP/1\r\nChanVariable: a=1\r\nChanVariable: b=2\r\nEmpty: \r\n");
        assert_eq!(
            &*render_packet(&p, Some("pbx1"), IdRewrite::Keep),
            "Event: Newchannel\r\nChannel: PJSIP/1\r\nChanVariable: a=1\r\nChanVariable: b=2\r\nEmpty: \r\nServer: pbx1\r\n\r\n"
        );
    }

    #[test]
    fn action_id_is_restored_or_removed() {
        let p = parse("Response: Success\r\nActionID: amihub.7\r\nPing: Pong\r\n");
        assert_eq!(
            &*render_packet(&p, Some("a"), IdRewrite::Restore("mine")),
            "Response: Success\r\nActionID: mine\r\nPing: Pong\r\nServer: a\r\n\r\n"
        );
        assert_eq!(
            &*render_packet(&p, None, IdRewrite::Remove),
            "Response: Success\r\nPing: Pong\r\n\r\n"
        );
    }

    #[test]
    fn follows_output_is_closed_by_its_marker() {
        let p = parse(
            "Response: Follows\r\nPrivilege: Command\r\nline one\r\nline two\r\n--END COMMAND--",
        );
        assert_eq!(
            &*render_packet(&p, Some("a"), IdRewrite::Keep),
            "Response: Follows\r\nPrivilege: Command\r\nServer: a\r\nline one\r\nline two\r\n--END COMMAND--\r\n\r\n"
        );
    }

    #[test]
    fn replies_put_response_then_action_id_first() {
        assert_eq!(
            &*render_reply(
                &[("Response", "Error"), ("Message", "Permission denied")],
                Some("ping-8"),
                None
            ),
            "Response: Error\r\nActionID: ping-8\r\nMessage: Permission denied\r\n\r\n"
        );
        assert_eq!(
            &*render_reply(&[("Response", "Success")], None, Some("b")),
            "Response: Success\r\nServer: b\r\n\r\n"
        );
    }
}
