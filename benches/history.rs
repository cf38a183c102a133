//! Resume history: the heap that 10,000 kept frames really take (a counting allocator, against
//! the history's own accounting that `/metrics` shows), stamping and keeping frames, and reading
//! a replay back (what the registry does for a resuming session before the socket writes it), for
//! synthetic hangups and for the real captures' events, by block size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use amihub::ami::{AmiDecoder, Frame, Limits, Packet};
use amihub::config::HistorySettings;
use amihub::registry::fanout::{InBatch, Outgoing};
use amihub::registry::history::{FrameLog, History, BLOCK_BYTES};
use amihub::ws::protocol::{encode_packet, with_position, ServerTag};
use tokio_util::codec::Decoder;

/// Counts live heap bytes, to measure what the history holds.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[path = "support/captures.rs"]
mod captures;
use captures::all_captures;

#[global_allocator]
static ALLOC: Counting = Counting;

const FRAMES: usize = 10_000;

/// A hangup as Asterisk 22 sends it (about 600 bytes of AMI).
fn hangup(n: usize) -> Packet {
    let chan = format!("PJSIP/2{:03}-{n:08x}", n % 1000);
    let id = format!("1795353492.{n}");
    Packet::from_headers([
        ("Event", "Hangup"),
        ("Privilege", "call,all"),
        ("Timestamp", "1795353519.104482"),
        ("Channel", chan.as_str()),
        ("ChannelState", "6"),
        ("ChannelStateDesc", "Up"),
        ("CallerIDNum", "2001"),
        ("CallerIDName", "Reception Desk"),
        ("ConnectedLineNum", "5551234567"),
        ("ConnectedLineName", "Outside Caller"),
        ("Language", "en"),
        ("AccountCode", "sales"),
        ("Context", "from-internal"),
        ("Exten", "h"),
        ("Priority", "1"),
        ("Uniqueid", id.as_str()),
        ("Linkedid", id.as_str()),
        ("Cause", "16"),
        ("Cause-txt", "Normal Clearing"),
        ("ChanVariable", "DIALSTATUS=ANSWER"),
        (
            "ChanVariable",
            "MIXMONITOR_FILENAME=/var/spool/asterisk/monitor/x.wav",
        ),
    ])
}

fn settings() -> HistorySettings {
    HistorySettings {
        max_frames: FRAMES,
        max_age_s: 300,
        max_bytes: 1 << 30,
    }
}

/// What the registry hands the history: the frame as rendered for the fan-out, and the packet.
fn outgoing(tag: &ServerTag, packets: &[Packet]) -> Vec<Outgoing> {
    packets
        .iter()
        .map(|p| Outgoing::packet(encode_packet(tag, p, None), p.clone(), None))
        .collect()
}

/// Stamps and keeps a batch, as `Registry::broadcast` does.
fn keep(h: &mut History, batch: Vec<Outgoing>, now: Instant) {
    let next = h.newest() + 1;
    for (mut o, offset) in batch.into_iter().zip(next..) {
        o.frame = with_position(&o.frame, h.epoch(), offset);
        h.append(o.into(), now);
    }
}

/// Block sizes compared (the first is the default); `usize::MAX` never seals: the window as it
/// was before blocks, uncompressed.
const BLOCKS: [usize; 6] = [
    BLOCK_BYTES,
    usize::MAX,
    8 << 10,
    16 << 10,
    32 << 10,
    128 << 10,
];

/// A window whose frames have all stayed long enough to be sealed (`SEAL_AFTER`: the benches
/// keep a whole window at one instant), in blocks of `block` bytes.
fn sealed(block: usize) -> History {
    History::new(settings())
        .with_block_bytes(block)
        .with_seal_after(Duration::ZERO)
}

fn block_name(block: usize) -> String {
    match block {
        usize::MAX => "uncompressed".into(),
        _ => format!("{}KiB", block >> 10),
    }
}

/// Every event of the real captures, in order, repeated up to `FRAMES`.
fn captured_events() -> Vec<Packet> {
    let mut decoder = AmiDecoder::new(Limits::default(), true);
    let mut buf = BytesMut::from(&all_captures()[..]);
    let mut events = Vec::new();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if let Frame::Packet(p) = frame {
            if p.event().is_some() {
                events.push(p);
            }
        }
    }
    events.iter().cycle().take(FRAMES).cloned().collect()
}

fn report_memory(name: &str, tag: &ServerTag, packets: &[Packet], block: usize) {
    let before = LIVE.load(Relaxed);
    let batch = outgoing(tag, packets);
    let frame_bytes: usize = batch.iter().map(|o| o.frame.len()).sum();
    let mut h = sealed(block);
    keep(&mut h, batch, Instant::now());
    // The batch (its unstamped frames, its vector) is gone: what is left is the history.
    let heap = LIVE.load(Relaxed).saturating_sub(before);
    let u = h.usage();
    println!(
        "history of {} {name} (JSON {} B each on average), {}: heap {} B ({} B/frame), \
         accounted {} B ({} B/frame)",
        u.frames,
        frame_bytes / FRAMES,
        block_name(block),
        heap,
        heap / u.frames,
        u.bytes,
        u.bytes / u.frames
    );
    drop(h);
}

