//! Serialise-and-fan-out: rendering a packet to the JSON envelope once, and handing the shared
//! frames to N sessions (what the registry does per batch), against rendering per session.

use std::sync::Arc;

use bytestring::ByteString;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use amihub::ami::Packet;
use amihub::ws::protocol::{encode_packet, ServerTag};

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
        (
            "ChanVariable(PJSIP/100-0001)",
            "CDR(accountcode)=acme".into(),
        ),
    ])
}

fn bench(c: &mut Criterion) {
    let tag = ServerTag::new(1, "pbx1", false);
    let packets: Vec<Packet> = (0..256).map(event).collect();
    let bytes: usize = packets
        .iter()
        .map(|p| encode_packet(&tag, p, None).len())
        .sum();

    let mut render = c.benchmark_group("render");
    render.throughput(Throughput::Elements(packets.len() as u64));
    render.bench_function("encode_packet_256", |b| {
        b.iter(|| {
            for p in &packets {
                black_box(encode_packet(&tag, p, None));
            }
        })
    });
    render.finish();

    let mut fan = c.benchmark_group("fanout_batch_of_256");
    for sessions in [1usize, 100, 1000] {
        // Messages delivered per iteration: every event to every session.
        fan.throughput(Throughput::Elements((packets.len() * sessions) as u64));
        fan.bench_with_input(
            BenchmarkId::new("render_once_share", sessions),
            &sessions,
            |b, &n| {
                b.iter(|| {
                    let frames: Arc<[ByteString]> = packets
                        .iter()
                        .map(|p| encode_packet(&tag, p, None))
                        .collect();
                    let mut queued = 0usize;
                    for _ in 0..n {
                        // What a session receives: a clone of the shared batch.
                        let mine = black_box(frames.clone());
                        queued += bytes;
                        drop(mine);
                    }
                    black_box(queued)
                })
            },
        );
        if sessions <= 100 {
            fan.bench_with_input(
                BenchmarkId::new("render_per_session", sessions),
                &sessions,
                |b, &n| {
                    b.iter(|| {
                        for _ in 0..n {
                            let frames: Vec<ByteString> = packets
                                .iter()
                                .map(|p| encode_packet(&tag, p, None))
                                .collect();
                            black_box(frames);
                        }
                    })
                },
            );
        }
    }
    fan.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
