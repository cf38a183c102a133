//! One named test per wire shape and tolerance case the codec must take (SPEC §3).

use super::*;
use crate::ami::{find_frame_end, parse_packet, DiscardReason, PacketKind};

fn small_limits() -> Limits {
    Limits {
        max_line_bytes: 64,
        max_packet_bytes: 256,
        max_headers: 8,
    }
}

/// Decodes `text` whole (no banner), checks every split gives the same, returns the frames.
fn frames_of(text: &str, limits: Limits) -> Vec<Frame> {
    let whole = decode_all(text.as_bytes(), limits, false);
    assert_chunking_independent(text.as_bytes(), limits, false, &whole);
    whole
}

fn events(frames: &[Frame]) -> Vec<&str> {
    packets(frames)
        .into_iter()
        .filter_map(|p| p.event())
        .collect()
}

#[test]
fn crlf_lf_terminator() {
    let frames = frames_of(
        "Event: CoreShowChannelMap\r\nChannel: A\r\n\nEvent: B\r\n\r\n",
        Limits::default(),
    );
    assert_eq!(events(&frames), ["CoreShowChannelMap", "B"]);
    assert_eq!(packets(&frames)[0].get("Channel"), Some("A"));
}

#[test]
fn bare_lf_terminator() {
    let frames = frames_of("Event: A\nX: 1\n\nEvent: B\nY: 2\n\n", Limits::default());
    assert_eq!(events(&frames), ["A", "B"]);
    assert_eq!(packets(&frames)[1].get("Y"), Some("2"));
}

#[test]
fn lf_crlf_terminator() {
    let frames = frames_of("Event: A\n\r\nEvent: B\r\n\r\n", Limits::default());
    assert_eq!(events(&frames), ["A", "B"]);
}

#[test]
fn extra_blank_lines_between_packets() {
    let text = "\r\n\r\nEvent: A\r\n\r\n\r\n\n\r\n\nEvent: B\r\nX: 1\r\n\r\n\r\n";
    let frames = frames_of(text, Limits::default());
    assert_eq!(frames.len(), 2);
    assert_eq!(events(&frames), ["A", "B"]);
}

#[test]
fn header_name_with_parens_and_slash() {
    let p = one_packet("Event: VarSet\r\nChanVariable(PJSIP/100-0001): X=1\r\n\r\n");
    assert_eq!(p.get("ChanVariable(PJSIP/100-0001)"), Some("X=1"));
}

#[test]
fn value_keeps_colons_after_the_first() {
    let p = one_packet("Event: X\r\nAddress: IPV4/TCP/127.0.0.1:5038\r\nTime:12:00\r\n\r\n");
    assert_eq!(p.get("Address"), Some("IPV4/TCP/127.0.0.1:5038"));
    assert_eq!(p.get("Time"), Some("12:00"));
}

#[test]
fn chan_variable_without_equals() {
    let p = one_packet("Event: Newchannel\r\nChanVariable: name\r\n\r\n");
    assert_eq!(p.get("ChanVariable"), Some("name"));
}

#[test]
fn empty_value() {
    let p = one_packet("Event: Newchannel\r\nAccountCode: \r\nLanguage:\r\nTab:\t x \r\n\r\n");
    assert_eq!(p.get("AccountCode"), Some(""));
    assert_eq!(p.get("Language"), Some(""));
    assert_eq!(
        p.get("Tab"),
        Some("\t x "),
        "only the one separator space goes"
    );
    let p = one_packet("Event: X\r\nOutput:   col1   col2\r\n\r\n");
    assert_eq!(p.get("Output"), Some("  col1   col2"), "alignment survives");
}

#[test]
fn repeated_headers_preserved_in_order() {
    let p = one_packet("Event: X\r\nVariable: a=1\r\nOther: o\r\nVariable: b=2\r\n\r\n");
    let vars: Vec<&str> = p
        .headers()
        .filter(|(n, _)| *n == "Variable")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(vars, ["a=1", "b=2"]);
    assert_eq!(p.get("variable"), Some("a=1"));
    assert_eq!(p.len(), 4);
}

#[test]
fn line_without_colon_in_a_normal_packet_is_a_raw_line() {
    let p = one_packet("Event: X\r\nstray text\r\nY: 1\r\n\r\n");
    assert_eq!(header_list(&p).len(), 2);
    assert_eq!(p.raw_lines().collect::<Vec<_>>(), ["stray text"]);
    assert_eq!(p.kind(), PacketKind::Event);
}

