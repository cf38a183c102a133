//! Tests of the AMI codec: the real captures, each tolerance case by name, and properties.

mod action;
mod captures;
mod props;
mod shapes;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::{AmiDecoder, Frame, Limits, Packet};

/// The most bytes a decoder may hold between reads: one packet, one line, or the discard tail.
fn buffer_bound(limits: &Limits) -> usize {
    (limits.max_packet_bytes.saturating_add(3))
        .max(limits.max_line_bytes.saturating_add(2))
        .max(16)
}

/// Decodes `chunks` fed one after another, then end of stream, checking the buffer bound.
fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    limits: Limits,
    banner: bool,
) -> Vec<Frame> {
    let mut decoder = AmiDecoder::new(limits, banner);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf).expect("decode never fails") {
            frames.push(frame);
        }
        assert!(
            buf.len() <= buffer_bound(&limits),
            "decoder holds {} bytes, bound {}",
            buf.len(),
            buffer_bound(&limits)
        );
    }
    while let Some(frame) = decoder
        .decode_eof(&mut buf)
        .expect("decode_eof never fails")
    {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "decode_eof leaves nothing behind");
    frames
}

/// Decodes `bytes` in one read.
fn decode_all(bytes: &[u8], limits: Limits, banner: bool) -> Vec<Frame> {
    decode_chunks([bytes], limits, banner)
}

/// Decodes `bytes` one byte per read.
fn decode_bytewise(bytes: &[u8], limits: Limits, banner: bool) -> Vec<Frame> {
    decode_chunks(bytes.chunks(1), limits, banner)
}

/// Asserts that splitting `bytes` into two reads at every offset, and feeding it one byte at a
/// time, gives `expected`.
fn assert_chunking_independent(bytes: &[u8], limits: Limits, banner: bool, expected: &[Frame]) {
    for at in 0..=bytes.len() {
        let (a, b) = bytes.split_at(at);
        assert_eq!(
            decode_chunks([a, b], limits, banner),
            expected,
            "split at {at}"
        );
    }
    assert_eq!(decode_bytewise(bytes, limits, banner), expected, "bytewise");
}

/// The packets of a frame list; panics on a banner or discard after the first frame.
fn packets(frames: &[Frame]) -> Vec<&Packet> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Packet(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// One packet parsed from `text` by the decoder (no banner, default limits).
fn one_packet(text: &str) -> Packet {
    let frames = decode_all(text.as_bytes(), Limits::default(), false);
    match frames.as_slice() {
        [Frame::Packet(p)] => p.clone(),
        other => panic!("expected one packet, got {other:?}"),
    }
}

/// Header pairs as owned strings, for comparisons.
fn header_list(p: &Packet) -> Vec<(String, String)> {
    p.headers()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}
