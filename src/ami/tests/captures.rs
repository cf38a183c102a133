//! Every capture from a real Asterisk decoded whole, split at every offset and byte by byte.

use super::*;
use crate::ami::{find_frame_end, PacketKind};

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/captures");

/// Captures larger than this are checked split-everywhere per segment of whole packets (the
/// all-offsets check is quadratic); the segments must then decode to the same frames as the file.
const FULL_SPLIT_MAX: usize = 16 * 1024;
/// Target size of one segment of a large capture.
const SEGMENT_BYTES: usize = 512;

/// (file name, bytes) of every capture, sorted by name.
fn captures() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(CAPTURES)
        .expect("captures directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("capture file"))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 40,
        "expected the 23 capture pairs, found {}",
        files.len()
    );
    files
}

fn capture(prefix: &str) -> Vec<Frame> {
    let (name, bytes) = captures()
        .into_iter()
        .find(|(n, _)| n.starts_with(prefix) && !n.ends_with(".sent.txt"))
        .expect("capture exists");
    assert!(!name.is_empty());
    decode_all(&bytes, Limits::default(), true)
}

/// Occurrences of "\r\n\r\n", which in the captures is exactly one per packet.
fn terminators(bytes: &[u8]) -> usize {
    bytes.windows(4).filter(|w| w == b"\r\n\r\n").count()
}

/// Cuts `bytes` after terminators into segments of about `SEGMENT_BYTES`.
fn segments(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 4 <= bytes.len() {
        if &bytes[i..i + 4] == b"\r\n\r\n" && i + 4 - start >= SEGMENT_BYTES {
            out.push(&bytes[start..i + 4]);
            start = i + 4;
        }
        i += 1;
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

#[test]
fn every_capture_decodes_the_same_however_it_is_split() {
    let limits = Limits::default();
    for (name, bytes) in captures() {
        let banner = !name.ends_with(".sent.txt");
        let whole = decode_all(&bytes, limits, banner);
        let packet_count = packets(&whole).len();
        assert_eq!(
            packet_count,
            terminators(&bytes),
            "{name}: one packet per terminator"
        );
        assert_eq!(
            whole.len(),
            packet_count + usize::from(banner),
            "{name}: no discards"
        );
        if banner {
            assert_eq!(
                whole[0],
                Frame::Banner("Asterisk Call Manager/11.0.0".into()),
                "{name}"
            );
        }
        if bytes.len() <= FULL_SPLIT_MAX {
            assert_chunking_independent(&bytes, limits, banner, &whole);
            continue;
        }
        assert_eq!(
            decode_bytewise(&bytes, limits, banner),
            whole,
            "{name}: bytewise"
        );
        let mut joined = Vec::new();
        for (i, segment) in segments(&bytes).into_iter().enumerate() {
            let seg_banner = banner && i == 0;
            let expected = decode_all(segment, limits, seg_banner);
            assert_chunking_independent(segment, limits, seg_banner, &expected);
            joined.extend(expected);
        }
        assert_eq!(joined, whole, "{name}: segments decode like the whole file");
    }
}

#[test]
fn find_frame_end_walks_every_capture() {
    for (name, bytes) in captures() {
        let mut rest = &bytes[..];
        if !name.ends_with(".sent.txt") {
            let nl = rest.iter().position(|&b| b == b'\n').unwrap();
            rest = &rest[nl + 1..];
        }
        let mut count = 0;
        while let Some((frame_len, consumed)) = find_frame_end(rest) {
            assert!(frame_len < consumed && consumed <= rest.len(), "{name}");
            assert!(
                !rest[..frame_len].ends_with(b"\r\n"),
                "{name}: terminator excluded"
            );
            assert_eq!(&rest[frame_len..consumed], b"\r\n\r\n", "{name}");
            rest = &rest[consumed..];
            count += 1;
        }
        assert!(rest.is_empty(), "{name}: ends at a packet boundary");
        assert_eq!(count, terminators(&bytes), "{name}");
    }
}

#[test]
fn banner_of_asterisk_22() {
    let frames = capture("01_");
    assert_eq!(
        frames[0],
        Frame::Banner("Asterisk Call Manager/11.0.0".into())
    );
    let ps = packets(&frames);
    assert_eq!(ps[1].get("Ping"), Some("Pong"));
    assert_eq!(ps[2].get("response"), Some("Goodbye"));
}

#[test]
fn login_with_events_shows_fully_booted() {
    let frames = capture("02_");
    let booted = packets(&frames)
        .into_iter()
        .find(|p| p.event() == Some("FullyBooted"))
        .expect("FullyBooted event");
    assert_eq!(booted.kind(), PacketKind::Event);
    assert_eq!(booted.get("Status"), Some("Fully Booted"));
    assert_eq!(booted.get("Timestamp"), None);
}

#[test]
fn command_output_in_the_asterisk_14_shape() {
    let frames = capture("06_");
    let by_id = |id: &str| -> Packet {
        packets(&frames)
            .into_iter()
            .find(|p| p.action_id() == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("response {id}"))
    };
    let connected = by_id("command-18");
    let lines = connected.output_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2], "1 users connected.");
    assert!(
        lines[0].starts_with("  Username "),
        "only the separator space goes: command output keeps its columns"
    );
    let dialplan = by_id("command-19");
    assert_eq!(
        dialplan.output_lines()[4],
        "",
        "an empty Output line is kept"
    );
    let error = by_id("command-20");
    assert_eq!(error.get("Response"), Some("Error"));
    assert!(error.output_lines()[0].starts_with("No such command 'this is not a command'"));
}