#[test]
fn response_without_action_id() {
    let p = one_packet("Response: Error\r\nMessage: Missing action in request\r\n\r\n");
    assert_eq!(p.kind(), PacketKind::Response);
    assert_eq!(p.action_id(), None);
    assert_eq!(p.get("Message"), Some("Missing action in request"));
}

#[test]
fn banners_from_1_0_to_11_0_0() {
    for version in ["1.0", "1.1", "1.3", "2.8.0", "4.0.3", "11.0.0"] {
        let banner = format!("Asterisk Call Manager/{version}");
        for ending in ["\r\n", "\n"] {
            let text = format!("{banner}{ending}Response: Success\r\nPing: Pong\r\n\r\n");
            let frames = decode_all(text.as_bytes(), Limits::default(), true);
            assert_chunking_independent(text.as_bytes(), Limits::default(), true, &frames);
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0], Frame::Banner(banner.clone()));
            assert_eq!(packets(&frames)[0].get("Ping"), Some("Pong"));
        }
    }
}

#[test]
fn banner_over_line_limit_is_discarded_then_packets_follow() {
    let limits = small_limits();
    let text = format!("{}\r\nEvent: A\r\n\r\n", "B".repeat(100));
    let frames = frames_of_banner(&text, limits);
    assert_eq!(frames[0], Frame::Discarded(DiscardReason::LineTooLong));
    assert_eq!(events(&frames), ["A"]);
}

fn frames_of_banner(text: &str, limits: Limits) -> Vec<Frame> {
    let whole = decode_all(text.as_bytes(), limits, true);
    assert_chunking_independent(text.as_bytes(), limits, true, &whole);
    whole
}

const FOLLOWS: &str = "Response: Follows\r\nPrivilege: Command\r\nActionID: cmd-1\r\n\
    Channel              Location             State   Application(Data)\n\
    \n\
    Key: looks like a header\n\
    0 active channels\n\
    --END COMMAND--\r\n\r\n\
    Event: After\r\n\r\n";

#[test]
fn follows_with_blank_line_inside() {
    let frames = frames_of(FOLLOWS, Limits::default());
    assert_eq!(frames.len(), 2);
    let p = packets(&frames)[0];
    assert_eq!(p.kind(), PacketKind::Response);
    assert_eq!(p.get("Response"), Some("Follows"));
    assert_eq!(p.action_id(), Some("cmd-1"));
    assert_eq!(p.len(), 3, "body lines that look like headers stay raw");
    let expected = [
        "Channel              Location             State   Application(Data)",
        "",
        "Key: looks like a header",
        "0 active channels",
    ];
    assert_eq!(p.raw_lines().collect::<Vec<_>>(), expected);
    assert_eq!(p.output_lines(), expected);
    assert_eq!(events(&frames), ["After"]);
}

#[test]
fn follows_marker_glued_to_last_line() {
    let text = "Response: Follows\r\nPrivilege: Command\r\n\
        Asterisk 1.4.21 built by root\nlast line--END COMMAND--\r\n\r\n\
        Response: Success\r\n\r\n";
    let frames = frames_of(text, Limits::default());
    let ps = packets(&frames);
    assert_eq!(ps.len(), 2);
    assert_eq!(
        ps[0].raw_lines().collect::<Vec<_>>(),
        ["Asterisk 1.4.21 built by root", "last line"]
    );
    assert_eq!(ps[1].get("Response"), Some("Success"));
}

#[test]
fn follows_without_output() {
    let p = one_packet("Response: Follows\r\nActionID: 7\r\n--END COMMAND--\r\n\r\n");
    assert_eq!(p.raw_lines().count(), 0);
    assert!(p.output_lines().is_empty());
    assert_eq!(p.action_id(), Some("7"));
}

#[test]
fn follows_line_over_limit_is_discarded_and_resyncs_after_its_marker() {
    let limits = small_limits();
    // The over-long output line carries the glued marker; the blank line before it must not end
    // the packet, and the packet after it must come out intact.
    let text = format!(
        "Response: Follows\r\n\r\n{}--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n",
        "x".repeat(200)
    );
    let frames = frames_of(&text, limits);
    assert_eq!(frames[0], Frame::Discarded(DiscardReason::LineTooLong));
    assert_eq!(events(&frames), ["Next"]);
    assert_eq!(frames.len(), 2);
}

