//! The fan-out path, per session: the registry's `Sessions::broadcast` of one PBX batch to N
//! WebSocket sessions, then each session's socket task taking its batch and framing it for the
//! socket (`Deliver::wire` with `frame_texts`), everything but the syscall. Against it, what the
//! old path did per session (a WebSocket header and a copy of every frame into each session's
//! own buffer), and sessions that filter (each selects and frames its own).
//!
//! `cargo bench --bench fanout`; throughput is messages delivered (events × sessions), so
//! time per element is the cost of one message to one session.

use std::sync::Arc;

use actix::prelude::*;
use actix_http::ws::{OpCode, Parser};
use bytes::BytesMut;
use bytestring::ByteString;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use amihub::ami::Packet;
use amihub::auth::Rights;
use amihub::metrics::Metrics;
use amihub::registry::fanout::{Outgoing, Selection, SessionEntry, Sessions};
use amihub::registry::session::{CloseSession, Format, SessionIo};
use amihub::registry::Subscription;
use amihub::ws::outbound::frame_texts;
use amihub::ws::protocol::{encode_packet, ServerTag};

/// Events per PBX batch (what one read of a busy PBX yields).
const BATCH: usize = 64;

/// A realistic ~600-byte channel event.
fn event(seq: u64) -> Packet {
    Packet::from_headers([
        ("Event", "Newchannel".to_string()),
        ("Privilege", "call,all".into()),
        ("Timestamp", "1795353492.671471".into()),
        ("Channel", format!("PJSIP/100-{seq:08x}")),
        ("ChannelState", "4".into()),
        ("ChannelStateDesc", "Ring".into()),
        ("CallerIDNum", "100".into()),
        ("CallerIDName", "Alice Example".into()),
        ("ConnectedLineNum", "<unknown>".into()),
        ("ConnectedLineName", "<unknown>".into()),
        ("Language", "en".into()),
        ("AccountCode", "".into()),
        ("Context", "from-internal".into()),
        ("Exten", "200".into()),
        ("Priority", "1".into()),
        ("Uniqueid", format!("1795353492.{seq}")),
        ("Linkedid", format!("1795353492.{seq}")),
        ("ChanVariable", "SIPCALLID=0123456789abcdef@10.0.0.1".into()),
        ("ChanVariable", "QUEUE_PRIO=5".into()),
    ])
}

/// Stands in for a session actor: only its close recipient is needed.
struct Closer;

impl Actor for Closer {
    type Context = Context<Self>;
}

impl Handler<CloseSession> for Closer {
    type Result = ();
    fn handle(&mut self, _: CloseSession, _: &mut Context<Self>) {}
}

/// `n` joined WebSocket sessions (socket-task delivery), filtering with `subscription`.
fn sessions(n: usize, subscription: Option<Subscription>) -> (Sessions, Vec<Arc<SessionIo>>) {
    let close = Closer.start().recipient();
    let rights = Arc::new(Rights::everything());
    let subscription = subscription.map(Arc::new);
    let mut s = Sessions::new(usize::MAX / 2, Arc::new(Metrics::default()));
    let mut ios = Vec::new();
    for id in 0..n as u64 {
        let io = SessionIo::new(None, None);
        let budget = s.budget(&format!("user{id}"));
        s.map.insert(
            id,
            SessionEntry {
                user: format!("user{id}"),
                out: None,
                close: close.clone(),
                io: io.clone(),
                select: Selection {
                    rights: rights.clone(),
                    subscription: subscription.clone(),
                    format: Format::Json,
                    budget,
                },
                pending: 0,
            },
        );
        ios.push(io);
    }
    (s, ios)
}

/// One PBX batch through the registry and every session's socket task.
fn deliver(s: &Sessions, ios: &[Arc<SessionIo>], frames: &[ByteString], packets: &[Packet]) {
    let batch = frames
        .iter()
        .zip(packets)
        .map(|(f, p)| Outgoing::packet(f.clone(), p.clone(), None))
        .collect();
    assert!(s.broadcast((1, "pbx1"), batch).is_empty());
    for io in ios {
        while let Some(d) = io.pop() {
            let (bytes, queued) = d.wire(io, frame_texts);
            io.sub_queued(queued);
            black_box(bytes);
        }
    }
}

fn bench(c: &mut Criterion) {
    let system = System::new();
    system.block_on(async { run(c) });
}

fn run(c: &mut Criterion) {
    let tag = ServerTag::new(1, "pbx1", false);
    let packets: Vec<Packet> = (0..BATCH as u64).map(event).collect();
    let frames: Vec<ByteString> = packets
        .iter()
        .map(|p| encode_packet(&tag, p, None))
        .collect();

    let mut render = c.benchmark_group("render");
    render.throughput(Throughput::Elements(BATCH as u64));
    render.bench_function("encode_packet", |b| {
        b.iter(|| {
            for p in &packets {
                black_box(encode_packet(&tag, p, None));
            }
        })
    });
    render.finish();

    let mut fan = c.benchmark_group("fanout_per_message");
    for n in [1usize, 100, 1000] {
        fan.throughput(Throughput::Elements((BATCH * n) as u64));
        let (all, all_ios) = sessions(n, None);
        fan.bench_with_input(BenchmarkId::new("shared_framed_batch", n), &n, |b, _| {
            b.iter(|| deliver(&all, &all_ios, &frames, &packets))
        });
        // The old write path: every session framed and copied every frame into its own buffer.
        fan.bench_with_input(BenchmarkId::new("framed_per_session", n), &n, |b, &n| {
            b.iter(|| {
                let shared: Arc<[ByteString]> = frames.iter().cloned().collect();
                for _ in 0..n {
                    let mine = shared.clone();
                    let mut buf = BytesMut::new();
                    for f in mine.iter() {
                        Parser::write_message(&mut buf, f.as_bytes(), OpCode::Text, true, false);
                    }
                    black_box(buf);
                }
            })
        });
        let filter = Subscription::new(None, None, vec!["!Event: VarSet".into()]).ok();
        let (filtering, filtering_ios) = sessions(n, filter);
        fan.bench_with_input(BenchmarkId::new("filtering_sessions", n), &n, |b, _| {
            b.iter(|| deliver(&filtering, &filtering_ios, &frames, &packets))
        });
    }
    fan.finish();

    // Write coalescing ([fanout] flush_interval_ms): 8 events that arrive as 4 PBX reads of 2
    // (2,000 ev/s in 1 ms ticks) fanned out as they come, or held and fanned out as one batch.
    // The syscall saved per session (3 of 4 writes) is not in this figure.
    let mut coalesce = c.benchmark_group("coalescing_per_message");
    const READS: usize = 4;
    const PER_READ: usize = 2;
    for n in [100usize, 1000] {
        coalesce.throughput(Throughput::Elements((READS * PER_READ * n) as u64));
        let (all, all_ios) = sessions(n, None);
        let (frames, packets) = (&frames[..READS * PER_READ], &packets[..READS * PER_READ]);
        coalesce.bench_with_input(BenchmarkId::new("each_read", n), &n, |b, _| {
            b.iter(|| {
                for (f, p) in frames.chunks(PER_READ).zip(packets.chunks(PER_READ)) {
                    deliver(&all, &all_ios, f, p);
                }
            })
        });
        coalesce.bench_with_input(BenchmarkId::new("one_flush", n), &n, |b, _| {
            b.iter(|| deliver(&all, &all_ios, frames, packets))
        });
    }
    coalesce.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
