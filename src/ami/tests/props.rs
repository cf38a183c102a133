//! Properties: no input panics, chunking never changes the result, actions round-trip.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::ami::{find_frame_end, parse_packet, Action, ActionError};

/// Pieces that make the scanner's interesting states likely, plus arbitrary bytes.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b": ".to_vec()),
        Just(b"Event: X".to_vec()),
        Just(b"Response: Follows\r\n".to_vec()),
        Just(b"--END COMMAND--".to_vec()),
        Just(b"Output: line".to_vec()),
        Just(b"a long line of output without any colon".to_vec()),
        vec(any::<u8>(), 0..12),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    vec(token(), 0..60).prop_map(|ts| ts.concat())
}

fn limits() -> impl Strategy<Value = Limits> {
    (0usize..80, 0usize..300, 0usize..10).prop_map(|(l, p, h)| Limits {
        max_line_bytes: l,
        max_packet_bytes: p,
        max_headers: h,
    })
}

/// Cuts `bytes` at the given fractions (each in 0..=1000 per mille of the length).
fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c * bytes.len() / 1000).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut start = 0;
    points
        .into_iter()
        .map(|p| {
            let piece = &bytes[start..p];
            start = p;
            piece
        })
        .collect()
}

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_()/.-]{0,15}"
}

/// Values as the wire keeps them: no CR/LF, no leading blank (the parser strips those).
fn header_value() -> impl Strategy<Value = String> {
    "([^\r\n \t][^\r\n]{0,30})?"
}

/// 512 cases, or `PROPTEST_CASES` for a longer hunt.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_bytes_any_chunking_same_frames(
        bytes in prop_oneof![stream(), vec(any::<u8>(), 0..400)],
        cuts in vec(0usize..=1000, 0..8),
        limits in limits(),
        banner in any::<bool>(),
    ) {
        // decode_chunks also asserts the buffer bound after every read.
        let whole = decode_all(&bytes, limits, banner);
        prop_assert_eq!(&decode_chunks(cut(&bytes, &cuts), limits, banner), &whole);
        prop_assert_eq!(&decode_bytewise(&bytes, limits, banner), &whole);
        let _ = find_frame_end(&bytes);
        let _ = parse_packet(&bytes, &limits);
    }

    #[test]
    fn find_frame_end_agrees_with_the_decoder(bytes in stream()) {
        let unbounded = Limits {
            max_line_bytes: usize::MAX,
            max_packet_bytes: usize::MAX,
            max_headers: usize::MAX,
        };
        let frames = decode_all(&bytes, unbounded, false);
        if let Some((len, used)) = find_frame_end(&bytes) {
            prop_assert!(len < used && used <= bytes.len());
            let first = parse_packet(&bytes[..len], &unbounded).unwrap();
            prop_assert_eq!(frames.first(), Some(&Frame::Packet(first)));
        }
    }

    #[test]
    fn action_round_trips_through_the_decoder(
        name in header_name(),
        headers in vec((header_name(), header_value()), 0..12),
        cuts in vec(0usize..=1000, 0..4),
    ) {
        let mut action = Action::new(&name);
        for (n, v) in &headers {
            action.push(n, v.clone());
        }
        let bytes = action.to_bytes().unwrap();
        let frames = decode_chunks(cut(&bytes, &cuts), Limits::default(), false);
        prop_assert_eq!(frames.len(), 1);
        let Frame::Packet(packet) = &frames[0] else { panic!("not a packet: {:?}", frames[0]) };
        prop_assert!(packet.headers().eq(action.headers()));
        prop_assert_eq!(packet.raw_lines().count(), 0);
    }

    #[test]
    fn action_with_cr_or_lf_is_refused(
        headers in vec((header_name(), header_value()), 1..8),
        which in any::<prop::sample::Index>(),
        in_name in any::<bool>(),
        at in any::<prop::sample::Index>(),
        bad in prop_oneof![Just('\r'), Just('\n')],
    ) {
        let mut headers = headers;
        let i = which.index(headers.len());
        let target = if in_name { &mut headers[i].0 } else { &mut headers[i].1 };
        let chars: Vec<char> = target.chars().collect();
        let pos = at.index(chars.len() + 1);
        let mut injected: String = chars[..pos].iter().collect();
        injected.push(bad);
        injected.extend(&chars[pos..]);
        *target = injected;
        let mut action = Action::new("Ping");
        for (n, v) in &headers {
            action.push(n, v.clone());
        }
        let mut buf = BytesMut::from(&b"x"[..]);
        let refused = matches!(action.encode(&mut buf), Err(ActionError::CrLf { .. }));
        prop_assert!(refused);
        prop_assert_eq!(&buf[..], b"x");
    }
}