#[test]
fn follows_blank_lines_count_towards_the_packet_bound() {
    // Regression: blank lines inside unterminated command output were buffered without bound.
    let limits = small_limits();
    let text = format!(
        "Response: Follows\r\n{}Event: Next\r\n\r\n",
        "\n".repeat(1000)
    );
    let mut stream = text.into_bytes();
    // decode_bytewise checks the buffer bound after every byte; the stream ends mid-discard.
    assert_eq!(decode_bytewise(&stream, limits, false), []);
    // The discard ends at the first blank line after a marker.
    stream.extend_from_slice(b"--END COMMAND--\r\n\r\nEvent: After\r\n\r\n");
    let text = String::from_utf8(stream).unwrap();
    let frames = frames_of(&text, limits);
    assert_eq!(frames[0], Frame::Discarded(DiscardReason::PacketTooLarge));
    assert_eq!(events(&frames), ["After"]);
}

#[test]
fn output_headers_asterisk_14_shape() {
    let p = one_packet(
        "Response: Success\r\nActionID: c\r\nMessage: Command output follows\r\n\
         Output: Name/username             Host\r\nOutput: \r\nOutput: 2 sip peers\r\n\r\n",
    );
    assert_eq!(
        p.output_lines(),
        ["Name/username             Host", "", "2 sip peers"]
    );
    assert_eq!(p.raw_lines().count(), 0);
}

#[test]
fn error_output_shape() {
    let p = one_packet(
        "Response: Error\r\nActionID: c\r\nMessage: Command output follows\r\n\
         Output: No such command 'x' (type 'core show help x' for other possible commands)\r\n\r\n",
    );
    assert_eq!(p.get("Response"), Some("Error"));
    assert_eq!(p.output_lines().len(), 1);
    assert!(p.output_lines()[0].starts_with("No such command 'x'"));
}

#[test]
fn legacy_queues_text() {
    let text = "support      has 0 calls (max unlimited) in 'ringall' strategy (0s holdtime, 0s \
        talktime), W:0, C:0, A:0, SL:0.0%, SL2:0.0% within 0s\r\n   Members: \r\n      \
        Local/200@demo (ringinuse disabled) (Not in use) has taken no calls yet\r\n   \
        No Callers\r\n\r\n";
    let p = one_packet(text);
    assert_eq!(p.kind(), PacketKind::Text);
    assert!(p.is_empty());
    let lines: Vec<&str> = p.raw_lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("support      has 0 calls"));
    assert_eq!(lines[1], "   Members: ");
    assert_eq!(lines[3], "   No Callers");
}

#[test]
fn line_of_70_kb_is_discarded_then_next_packet_is_fine() {
    let text = format!(
        "Event: Before\r\n\r\nEvent: Big\r\nValue: {}\r\nAfter: 1\r\n\r\nEvent: Next\r\nX: 1\r\n\r\n",
        "v".repeat(70 * 1024)
    );
    let limits = Limits::default();
    let whole = decode_all(text.as_bytes(), limits, false);
    assert_eq!(whole.len(), 3);
    assert_eq!(whole[1], Frame::Discarded(DiscardReason::LineTooLong));
    assert_eq!(events(&whole), ["Before", "Next"]);
    assert_eq!(decode_bytewise(text.as_bytes(), limits, false), whole);
    for chunk in [7, 4096, 65_536] {
        let got = decode_chunks(text.as_bytes().chunks(chunk), limits, false);
        assert_eq!(got, whole, "chunk {chunk}");
    }
}

#[test]
fn more_than_max_headers_is_discarded() {
    let limits = small_limits();
    let mut text = String::from("Event: Many\r\n");
    for i in 0..8 {
        text.push_str(&format!("H{i}: {i}\r\n"));
    }
    text.push_str(
        "\r\nEvent: Eight\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n\r\n",
    );
    let frames = frames_of(&text, limits);
    assert_eq!(frames[0], Frame::Discarded(DiscardReason::TooManyHeaders));
    assert_eq!(events(&frames), ["Eight"], "exactly max_headers is fine");
}

#[test]
fn packet_over_max_packet_is_discarded_with_small_limits() {
    let limits = small_limits();
    let mut text = String::from("Event: Large\r\n");
    for i in 0..10 {
        text.push_str(&format!("Header{i}: {}\r\n", "y".repeat(30)));
    }
    text.push_str("\r\nEvent: Small\r\n\r\n");
    let frames = frames_of(&text, limits);
    assert_eq!(frames[0], Frame::Discarded(DiscardReason::PacketTooLarge));
    assert_eq!(events(&frames), ["Small"]);
}

#[test]
fn packet_of_exactly_max_packet_is_kept() {
    let limits = Limits {
        max_line_bytes: 64,
        max_packet_bytes: 20,
        max_headers: 8,
    };
    // "Event: A\r\nB: 123456" is 19 bytes, one more byte makes 20, two make 21.
    let fits = frames_of("Event: A\r\nB: 1234567\r\n\r\n", limits);
    assert_eq!(packets(&fits)[0].get("B"), Some("1234567"));
    let over = frames_of("Event: A\r\nB: 12345678\r\n\r\n", limits);
    assert_eq!(over, [Frame::Discarded(DiscardReason::PacketTooLarge)]);
}

