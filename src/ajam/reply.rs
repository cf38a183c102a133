//! AMI text an HTTP manager session answers with: a PBX reply as the registry rendered it for
//! this session, given back the requester's ActionID (or none) and without the `Server:` header
//! the registry adds (the requester named the server); and amihub's own `WaitEvent` answer.
//! Pure: text in, text out.

use crate::ami::{Packet, PacketKind};
use crate::amisrv::render::render_reply;

/// Asterisk's `WaitEvent` response message.
const WAIT_DONE: &str = "Waiting for Event completed.";

/// A reply frame (`frame` as rendered, `packet` parsed from it) for one request: its first
/// `ActionID` (the session's internal tag) becomes `client_id` or goes, and the `Server:` header
/// the registry appended after the PBX's headers goes unless `keep_server` (events keep it).
pub fn own_reply(
    frame: &str,
    packet: &Packet,
    client_id: Option<&str>,
    keep_server: bool,
) -> String {
    let headers = packet.len();
    let appended_server = !keep_server
        && packet.kind() != PacketKind::Text
        && packet
            .headers()
            .last()
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case("Server"));
    let mut out = String::with_capacity(frame.len());
    let mut id_done = false;
    for (i, line) in frame.split_inclusive("\r\n").enumerate() {
        if i < headers {
            if appended_server && i + 1 == headers {
                continue;
            }
            let is_id = line
                .split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case("ActionID"));
            if is_id && !id_done {
                id_done = true;
                if let Some(id) = client_id {
                    out.push_str("ActionID: ");
                    out.push_str(id);
                    out.push_str("\r\n");
                }
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// The `WaitEvent` answer: Asterisk's response, a note of dropped events if any, the events in
/// order, then `WaitEventComplete` (both carrying the request's ActionID, as Asterisk's do).
pub fn wait_event<S: AsRef<str>>(id: Option<&str>, dropped: u64, events: &[S]) -> String {
    let mut out = String::from(&*render_reply(
        &[("Response", "Success"), ("Message", WAIT_DONE)],
        id,
        None,
    ));
    if dropped > 0 {
        let count = dropped.to_string();
        let note = format!(
            "the session's event queue was full: the oldest {dropped} event(s) were dropped"
        );
        out.push_str(&render_reply(
            &[
                ("Event", "EventsDropped"),
                ("Privilege", "system,all"),
                ("Dropped", &count),
                ("Message", &note),
            ],
            None,
            None,
        ));
    }
    for e in events {
        out.push_str(e.as_ref());
    }
    out.push_str(&render_reply(&[("Event", "WaitEventComplete")], id, None));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::{parse_packet, Limits};

    fn restore(frame: &str, id: Option<&str>) -> String {
        let p = parse_packet(frame.as_bytes(), &Limits::default()).expect("packet");
        own_reply(frame, &p, id, false)
    }

    #[test]
    fn the_tag_becomes_the_client_id_and_the_server_header_goes() {
        let frame = "Event: QueueParams\r\nQueue: support\r\nActionID: 7\r\nServer: pbx1\r\n\r\n";
        assert_eq!(
            restore(frame, Some("q1")),
            "Event: QueueParams\r\nQueue: support\r\nActionID: q1\r\n\r\n"
        );
        assert_eq!(
            restore(frame, None),
            "Event: QueueParams\r\nQueue: support\r\n\r\n"
        );
    }

    #[test]
    fn follows_output_keeps_its_lines_and_marker() {
        let frame = "Response: Follows\r\nActionID: 3\r\nServer: pbx1\r\nline one\r\n--END COMMAND--\r\n\r\n";
        assert_eq!(
            restore(frame, None),
            "Response: Follows\r\nline one\r\n--END COMMAND--\r\n\r\n"
        );
    }

    #[test]
    fn wait_event_is_asterisks_shape() {
        assert_eq!(
            wait_event::<&str>(None, 0, &[]),
            "Response: Success\r\nMessage: Waiting for Event completed.\r\n\r\nEvent: WaitEventComplete\r\n\r\n"
        );
        let body = wait_event(Some("w"), 2, &["Event: A\r\n\r\n"]);
        assert!(body.starts_with("Response: Success\r\nActionID: w\r\nMessage: Waiting"));
        assert!(body.contains("Event: EventsDropped\r\nPrivilege: system,all\r\nDropped: 2\r\n"));
        assert!(body.ends_with("Event: A\r\n\r\nEvent: WaitEventComplete\r\nActionID: w\r\n\r\n"));
    }
}
