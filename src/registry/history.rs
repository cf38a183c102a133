//! The bounded history of one server's broadcast frames (SPEC §10): each frame's position
//! (`epoch`, `offset`), the frames themselves as already rendered (shared with the live fan-out,
//! never serialised again) and the parsed packet that per-session filtering looks at on replay.
//!
//! Pure state with no I/O and no actors; it knows neither sessions nor rights. [`FrameLog`] is
//! the whole interface the registry uses, so a shared store (a Redis Stream per PBX in cluster
//! mode) can stand in for [`History`], the in-memory window of one node.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::HistorySettings;

use super::fanout::{InBatch, Outgoing};

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
    /// Every kept frame after `offset` of `epoch`, oldest first; a gap if some are gone.
    fn since(&self, epoch: &str, offset: u64) -> Result<Vec<&Outgoing>, Gap>;
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

struct Kept {
    at: Instant,
    bytes: usize,
    frame: InBatch,
}

/// One node's in-memory window for one server, bounded by frames, age and bytes.
pub struct History {
    epoch: String,
    settings: HistorySettings,
    /// Offset of `kept[0]`; when `kept` is empty, the offset the next frame gets.
    first: u64,
    kept: VecDeque<Kept>,
    bytes: usize,
}

/// A fresh epoch: 64 random bits in hex (URL-safe, so it travels in `?resume=` as is).
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What one kept frame costs: the rendered frame, the packet's heap and the entry itself.
fn cost(o: &Outgoing) -> usize {
    let packet = |p: &Option<crate::ami::Packet>| p.as_ref().map_or(0, |p| p.heap_bytes());
    std::mem::size_of::<Kept>()
        + o.frame.len()
        + packet(&o.packet)
        + packet(&o.ami_notice)
        + o.action_id.as_ref().map_or(0, |a| a.capacity())
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
            kept: VecDeque::new(),
            bytes: 0,
        }
    }

    fn pop(&mut self) {
        if let Some(k) = self.kept.pop_front() {
            self.bytes -= k.bytes;
            self.first += 1;
        }
    }
}

impl FrameLog for History {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn newest(&self) -> u64 {
        self.first + self.kept.len() as u64 - 1
    }

    fn append(&mut self, frame: InBatch, now: Instant) -> u64 {
        let bytes = cost(&frame);
        self.kept.push_back(Kept {
            at: now,
            bytes,
            frame,
        });
        self.bytes += bytes;
        // The newest frame always stays, even one larger than the byte bound on its own: the
        // offset sequence never skips, and the next append evicts it.
        while self.kept.len() > 1
            && (self.kept.len() > self.settings.max_frames || self.bytes > self.settings.max_bytes)
        {
            self.pop();
        }
        self.expire(now);
        self.newest()
    }

    fn since(&self, epoch: &str, offset: u64) -> Result<Vec<&Outgoing>, Gap> {
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
        let skip = (offset + 1 - self.first) as usize;
        Ok(self.kept.iter().skip(skip).map(|k| &*k.frame).collect())
    }

    fn expire(&mut self, now: Instant) {
        let max_age = Duration::from_secs(self.settings.max_age_s);
        while self
            .kept
            .front()
            .is_some_and(|k| now.saturating_duration_since(k.at) > max_age)
        {
            self.pop();
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            frames: self.kept.len(),
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn settings(max_frames: usize, max_age_s: u64, max_bytes: usize) -> HistorySettings {
        HistorySettings {
            max_frames,
            max_age_s,
            max_bytes,
        }
    }

    fn frame(n: u64) -> Outgoing {
        Outgoing::notice(ByteString::from(format!("{{\"n\":{n:03}}}")), None)
    }

    fn offsets(h: &History, since: u64) -> Vec<String> {
        h.since(h.epoch(), since)
            .expect("covered")
            .iter()
            .map(|o| o.frame.to_string())
            .collect()
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
        let one = cost(&frame(1));
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
