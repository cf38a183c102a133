//! Decoding throughput of the AMI codec over the real captures, in MB/s and packets/s.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::codec::Decoder;

use amihub::ami::{AmiDecoder, Frame, Limits};

#[path = "support/captures.rs"]
mod captures;
use captures::{all_captures, CAPTURES};

fn flood() -> Vec<u8> {
    std::fs::read(format!("{CAPTURES}/14_flood_200_events_on.txt")).expect("flood capture")
}

/// Decodes `stream` delivered in reads of `read` bytes; returns the number of packets.
fn decode(stream: &[u8], read: usize) -> usize {
    let mut decoder = AmiDecoder::new(Limits::default(), true);
    let mut buf = BytesMut::with_capacity(read.min(stream.len()) + 4096);
    let mut packets = 0;
    for chunk in stream.chunks(read) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf).expect("decode") {
            if let Frame::Packet(p) = frame {
                packets += 1;
                black_box(p);
            }
        }
    }
    packets
}

fn bench(c: &mut Criterion) {
    let inputs = [("captures", all_captures()), ("flood", flood())];
    for (name, stream) in &inputs {
        // Every packet in the captures ends with CRLF CRLF; none may be discarded.
        let terminators = stream.windows(4).filter(|w| w == b"\r\n\r\n").count();
        assert_eq!(decode(stream, 4096), terminators, "{name}");
    }
    let mut bytes = c.benchmark_group("decode_bytes");
    for (name, stream) in &inputs {
        bytes.throughput(Throughput::Bytes(stream.len() as u64));
        bytes.bench_function(format!("{name}_whole"), |b| {
            b.iter(|| decode(stream, stream.len()))
        });
        bytes.bench_function(format!("{name}_4k_reads"), |b| {
            b.iter(|| decode(stream, 4096))
        });
    }
    bytes.finish();
    let mut packets = c.benchmark_group("decode_packets");
    for (name, stream) in &inputs {
        packets.throughput(Throughput::Elements(decode(stream, stream.len()) as u64));
        packets.bench_function(format!("{name}_4k_reads"), |b| {
            b.iter(|| decode(stream, 4096))
        });
    }
    packets.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
