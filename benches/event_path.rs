//! The per-event path of one busy PBX, everything but the sockets: AMI bytes read in 64 KiB
//! chunks → parsed packets (`AmiDecoder`) → the live state (`StateTracker::track`) → the JSON
//! envelope → stamped with epoch and offset, as the PBX actor and the registry do it. The events
//! have the shape and size of the neutral harness's fake Asterisk (a call's Newchannel, Newstate,
//! VarSet and Hangup in turn, ~650 bytes and 22-24 headers each), so channels come and go in the
//! state as they do there.
//!
//! `cargo bench --bench event_path`; throughput is events, so time per element is the cost of
//! one event through the stages named.

use bytes::BytesMut;
use bytestring::ByteString;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::codec::Decoder;

use amihub::ami::{AmiDecoder, Frame, Limits, Packet};
use amihub::pbx::StateTracker;
use amihub::ws::protocol::{encode_packet, encode_packet_into, with_positions, ServerTag};

/// Events in the stream (a few thousand calls' worth, so the state map is exercised).
const EVENTS: u64 = 8192;
/// What the fake Asterisk writes per syscall at full speed.
const READ: usize = 64 * 1024;

/// One event shaped as the harness's fakeami writes it.
fn write_event(out: &mut Vec<u8>, seq: u64) {
    let kind = (seq - 1) % 4;
    let call = (seq - 1) / 4;
    let uid = format!("1764590000.{call}");
    let mut put = |k: &str, v: &str| out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    put(
        "Event",
        ["Newchannel", "Newstate", "VarSet", "Hangup"][kind as usize],
    );
    put(
        "Privilege",
        if kind == 2 {
            "dialplan,all"
        } else {
            "call,all"
        },
    );
    put("SystemName", "pbx-bench-01");
    put("Channel", &format!("PJSIP/trunk-{call:08x}"));
    let (st, desc) = match kind {
        0 => ("0", "Down"),
        1 => ("5", "Ringing"),
        _ => ("6", "Up"),
    };
    put("ChannelState", st);
    put("ChannelStateDesc", desc);
    put(
        "CallerIDNum",
        &(15_145_550_000u64 + call % 10_000).to_string(),
    );
    put("CallerIDName", &format!("Bench Caller {}", call % 10_000));
    let exten = (5_145_559_000u64 + call % 1_000).to_string();
    if kind == 0 {
        put("ConnectedLineNum", "<unknown>");
        put("ConnectedLineName", "<unknown>");
    } else {
        put("ConnectedLineNum", &exten);
        put("ConnectedLineName", "Support Queue");
    }
    put("Language", "en");
    put("AccountCode", "");
    put("Context", "from-trunk");
    put("Exten", &exten);
    put("Priority", if kind == 0 { "1" } else { "3" });
    put("Uniqueid", &uid);
    put("Linkedid", &uid);
    match kind {
        0 => {
            put("ChanVariable", "CDR(accountcode)=");
            put("ChanVariable", "DIALSTATUS=");
        }
        1 => {
            put("ChanVariable", "CDR(accountcode)=");
            put("ChanVariable", "DIALSTATUS=RINGING");
        }
        2 => {
            put("Variable", "BRIDGEPEER");
            put(
                "Value",
                &format!("PJSIP/agent-{:08x}", call.wrapping_mul(7)),
            );
            put("ChanVariable", "DIALSTATUS=ANSWER");
        }
        _ => {
            put("Cause", "16");
            put("Cause-txt", "Normal Clearing");
            put("ChanVariable", "DIALSTATUS=ANSWER");
        }
    }
    put(
        "ChanVariable",
        &format!("SIPCALLID={:08x}-{:08x}@pbx-bench-01.invalid", call, seq),
    );
    put("Seq", &seq.to_string());
    put("SentNs", "1764590000123456789");
    out.extend_from_slice(b"\r\n");
}

fn stream() -> Vec<u8> {
    let mut out = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
    for seq in 1..=EVENTS {
        write_event(&mut out, seq);
    }
    out
}

/// Runs `each` on every packet of `stream`, decoded from 64 KiB reads as the PBX actor gets them.
fn decode(stream: &[u8], mut each: impl FnMut(Packet)) {
    let mut decoder = AmiDecoder::new(Limits::default(), true);
    let mut buf = BytesMut::with_capacity(READ + 4096);
    for chunk in stream.chunks(READ) {
        buf.extend_from_slice(chunk);
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            if let Frame::Packet(p) = frame {
                each(p);
            }
        }
    }
}

/// The whole path as amihub runs it: decode, track, render each read's packets into one shared
/// buffer (the PBX actor), stamp them with one buffer per batch (the registry); returns the
/// bytes of the stamped frames.
fn whole_path(stream: &[u8], tag: &ServerTag) -> usize {
    let mut tracker = StateTracker::default();
    let mut decoder = AmiDecoder::new(Limits::default(), true);
    let mut buf = BytesMut::with_capacity(READ + 4096);
    let (mut offset, mut bytes) = (1u64, 0);
    for chunk in stream.chunks(READ) {
        buf.extend_from_slice(chunk);
        let mut text = String::new();
        let mut spans = Vec::new();
        let mut packets = Vec::new();
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            let Frame::Packet(p) = frame else { continue };
            if let Some(p) = tracker.track(p) {
                let start = text.len();
                encode_packet_into(&mut text, tag, &p, None);
                spans.push((start, text.len()));
                packets.push(p);
            }
        }
        let text = ByteString::from(text);
        let frames: Vec<ByteString> = spans
            .iter()
            .map(|&(a, b)| text.slice_ref(&text[a..b]))
            .collect();
        let stamped = with_positions(frames.iter().map(|f| &**f), "1764590000-1a2b3c4d", offset);
        offset += stamped.len() as u64;
        bytes += stamped.iter().map(|f| f.len()).sum::<usize>();
        black_box((packets, stamped));
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let stream = stream();
    let tag = ServerTag::new(1, "pbx1", false);
    let mut n = 0u64;
    decode(&stream, |_| n += 1);
    assert_eq!(n, EVENTS, "every event decodes");
    let mut g = c.benchmark_group("event_path");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("decode", |b| {
        b.iter(|| decode(&stream, |p| drop(black_box(p))))
    });
    g.bench_function("decode_track", |b| {
        b.iter(|| {
            let mut tracker = StateTracker::default();
            decode(&stream, |p| drop(black_box(tracker.track(p))));
        })
    });
    g.bench_function("decode_track_render_stamp", |b| {
        b.iter(|| whole_path(&stream, &tag))
    });
    let packets: Vec<Packet> = {
        let mut v = Vec::new();
        decode(&stream, |p| v.push(p));
        v
    };
    g.bench_function("render", |b| {
        b.iter(|| {
            for p in &packets {
                black_box(encode_packet(&tag, p, None));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
