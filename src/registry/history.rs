//! The bounded history of one server's broadcast frames (SPEC §10): each frame's position
//! (`epoch`, `offset`) and the frame itself as already rendered (the very bytes of the live
//! fan-out, shared, never serialised again). The parsed packet that per-session filtering looks
//! at on replay is not kept: it is read back from the frame's JSON `data` when a session that
//! filters resumes (a resume is rare, a frame kept is not), except for the few packets whose
//! JSON does not give their headers back as they were (raw lines, a restored ActionID).
//!
//! The newest frames stay as they are (the open tail); every [`BLOCK_BYTES`] of frame bytes that
//! have stayed [`SEAL_AFTER`] are sealed into one lz4 block with each frame's end, time and kind
//! beside it, and a replay decompresses only the blocks it reads from. A window that turns over
//! faster than that (a flooding PBX: 10,000 frames in a few tens of milliseconds) is never
//! compressed, since its frames leave before compression could save anything.
//!
//! Pure state with no I/O and no actors; it knows neither sessions nor rights. [`FrameLog`] is
//! the whole interface the registry uses, so a shared store (a Redis Stream per PBX in cluster
//! mode) can stand in for [`History`], the in-memory window of one node.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::ami::Packet;
use crate::config::HistorySettings;

use super::fanout::{InBatch, Outgoing};

mod block;
use block::Block;

/// Where a client is in one server's history: the last frame it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// Why a history cannot serve a resume: the client must fetch a snapshot instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gap {
    #[error("epoch {asked:?} is not this server's history ({current:?})")]
    Epoch { asked: String, current: String },
    #[error("offset {asked} is older than the window (oldest kept: {oldest})")]
    TooOld { asked: u64, oldest: u64 },
    #[error("offset {asked} is ahead of the newest frame ({newest})")]
    Ahead { asked: u64, newest: u64 },
    /// A sealed block did not decompress to what was sealed: impossible by construction, but
    /// a replay that cannot give every frame is a gap, never a replay with a hole.
    #[error("frames from offset {from} cannot be read back: {why}")]
    Unreadable { from: u64, why: String },
}

/// Frames and bytes held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub frames: usize,
    pub bytes: usize,
}

/// A server's frame history: positions are assigned in order, frames after a position are read
/// back in order.
pub trait FrameLog {
    /// Names this history; changes whenever history is lost (a restart, a server re-added).
    fn epoch(&self) -> &str;
    /// The offset of the newest frame appended (0 before the first).
    fn newest(&self) -> u64;
    /// Keeps a broadcast frame, already stamped with offset `newest() + 1`; returns that offset.
    fn append(&mut self, frame: InBatch, now: Instant) -> u64;
    /// Every kept frame after `offset` of `epoch`, oldest first; a gap if some are gone. The
    /// frames are owned (read back from compressed blocks); their bytes are shared, not copied.
    fn since(&self, epoch: &str, offset: u64) -> Result<Vec<Kept>, Gap>;
    /// Drops frames older than the age bound.
    fn expire(&mut self, now: Instant);
    fn usage(&self) -> Usage;
    /// Cluster mode: keeps `frame` at the position a shared store gave it, or (None) only moves
    /// to that position. A log that numbers its own frames just appends.
    fn append_at(&mut self, at: &super::At, frame: Option<InBatch>, now: Instant) {
        let _ = at;
        if let Some(frame) = frame {
            self.append(frame, now);
        }
    }
}

/// One kept frame: its bytes, and what replay filtering needs to look inside it.
#[derive(Clone)]
pub struct Kept {
    at: Instant,
    bytes: usize,
    frame: ByteString,
    source: Source,
}

/// Where a kept frame's packet comes from on replay.
#[derive(Clone)]
enum Source {
    /// amihub's own frame (a status, a banner): no packet.
    Notice,
    /// A PBX packet whose headers are the frame's JSON `data`, read back on replay.
    Json,
    /// A packet its JSON does not render as is (raw lines, a restored ActionID): kept whole.
    Packet(Packet),
}

