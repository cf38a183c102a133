//! A sealed block of one server's history: frames' bytes concatenated and lz4-compressed as one,
//! with each frame's end, time and kind beside it, uncompressed. It reads its frames back and
//! tells what each is accounted; it knows nothing of the window's bounds or offsets.

use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::ami::Packet;

use super::{Kept, Source};

/// Frames sealed together: their bytes as one lz4 block, what expiry, accounting and replay
/// need per frame beside it, uncompressed.
pub(super) struct Block {
    /// The frames' bytes, concatenated: lz4-compressed, or as they are if that is no smaller.
    pub(super) data: Box<[u8]>,
    pub(super) compressed: bool,
    /// When the first frame was kept; the others' times count from it.
    base: Instant,
    pub(super) metas: Box<[Meta]>,
    /// The packets of the frames kept whole ([`Source::Packet`]), by index in `metas`.
    packets: Box<[(usize, Packet)]>,
    /// Frames at the front that have left the window; the block goes with the last.
    pub(super) gone: usize,
}

#[derive(Clone, Copy)]
pub(super) struct Meta {
    /// Where this frame ends in the block's bytes; it starts where the one before ends.
    pub(super) end: usize,
    /// When it was kept: milliseconds after the block's `base`, rounded up (never expires early).
    after_ms: u32,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Notice,
    Json,
    Packet,
}

impl Block {
    /// Seals `frames` (at least one, all kept at or after the first's time, within
    /// the history's `MAX_SPAN`), `len` bytes in all.
    pub(super) fn seal(frames: impl Iterator<Item = Kept>, len: usize) -> Option<Block> {
        let mut raw = Vec::with_capacity(len);
        let mut metas = Vec::new();
        let mut packets = Vec::new();
        let mut base = None;
        for (i, k) in frames.enumerate() {
            let base = *base.get_or_insert(k.at);
            raw.extend_from_slice(k.frame.as_bytes());
            let kind = match k.source {
                Source::Notice => Kind::Notice,
                Source::Json => Kind::Json,
                Source::Packet(p) => {
                    packets.push((i, p));
                    Kind::Packet
                }
            };
            let ms =
                k.at.saturating_duration_since(base)
                    .as_nanos()
                    .div_ceil(1_000_000);
            metas.push(Meta {
                end: raw.len(),
                after_ms: u32::try_from(ms).unwrap_or(u32::MAX),
                kind,
            });
        }
        let mut data = vec![0; lz4_flex::block::get_maximum_output_size(raw.len())];
        let (data, compressed) = match lz4_flex::block::compress_into(&raw, &mut data) {
            Ok(n) if n < raw.len() => {
                data.truncate(n);
                (data, true)
            }
            _ => (raw, false),
        };
        Some(Block {
            data: data.into_boxed_slice(),
            compressed,
            base: base?,
            metas: metas.into_boxed_slice(),
            packets: packets.into_boxed_slice(),
            gone: 0,
        })
    }

    pub(super) fn live(&self) -> usize {
        self.metas.len() - self.gone
    }

    pub(super) fn at(&self, i: usize) -> Instant {
        self.base + Duration::from_millis(self.metas[i].after_ms.into())
    }

    fn start(&self, i: usize) -> usize {
        i.checked_sub(1).map_or(0, |i| self.metas[i].end)
    }

    fn packet(&self, i: usize) -> Option<&Packet> {
        let at = self.packets.binary_search_by_key(&i, |(j, _)| *j).ok()?;
        Some(&self.packets[at].1)
    }

    /// What frame `i` is accounted: its entry, its share of the block's bytes (by frame size;
    /// the shares add up to the block's exactly), and a packet kept whole.
    pub(super) fn cost(&self, i: usize) -> usize {
        let shared = (self.data.len() + std::mem::size_of::<Block>()) as u128;
        let len = self.metas.last().map_or(0, |m| m.end) as u128;
        let upto = |end: usize| end as u128 * shared / len;
        let share = match len {
            0 if i + 1 == self.metas.len() => shared,
            0 => 0,
            _ => upto(self.metas[i].end) - upto(self.start(i)),
        };
        let packet = self.packet(i).map_or(0, |p| {
            std::mem::size_of::<(usize, Packet)>() + p.heap_bytes()
        });
        std::mem::size_of::<Meta>() + share as usize + packet
    }

    /// The frames from `from` on (an index, not below `gone`), as they were kept.
    pub(super) fn read(&self, from: usize, out: &mut Vec<Kept>) -> Result<(), String> {
        let len = self.metas.last().map_or(0, |m| m.end);
        let raw = if self.compressed {
            let mut raw = vec![0; len];
            match lz4_flex::block::decompress_into(&self.data, &mut raw) {
                Ok(n) if n == len => raw,
                Ok(n) => return Err(format!("{n} bytes where {len} were sealed")),
                Err(e) => return Err(e.to_string()),
            }
        } else {
            self.data.to_vec()
        };
        let text = String::from_utf8(raw).map_err(|e| e.to_string())?;
        let text = ByteString::from(text);
        for i in from..self.metas.len() {
            let bytes = text
                .get(self.start(i)..self.metas[i].end)
                .ok_or("a frame does not end on a character boundary")?;
            let source = match self.metas[i].kind {
                Kind::Notice => Source::Notice,
                Kind::Json => Source::Json,
                Kind::Packet => {
                    Source::Packet(self.packet(i).ok_or("a packet is missing")?.clone())
                }
            };
            out.push(Kept {
                at: self.at(i),
                bytes: self.cost(i),
                frame: text.slice_ref(bytes),
                source,
            });
        }
        Ok(())
    }
}