fn bench(c: &mut Criterion) {
    let tag = ServerTag::new(1, "pbx1", false);
    let packets: Vec<Packet> = (0..FRAMES).map(hangup).collect();
    let workloads = [
        ("hangups", packets.clone()),
        ("captures", captured_events()),
    ];
    for (name, packets) in &workloads {
        for block in BLOCKS {
            report_memory(name, &tag, packets, block);
        }
    }

    // What sealing adds, alone: one block's frames concatenated and lz4-compressed, per frame.
    for (name, packets) in &workloads {
        let mut raw = Vec::new();
        let mut n = 0;
        for o in outgoing(&tag, packets) {
            raw.extend_from_slice(with_position(&o.frame, "9f3c0a17d2b4e861", 1).as_bytes());
            n += 1;
            if raw.len() >= BLOCK_BYTES {
                break;
            }
        }
        let mut out = vec![0; lz4_flex::block::get_maximum_output_size(raw.len())];
        let size = lz4_flex::block::compress_into(&raw, &mut out).unwrap_or(0);
        println!(
            "one {name} block: {n} frames, {} B, compressed to {size} B",
            raw.len()
        );
        let mut one = c.benchmark_group("history_seal");
        one.throughput(Throughput::Elements(n));
        one.bench_function(format!("compress_one_block/{name}"), |b| {
            b.iter(|| lz4_flex::block::compress_into(black_box(&raw), &mut out))
        });
        one.bench_function(format!("decompress_one_block/{name}"), |b| {
            let mut back = vec![0; raw.len()];
            b.iter(|| lz4_flex::block::decompress_into(black_box(&out[..size]), &mut back))
        });
        one.finish();
    }
    let mut g = c.benchmark_group("history");
    g.sample_size(20);
    g.throughput(Throughput::Elements(FRAMES as u64));
    // The live path's extra cost: one copy of each frame with its position.
    let rendered: Vec<ByteString> = packets
        .iter()
        .map(|p| encode_packet(&tag, p, None))
        .collect();
    g.bench_function("stamp_10000", |b| {
        b.iter(|| {
            for (f, offset) in rendered.iter().zip(1u64..) {
                black_box(with_position(f, "9f3c0a17d2b4e861", offset));
            }
        })
    });
    g.bench_function("stamp_and_keep_10000", |b| {
        b.iter_batched(
            || outgoing(&tag, &packets),
            |batch| {
                let mut h = History::new(settings());
                keep(&mut h, batch, Instant::now());
                black_box(h.newest())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // The live path's cost of keeping alone: a full window takes 10,000 frames already stamped
    // (as the registry hands them over, shared with the fan-out), each evicting the oldest.
    for (name, packets) in &workloads {
        for block in BLOCKS {
            let id = format!("append_10000_to_a_full_window/{name}/{}", block_name(block));
            g.bench_function(id, |b| {
                b.iter_batched(
                    || {
                        let mut h = sealed(block);
                        keep(&mut h, outgoing(&tag, packets), Instant::now());
                        let next = h.newest() + 1;
                        let frames: Vec<InBatch> = outgoing(&tag, packets)
                            .into_iter()
                            .zip(next..)
                            .map(|(mut o, offset)| {
                                o.frame = with_position(&o.frame, h.epoch(), offset);
                                o.into()
                            })
                            .collect();
                        (h, frames)
                    },
                    |(mut h, frames)| {
                        let now = Instant::now();
                        for f in frames {
                            h.append(f, now);
                        }
                        h
                    },
                    criterion::BatchSize::LargeInput,
                )
            });
        }
    }
    for block in [BLOCK_BYTES, usize::MAX] {
        let mut h = sealed(block);
        keep(&mut h, outgoing(&tag, &packets), Instant::now());
        let epoch = h.epoch().to_string();
        // The registry's replay: the frames after an offset, filtered per session (each packet
        // read back from its JSON), as one batch.
        let id = format!("replay_10000_to_one_session/{}", block_name(block));
        g.bench_function(id, |b| {
            b.iter(|| {
                let kept = h.since(&epoch, 0).unwrap_or_default();
                let frames: Vec<ByteString> = kept
                    .into_iter()
                    .filter(|k| {
                        k.outgoing().is_some_and(|o| {
                            o.packet.as_ref().and_then(|p| p.event()) != Some("VarSet")
                        })
                    })
                    .map(|k| k.frame().clone())
                    .collect();
                black_box(frames.len())
            })
        });
        // A session that takes everything: the frames read back, nothing parsed.
        let id = format!("read_back_10000/{}", block_name(block));
        g.bench_function(id, |b| {
            b.iter(|| black_box(h.since(&epoch, 0).map(|k| k.len())))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