impl Kept {
    fn new(o: &Outgoing, at: Instant) -> Kept {
        let source = match &o.packet {
            None => Source::Notice,
            Some(p) if o.action_id.is_none() && p.raw_lines().next().is_none() => Source::Json,
            Some(p) => Source::Packet(p.clone()),
        };
        let packet = match &source {
            Source::Packet(p) => p.heap_bytes(),
            _ => 0,
        };
        Kept {
            at,
            bytes: std::mem::size_of::<Kept>() + o.frame.len() + packet,
            frame: o.frame.clone(),
            source,
        }
    }

    /// The frame as it was written to sessions.
    pub fn frame(&self) -> &ByteString {
        &self.frame
    }

    /// The frame as the live fan-out had it, for a session's selection to look at; None if its
    /// packet cannot be read back (never for frames amihub rendered; such a frame is skipped).
    pub fn outgoing(&self) -> Option<Outgoing> {
        let packet = match &self.source {
            Source::Notice => return Some(Outgoing::notice(self.frame.clone(), None)),
            Source::Packet(p) => p.clone(),
            Source::Json => packet_of(&self.frame)?,
        };
        Some(Outgoing::packet(self.frame.clone(), packet, None))
    }
}

/// The packet of a broadcast frame, from its JSON `data`: each key with its value, or one
/// header per element of an array (how repeated headers are rendered). Names and values are
/// borrowed from the frame unless they hold escapes, so a read-back costs few allocations.
fn packet_of(frame: &str) -> Option<Packet> {
    let frame: FrameData = serde_json::from_str(frame).ok()?;
    Some(Packet::from_headers(frame.data.0))
}

/// The part of a frame a read-back needs.
#[derive(Deserialize)]
struct FrameData<'a> {
    #[serde(borrow)]
    data: Headers<'a>,
}

/// A `data` object as header lines, in order.
struct Headers<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

/// A JSON string, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Headers<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Lines<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Lines<'a> {
            type Value = Headers<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of header values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers<'a>, A::Error> {
                let mut lines = Vec::new();
                while let Some(Text(name)) = map.next_key::<Text<'a>>()? {
                    let Values(values) = map.next_value::<Values<'a>>()?;
                    lines.extend(values.into_iter().map(|v| (name.clone(), v)));
                }
                Ok(Headers(lines))
            }
        }
        d.deserialize_map(Lines(PhantomData))
    }
}

/// One header's value, or the values of a repeated header (an array).
struct Values<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Values<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneOrMany<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for OneOrMany<'a> {
            type Value = Values<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Values<'a>, E> {
                Ok(Values(vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Values<'a>, E> {
                Ok(Values(vec![Cow::Owned(v.to_string())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values<'a>, A::Error> {
                let mut values = Vec::new();
                while let Some(Text(v)) = seq.next_element::<Text<'a>>()? {
                    values.push(v);
                }
                Ok(Values(values))
            }
        }
        d.deserialize_any(OneOrMany(PhantomData))
    }
}

/// Frame bytes at which the open tail is sealed into a compressed block (chosen by measurement:
/// README, Performance).
pub const BLOCK_BYTES: usize = 64 << 10;

/// How long frames stay in the open tail before they are sealed: compressing costs about as much
/// per frame as rendering it, and pays only for frames that stay.
pub const SEAL_AFTER: Duration = Duration::from_millis(100);

/// The longest a block may span: its frames' times are kept as milliseconds after its first.
const MAX_SPAN: Duration = Duration::from_millis(u32::MAX as u64 - 1);

/// One node's in-memory window for one server, bounded by frames, age and bytes: sealed blocks,
/// oldest first, then the open tail, in offset order.
pub struct History {
    epoch: String,
    settings: HistorySettings,
    /// Offset of the oldest kept frame; when none is kept, the offset the next frame gets.
    first: u64,
    blocks: VecDeque<Block>,
    tail: VecDeque<Kept>,
    /// Frame bytes in `tail`.
    tail_bytes: usize,
    block_bytes: usize,
    seal_after: Duration,
    frames: usize,
    bytes: usize,
}