#[test]
fn queue_status_is_a_complete_event_list() {
    let frames = capture("07_");
    let ps = packets(&frames);
    let start = ps
        .iter()
        .position(|p| p.get("EventList") == Some("start"))
        .expect("EventList start");
    let id = ps[start].action_id().unwrap();
    let complete = ps
        .iter()
        .position(|p| p.event() == Some("QueueStatusComplete") && p.action_id() == Some(id))
        .expect("QueueStatusComplete");
    assert!(complete > start);
    assert_eq!(ps[complete].get("EventList"), Some("Complete"));
    let items = ps[start + 1..complete]
        .iter()
        .filter(|p| p.action_id() == Some(id))
        .count();
    assert_eq!(items, 2, "QueueParams and QueueMember");
    assert_eq!(
        ps[complete].get("ListItems"),
        Some(items.to_string().as_str())
    );
}

#[test]
fn legacy_queues_without_action_id_is_refused() {
    let frames = capture("08_");
    let refused = packets(&frames)
        .into_iter()
        .find(|p| p.get("Message").is_some_and(|m| m.contains("Queues")))
        .expect("Queues answer");
    assert_eq!(refused.kind(), PacketKind::Response);
    assert_eq!(refused.action_id(), None);
}

#[test]
fn flood_has_200_user_events() {
    let frames = capture("14_");
    let ps = packets(&frames);
    let user_events: Vec<_> = ps
        .iter()
        .filter(|p| p.event() == Some("UserEvent"))
        .collect();
    let floods = user_events
        .iter()
        .filter(|p| p.get("UserEvent") == Some("Flood"))
        .count();
    assert_eq!(floods, 200);
    assert_eq!(user_events.len(), 202, "plus FloodStart and FloodDone");
    assert!(ps.len() > 1000);
}

#[test]
fn getvar_of_unset_variable_has_empty_value() {
    let frames = capture("22_");
    assert!(packets(&frames)
        .iter()
        .any(|p| p.get("Value") == Some("") && p.get("Variable").is_some()));
}

#[test]
fn sent_actions_parse_as_actions() {
    for (name, bytes) in captures() {
        if !name.ends_with(".sent.txt") {
            continue;
        }
        let frames = decode_all(&bytes, Limits::default(), false);
        for p in packets(&frames) {
            let legacy_queues = p.get("Action") == Some("Queues");
            assert_eq!(p.action_id().is_some(), !legacy_queues, "{name}: {p:?}");
            let expected = if p.get("Action").is_some() {
                PacketKind::Action
            } else {
                PacketKind::Unknown
            };
            assert_eq!(p.kind(), expected, "{name}: {p:?}");
        }
    }
}