#[test]
fn decoder_memory_stays_bounded_on_10_mb_without_terminator() {
    let limits = Limits::default();
    let chunk = 8192;
    let line = format!("Header: {}\r\n", "z".repeat(100));
    for body in [
        line.repeat(10 * 1024 * 1024 / line.len()),
        "q".repeat(10 * 1024 * 1024),
    ] {
        let mut decoder = AmiDecoder::new(limits, false);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let stream = format!("Event: Endless\r\n{body}\r\n\r\nEvent: Next\r\n\r\n");
        for piece in stream.as_bytes().chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
            assert!(
                buf.len() <= limits.max_packet_bytes + chunk,
                "held {}",
                buf.len()
            );
            assert!(buf.len() <= buffer_bound(&limits), "held {}", buf.len());
        }
        assert_eq!(frames.len(), 2);
        assert!(matches!(frames[0], Frame::Discarded(_)));
        assert_eq!(events(&frames), ["Next"]);
    }
}

/// Regression: a connection reset mid-packet delivered the torn fragment as a whole event.
#[test]
fn decode_eof_discards_a_final_unterminated_packet() {
    for text in [
        "Event: A\r\n\r\nEvent: Last\r\nX: 1",
        "Event: A\r\n\r\nEvent: Last\r\nX: 1\r\n\r",
    ] {
        let frames = frames_of(text, Limits::default());
        assert_eq!(events(&frames), ["A"]);
        assert_eq!(frames[1], Frame::Discarded(DiscardReason::Truncated));
    }
    assert_eq!(frames_of("Event: A\r\n\r\n\r", Limits::default()).len(), 1);
    let cut = frames_of("Event: A\r\nX: 1\r\n", small_limits());
    assert_eq!(cut, [Frame::Discarded(DiscardReason::Truncated)]);
}

#[test]
fn invalid_utf8_is_replaced_not_dropped() {
    let frames = decode_all(
        b"Event: A\r\nName: caf\xe9\r\n\r\n",
        Limits::default(),
        false,
    );
    assert_eq!(packets(&frames)[0].get("Name"), Some("caf\u{fffd}"));
}

#[test]
fn find_frame_end_accepts_every_terminator() {
    assert_eq!(
        find_frame_end(b"Response: Success\r\n\r\nX"),
        Some((17, 21))
    );
    assert_eq!(find_frame_end(b"A: b\r\n\nX"), Some((4, 7)));
    assert_eq!(find_frame_end(b"A: b\n\n"), Some((4, 6)));
    assert_eq!(find_frame_end(b"A: b\n\r\n"), Some((4, 7)));
    assert_eq!(find_frame_end(b"A: b\r\n\r"), None);
    assert_eq!(
        find_frame_end(b"\r\n\r\n"),
        None,
        "only blank lines: no packet yet"
    );
    let (len, used) = find_frame_end(FOLLOWS.as_bytes()).unwrap();
    assert!(FOLLOWS[..len].ends_with("--END COMMAND--"));
    assert_eq!(&FOLLOWS[used..], "Event: After\r\n\r\n");
}

#[test]
fn parse_packet_ignores_surrounding_blank_lines() {
    let p = parse_packet(b"\r\n\nEvent: A\r\nX: 1\r\n\r\n", &Limits::default()).unwrap();
    assert_eq!(
        header_list(&p),
        [("Event".into(), "A".into()), ("X".into(), "1".into())]
    );
    assert_eq!(p.raw_lines().count(), 0);
    let limits = small_limits();
    let long = format!("Event: A\r\nX: {}", "l".repeat(64));
    assert_eq!(
        parse_packet(long.as_bytes(), &limits),
        Err(DiscardReason::LineTooLong)
    );
}

#[test]
fn packet_from_headers_equals_the_parsed_packet() {
    let built = Packet::from_headers([("Event", "A"), ("X", "")]);
    assert_eq!(built, one_packet("Event: A\r\nX:\r\n\r\n"));
    assert_ne!(built, one_packet("Event: A\r\nX: y\r\n\r\n"));
    assert_eq!(built.kind(), PacketKind::Event);
    assert!(built.heap_bytes() >= "Event: A\r\nX: \r\n".len());
    assert_eq!(
        Packet::from_headers(Vec::<(&str, &str)>::new()).kind(),
        PacketKind::Unknown
    );
}