/// A fresh epoch: 64 random bits in hex (URL-safe, so it travels in `?resume=` as is).
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl History {
    pub fn new(settings: HistorySettings) -> History {
        History::with_epoch(settings, new_epoch())
    }

    pub fn with_epoch(settings: HistorySettings, epoch: String) -> History {
        History {
            epoch,
            settings,
            first: 1,
            blocks: VecDeque::new(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            block_bytes: BLOCK_BYTES,
            seal_after: SEAL_AFTER,
            frames: 0,
            bytes: 0,
        }
    }

    /// Seals the tail at `bytes` of frames instead of [`BLOCK_BYTES`] (tests, benches).
    pub fn with_block_bytes(mut self, bytes: usize) -> History {
        self.block_bytes = bytes.max(1);
        self
    }

    /// Seals frames once they are `after` old instead of [`SEAL_AFTER`] (tests, benches).
    pub fn with_seal_after(mut self, after: Duration) -> History {
        self.seal_after = after;
        self
    }

    /// Compresses the open tail into a block.
    fn seal(&mut self) {
        self.seal_front(self.tail.len());
    }

    /// Seals every [`BLOCK_BYTES`] at the front of the tail whose first frame has stayed
    /// `seal_after` (at `now`), oldest first; what is younger or less stays open.
    fn seal_old(&mut self, now: Instant) {
        while self.tail_bytes >= self.block_bytes
            && self
                .tail
                .front()
                .is_some_and(|k| now.saturating_duration_since(k.at) >= self.seal_after)
        {
            let mut bytes = 0;
            let n = self
                .tail
                .iter()
                .take_while(|k| {
                    let before = bytes;
                    bytes += k.frame.len();
                    before < self.block_bytes
                })
                .count();
            self.seal_front(n);
        }
    }

    /// Compresses the first `n` frames of the open tail into a block.
    fn seal_front(&mut self, n: usize) {
        let front = self.tail.range(..n);
        let accounted: usize = front.clone().map(|k| k.bytes).sum();
        let len: usize = front.map(|k| k.frame.len()).sum();
        self.tail_bytes -= len;
        let Some(block) = Block::seal(self.tail.drain(..n), len) else {
            return;
        };
        let cost: usize = (0..block.metas.len()).map(|i| block.cost(i)).sum();
        self.bytes = self.bytes - accounted + cost;
        self.blocks.push_back(block);
    }

    fn pop(&mut self) {
        if let Some(b) = self.blocks.front_mut() {
            self.bytes -= b.cost(b.gone);
            b.gone += 1;
            if b.live() == 0 {
                self.blocks.pop_front();
            }
        } else if let Some(k) = self.tail.pop_front() {
            self.bytes -= k.bytes;
            self.tail_bytes -= k.frame.len();
        } else {
            return;
        }
        self.frames -= 1;
        self.first += 1;
    }

    /// When the oldest kept frame was kept.
    fn oldest(&self) -> Option<Instant> {
        match self.blocks.front() {
            Some(b) => Some(b.at(b.gone)),
            None => self.tail.front().map(|k| k.at),
        }
    }
}

impl FrameLog for History {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn newest(&self) -> u64 {
        self.first + self.frames as u64 - 1
    }

    fn append(&mut self, frame: InBatch, now: Instant) -> u64 {
        if self
            .tail
            .front()
            .is_some_and(|k| now.saturating_duration_since(k.at) > MAX_SPAN)
        {
            self.seal();
        }
        let kept = Kept::new(&frame, now);
        self.bytes += kept.bytes;
        self.tail_bytes += kept.frame.len();
        self.tail.push_back(kept);
        self.frames += 1;
        // The newest frame always stays, even one larger than the byte bound on its own: the
        // offset sequence never skips, and the next append evicts it.
        while self.frames > 1
            && (self.frames > self.settings.max_frames || self.bytes > self.settings.max_bytes)
        {
            self.pop();
        }
        // Also seals what has stayed long enough.
        self.expire(now);
        self.newest()
    }

    fn since(&self, epoch: &str, offset: u64) -> Result<Vec<Kept>, Gap> {
        if epoch != self.epoch {
            return Err(Gap::Epoch {
                asked: epoch.to_string(),
                current: self.epoch.clone(),
            });
        }
        let newest = self.newest();
        if offset > newest {
            return Err(Gap::Ahead {
                asked: offset,
                newest,
            });
        }
        // Frames first..=newest are kept; the client needs offset+1 onwards.
        if offset + 1 < self.first {
            return Err(Gap::TooOld {
                asked: offset,
                oldest: self.first,
            });
        }
        let mut skip = (offset + 1 - self.first) as usize;
        let mut out = Vec::with_capacity(self.frames - skip);
        let mut from = self.first;
        for b in &self.blocks {
            if skip >= b.live() {
                skip -= b.live();
            } else {
                b.read(b.gone + skip, &mut out)
                    .map_err(|why| Gap::Unreadable {
                        from: from + skip as u64,
                        why,
                    })?;
                skip = 0;
            }
            from += b.live() as u64;
        }
        out.extend(self.tail.iter().skip(skip).cloned());
        Ok(out)
    }

    fn expire(&mut self, now: Instant) {
        let max_age = Duration::from_secs(self.settings.max_age_s);
        while self
            .oldest()
            .is_some_and(|at| now.saturating_duration_since(at) > max_age)
        {
            self.pop();
        }
        // A server gone quiet: what it left in the tail is sealed by the registry's sweep.
        self.seal_old(now);
    }

    fn usage(&self) -> Usage {
        Usage {
            frames: self.frames,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    pub(super) fn settings(max_frames: usize, max_age_s: u64, max_bytes: usize) -> HistorySettings {
        HistorySettings {
            max_frames,
            max_age_s,
            max_bytes,
        }
    }

    pub(super) fn frame(n: u64) -> Outgoing {
        Outgoing::notice(ByteString::from(format!("{{\"n\":{n:03}}}")), None)
    }

    pub(super) fn offsets(h: &History, since: u64) -> Vec<String> {
        h.since(h.epoch(), since)
            .expect("covered")
            .iter()
            .map(|k| k.frame().to_string())
            .collect()
    }

    /// Kept size of a frame of the tests.
    pub(super) fn cost(o: Outgoing) -> usize {
        Kept::new(&o, Instant::now()).bytes
    }

    #[test]
    fn offsets_count_from_one_and_since_returns_what_follows() {
        let mut h = History::new(settings(100, 300, 1 << 20));
        let now = Instant::now();
        assert_eq!(h.newest(), 0);
        assert_eq!(h.since(h.epoch(), 0).map(|v| v.len()), Ok(0));
        for n in 1..=5 {
            assert_eq!(h.append(frame(n).into(), now), n);
        }
        assert_eq!(offsets(&h, 3), ["{\"n\":004}", "{\"n\":005}"]);
        assert_eq!(offsets(&h, 0).len(), 5);
        assert!(offsets(&h, 5).is_empty());
        assert_eq!(
            h.since(h.epoch(), 6).map(|v| v.len()),
            Err(Gap::Ahead {
                asked: 6,
                newest: 5
            })
        );
    }

    #[test]
    fn frame_bound_evicts_oldest_and_older_offsets_are_a_gap() {
        let mut h = History::new(settings(3, 300, 1 << 20));
        let now = Instant::now();
        for n in 1..=10 {
            h.append(frame(n).into(), now);
        }
        assert_eq!(h.usage().frames, 3);
        assert_eq!(
            offsets(&h, 7),
            ["{\"n\":008}", "{\"n\":009}", "{\"n\":010}"]
        );
        assert_eq!(
            h.since(h.epoch(), 6).map(|v| v.len()),
            Err(Gap::TooOld {
                asked: 6,
                oldest: 8
            })
        );
    }

    #[test]
    fn byte_bound_holds_and_bytes_are_accounted_back() {
        let one = cost(frame(1));
        let mut h = History::new(settings(1000, 300, one * 4 + one / 2));
        let now = Instant::now();
        for n in 1..=20 {
            h.append(frame(n).into(), now);
            assert!(h.usage().bytes <= one * 4 + one / 2);
        }
        assert_eq!(h.usage().frames, 4);
        assert_eq!(h.usage().bytes, 4 * one);
        assert_eq!(offsets(&h, 16).len(), 4);
    }

    #[test]
    fn a_frame_larger_than_the_byte_bound_is_kept_alone_until_the_next() {
        let mut h = History::new(settings(1000, 300, 8));
        let now = Instant::now();
        h.append(frame(1).into(), now);
        h.append(frame(2).into(), now);
        assert_eq!(h.usage().frames, 1);
        assert_eq!(offsets(&h, 1), ["{\"n\":002}"]);
    }

    #[test]
    fn age_bound_expires_without_appends_and_keeps_the_offset_sequence() {
        let mut h = History::new(settings(1000, 5, 1 << 20));
        let start = Instant::now();
        h.append(frame(1).into(), start);
        h.append(frame(2).into(), start + Duration::from_secs(3));
        h.expire(start + Duration::from_secs(6));
        assert_eq!(h.usage().frames, 1);
        h.expire(start + Duration::from_secs(9));
        assert_eq!(h.usage(), Usage::default());
        // Empty, but still resumable from the newest offset, and numbering goes on.
        assert_eq!(h.newest(), 2);
        assert_eq!(h.since(h.epoch(), 2).map(|v| v.len()), Ok(0));
        assert!(matches!(h.since(h.epoch(), 1), Err(Gap::TooOld { .. })));
        assert_eq!(h.append(frame(3).into(), start + Duration::from_secs(9)), 3);
    }

    #[test]
    fn another_epoch_is_a_gap_and_epochs_differ() {
        let mut h = History::new(settings(10, 300, 1 << 20));
        h.append(frame(1).into(), Instant::now());
        let other = History::new(settings(10, 300, 1 << 20));
        assert_ne!(h.epoch(), other.epoch());
        assert!(matches!(h.since(other.epoch(), 0), Err(Gap::Epoch { .. })));
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use crate::ws::protocol::{encode_packet, with_position, ServerTag};

    fn packet(lines: &[(&str, &str)]) -> Packet {
        Packet::from_headers(lines.iter().copied())
    }

    fn kept(o: Outgoing) -> Kept {
        Kept::new(&o, Instant::now())
    }

    fn headers(p: &Packet) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = p
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        h.sort();
        h
    }

    #[test]
    fn a_packet_is_read_back_from_its_frame_with_every_header() {
        let tag = ServerTag::new(3, "pbx \"one\"", false);
        let p = packet(&[
            ("Event", "Newchannel"),
            ("Privilege", "call,all"),
            ("Channel", "PJSIP/100-0000001\t\"quoted\"\\"),
            ("ChanVariable", "A=1"),
            ("Exten", "200"),
            ("ChanVariable", "B=2"),
            ("Empty", ""),
        ]);
        let frame = with_position(&encode_packet(&tag, &p, None), "0123456789abcdef", 7);
        let k = kept(Outgoing::packet(frame.clone(), p.clone(), None));
        assert!(matches!(k.source, Source::Json));
        let back = k.outgoing().expect("read back");
        assert_eq!(back.frame, frame);
        let back = back.packet.expect("a packet");
        assert_eq!(headers(&back), headers(&p));
        assert_eq!(back.event(), Some("Newchannel"));
        // What is kept is the frame alone, not the packet.
        assert_eq!(k.bytes, std::mem::size_of::<Kept>() + frame.len());
    }

    #[test]
    fn packets_their_json_does_not_render_as_is_are_kept_whole() {
        let tag = ServerTag::new(1, "pbx1", false);
        let p = packet(&[("Event", "UserEvent"), ("ActionID", "amihub-1-9")]);
        let frame = encode_packet(&tag, &p, Some("mine"));
        let k = kept(Outgoing::packet(frame, p.clone(), Some("mine".into())));
        assert!(matches!(k.source, Source::Packet(_)));
        let back = k.outgoing().and_then(|o| o.packet).expect("kept");
        assert_eq!(back.action_id(), Some("amihub-1-9"));
    }

    #[test]
    fn notices_stay_notices_and_unreadable_frames_are_none() {
        let k = kept(Outgoing::notice(
            ByteString::from_static("{\"type\":7}"),
            None,
        ));
        assert!(k.outgoing().is_some_and(|o| o.packet.is_none()));
        let mut broken = kept(Outgoing::notice(ByteString::from_static("{"), None));
        broken.source = Source::Json;
        assert!(broken.outgoing().is_none());
    }
}

#[cfg(test)]
mod block_tests {
    use super::tests::{cost, frame, offsets, settings};
    use super::*;
    use proptest::prelude::*;

    /// A window sealing at 63 bytes of frames: 7 of the tests' 9-byte frames a block.
    fn small(s: HistorySettings) -> History {
        History::new(s)
            .with_block_bytes(63)
            .with_seal_after(Duration::ZERO)
    }

    fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|n| frame(n).frame.to_string()).collect()
    }

    /// What the window accounts equals what its frames cost, one by one.
    fn accounted(h: &History) -> usize {
        let kept = h.since(h.epoch(), h.first - 1).expect("covered");
        kept.iter().map(|k| k.bytes).sum()
    }

    #[test]
    fn frames_are_sealed_once_they_have_stayed_and_a_window_that_turns_over_sooner_never_is() {
        let start = Instant::now();
        let after = |ms: u64| start + Duration::from_millis(ms);
        let stay = Duration::from_millis(100);
        // 1,000 frames in 10 ms through a 16-frame window: each leaves long before 100 ms.
        let mut fast = History::new(settings(16, 300, 1 << 20))
            .with_block_bytes(63)
            .with_seal_after(stay);
        for n in 1..=1000 {
            fast.append(frame(n).into(), after(n / 100));
        }
        assert!(fast.blocks.is_empty(), "nothing compressed");
        assert_eq!(offsets(&fast, 984), expected(985..=1000));
        assert_eq!(fast.usage().bytes, accounted(&fast));
        // A slow server: its frames stay open until they are 100 ms old, then go a block
        // (63 bytes: seven 9-byte frames) at a time; what is left stays open.
        let mut slow = History::new(settings(1000, 300, 1 << 20))
            .with_block_bytes(63)
            .with_seal_after(stay);
        for n in 1..=16 {
            slow.append(frame(n).into(), after(0));
        }
        slow.expire(after(99));
        assert!(slow.blocks.is_empty(), "younger than 100 ms");
        slow.expire(after(100));
        assert_eq!(slow.blocks.len(), 2);
        assert!(slow.blocks.iter().all(|b| b.metas.len() == 7));
        assert_eq!(slow.tail.len(), 2, "less than a block stays open");
        assert_eq!(offsets(&slow, 0), expected(1..=16));
        assert_eq!(slow.usage().bytes, accounted(&slow));
        let open: usize = (1..=16).map(|n| cost(frame(n))).sum();
        assert!(slow.usage().bytes < open, "sealed frames cost less");
    }

    #[test]
    fn a_replay_across_sealed_blocks_and_the_tail_gives_the_exact_frames_in_order() {
        let mut h = small(settings(1000, 300, 1 << 20));
        let now = Instant::now();
        let p = Packet::from_headers([("Event", "UserEvent"), ("ActionID", "amihub-1-9")]);
        for n in 1..=30 {
            let o = match n {
                10 => Outgoing::packet(frame(10).frame, p.clone(), Some("mine".into())),
                _ => frame(n),
            };
            assert_eq!(h.append(o.into(), now), n);
        }
        assert_eq!(h.blocks.len(), 4);
        assert_eq!(h.tail.len(), 2);
        for since in 0..=30 {
            assert_eq!(
                offsets(&h, since),
                expected(since + 1..=30),
                "since {since}"
            );
        }
        let kept = h.since(h.epoch(), 9).expect("covered");
        let back = kept[0]
            .outgoing()
            .and_then(|o| o.packet)
            .expect("kept whole");
        assert_eq!(back.action_id(), Some("amihub-1-9"));
        assert!(kept[1].outgoing().is_some_and(|o| o.packet.is_none()));
        assert_eq!(h.usage().bytes, accounted(&h));
    }

    #[test]
    fn the_frame_bound_inside_a_sealed_block_keeps_exact_offsets_and_gaps() {
        let mut h = small(settings(10, 300, 1 << 20));
        let now = Instant::now();
        for n in 1..=30 {
            h.append(frame(n).into(), now);
            assert_eq!(h.usage().frames, n.min(10) as usize);
            assert_eq!(h.usage().bytes, accounted(&h));
        }
        // Blocks 1-7, 8-14, 15-21, 22-28 were sealed; 1-20 are gone, 15-21 only in part.
        assert_eq!(h.blocks.len(), 2);
        assert_eq!(h.blocks[0].gone, 6);
        assert_eq!(offsets(&h, 20), expected(21..=30));
        assert_eq!(offsets(&h, 25), expected(26..=30));
        assert_eq!(
            h.since(h.epoch(), 19).map(|v| v.len()),
            Err(Gap::TooOld {
                asked: 19,
                oldest: 21
            })
        );
    }

    #[test]
    fn the_byte_bound_counts_sealed_frames_by_their_share_and_gives_it_all_back() {
        let bound = 2000;
        let mut h = small(settings(1000, 5, bound));
        let start = Instant::now();
        let mut partly = false;
        for n in 1..=200 {
            h.append(frame(n).into(), start);
            assert!(h.usage().bytes <= bound, "{:?} after {n}", h.usage());
            assert_eq!(h.usage().bytes, accounted(&h));
            partly |= h.blocks.front().is_some_and(|b| b.gone > 0);
        }
        assert!(partly, "the bound never fell inside a block");
        let oldest = h.first;
        assert!(oldest > 1 && h.blocks.len() > 1);
        assert_eq!(offsets(&h, oldest - 1), expected(oldest..=200));
        assert!(matches!(
            h.since(h.epoch(), oldest - 2),
            Err(Gap::TooOld { .. })
        ));
        h.expire(start + Duration::from_secs(6));
        assert_eq!(h.usage(), Usage::default());
        assert!(h.blocks.is_empty() && h.tail.is_empty());
        assert_eq!(h.newest(), 200);
    }

    #[test]
    fn the_age_bound_drops_a_sealed_block_frame_by_frame_then_frees_it() {
        let mut h = small(settings(1000, 5, 1 << 20));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        for n in 1..=14 {
            h.append(frame(n).into(), at(n * 100));
        }
        assert_eq!((h.blocks.len(), h.tail.len()), (2, 0));
        // Frames 1-3 are just older than 5 s, frame 4 not yet.
        h.expire(at(5_300) + Duration::from_micros(1));
        assert_eq!(offsets(&h, 3), expected(4..=14));
        assert!(matches!(h.since(h.epoch(), 2), Err(Gap::TooOld { .. })));
        h.expire(at(5_701));
        assert_eq!(offsets(&h, 7), expected(8..=14));
        assert_eq!(h.blocks.len(), 1);
        h.expire(at(6_500));
        assert_eq!(h.usage(), Usage::default());
        assert_eq!(h.append(frame(15).into(), at(6_500)), 15);
    }

    #[test]
    fn a_frame_larger_than_a_block_is_sealed_alone_and_incompressible_bytes_stay_as_they_are() {
        let mut h = small(settings(1000, 300, 1 << 20));
        let now = Instant::now();
        let big = format!("{{\"n\":\"{}\"}}", "ab".repeat(500));
        // Bytes lz4 cannot shrink: a pseudo-random printable string.
        let mut x = 1u64;
        let noise: String = (0..200)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b'!' + (x >> 58) as u8)
            })
            .collect();
        h.append(Outgoing::notice(big.clone().into(), None).into(), now);
        h.append(frame(2).into(), now);
        h.append(Outgoing::notice(noise.clone().into(), None).into(), now);
        assert_eq!(h.blocks.len(), 2);
        assert_eq!(h.blocks[0].metas.len(), 1);
        assert!(h.blocks[0].compressed && h.blocks[0].data.len() < 100);
        assert!(!h.blocks[1].compressed);
        assert_eq!(offsets(&h, 0), [big, frame(2).frame.to_string(), noise]);
        assert_eq!(h.usage().bytes, accounted(&h));
    }

    #[test]
    fn an_undecodable_block_is_a_gap_with_its_reason_not_a_panic() {
        let mut h = small(settings(1000, 300, 1 << 20));
        let now = Instant::now();
        for n in 1..=16 {
            h.append(frame(n).into(), now);
        }
        assert!(h.blocks.len() == 2 && h.blocks.iter().all(|b| b.compressed));
        let good = h.blocks[0].data.clone();
        // Cut short, garbled, decompressing to the wrong size, not UTF-8.
        let half = good[..good.len() / 2].to_vec();
        let garbled = vec![0xff; good.len()];
        let mut longer = good.to_vec();
        // One more sequence: a literal `x` (token 0x10) past the end of what was sealed.
        longer.extend_from_slice(&[0x10, b'x']);
        for data in [half, garbled, longer] {
            h.blocks[0].data = data.into_boxed_slice();
            match h.since(h.epoch(), 3) {
                Err(Gap::Unreadable { from: 4, why }) => assert!(!why.is_empty()),
                other => panic!("{:?}", other.map(|v| v.len())),
            }
            // Blocks a replay does not read are not decompressed.
            assert_eq!(offsets(&h, 7), expected(8..=16));
        }
        h.blocks[0].compressed = false;
        h.blocks[0].data = vec![0xc3; h.blocks[0].metas[6].end].into_boxed_slice();
        assert!(matches!(
            h.since(h.epoch(), 0),
            Err(Gap::Unreadable { from: 1, .. })
        ));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Append { len: usize, after_ms: u64 },
        Expire { after_ms: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0usize..300, 0u64..400).prop_map(|(len, after_ms)| Step::Append { len, after_ms }),
            1 => (0u64..3_000).prop_map(|after_ms| Step::Expire { after_ms }),
        ]
    }

    proptest! {
        /// Against a plain list of every frame: the frame and age bounds drop exactly the same
        /// frames, frame by frame, and every replay gives exactly the same frames or gap.
        #[test]
        fn sealed_blocks_keep_the_semantics_of_a_plain_window(
            steps in proptest::collection::vec(step(), 1..120),
            max_frames in 1usize..40,
            block in 1usize..600,
        ) {
            let mut h = History::new(settings(max_frames, 2, usize::MAX)).with_block_bytes(block);
            let start = Instant::now();
            let mut now = start;
            let mut model: VecDeque<(u64, Instant, String)> = VecDeque::new();
            let mut next = 1;
            for s in steps {
                let max_age = Duration::from_secs(2);
                match s {
                    Step::Append { len, after_ms } => {
                        now += Duration::from_millis(after_ms);
                        let text = format!("{next}:{}", "é".repeat(len % 7).repeat(len / 7 + 1));
                        prop_assert_eq!(h.append(Outgoing::notice(text.clone().into(), None).into(), now), next);
                        model.push_back((next, now, text));
                        next += 1;
                        while model.len() > max_frames {
                            model.pop_front();
                        }
                    }
                    Step::Expire { after_ms } => {
                        now += Duration::from_millis(after_ms);
                        h.expire(now);
                    }
                }
                while model.front().is_some_and(|(_, at, _)| now.duration_since(*at) > max_age) {
                    model.pop_front();
                }
                prop_assert_eq!(h.usage().frames, model.len());
                prop_assert_eq!(h.usage().bytes, accounted(&h));
                let oldest = model.front().map_or(next, |(n, _, _)| *n);
                for since in oldest.saturating_sub(2)..next {
                    let got = h.since(h.epoch(), since).map(|v| {
                        v.iter().map(|k| k.frame().to_string()).collect::<Vec<_>>()
                    });
                    if since + 1 < oldest {
                        prop_assert_eq!(got, Err(Gap::TooOld { asked: since, oldest }));
                    } else {
                        let want: Vec<String> = model
                            .iter()
                            .filter(|(n, _, _)| *n > since)
                            .map(|(_, _, t)| t.clone())
                            .collect();
                        prop_assert_eq!(got, Ok(want));
                    }
                }
            }
        }
    }
}
