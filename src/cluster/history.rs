//! A node's copy of one server's shared history (SPEC §10 in cluster mode): the registry's
//! [`FrameLog`] for a mirrored server. Positions are the stream's (its epoch, its entry
//! offsets), never this node's own count, so a session may resume on any node. Frames are kept
//! in a [`History`] window whose offsets are shifted by `base`: a node that starts late, or
//! skipped entries, keeps only what it saw, from `base + 1` on.
//!
//! Pure state with no I/O; it knows neither the stream nor sessions.

use std::time::Instant;

use crate::config::HistorySettings;
use crate::registry::fanout::InBatch;
use crate::registry::history::{new_epoch, FrameLog, Gap, History, Kept, Usage};
use crate::registry::At;

pub struct SharedLog {
    settings: HistorySettings,
    /// Holds stream offsets `base + 1 ..= newest()`, numbered from 1 inside.
    inner: History,
    base: u64,
}

impl SharedLog {
    /// Before the stream is read: a placeholder epoch no client can hold.
    pub fn new(settings: HistorySettings) -> SharedLog {
        let inner = History::with_epoch(settings.clone(), new_epoch());
        SharedLog {
            settings,
            inner,
            base: 0,
        }
    }

    /// Forgets what is kept: the next frame is `offset + 1` of `epoch`.
    fn restart(&mut self, epoch: &str, offset: u64) {
        self.inner = History::with_epoch(self.settings.clone(), epoch.to_string());
        self.base = offset;
    }

    fn shift(&self, gap: Gap) -> Gap {
        match gap {
            Gap::TooOld { asked, oldest } => Gap::TooOld {
                asked: asked + self.base,
                oldest: oldest + self.base,
            },
            Gap::Ahead { asked, newest } => Gap::Ahead {
                asked: asked + self.base,
                newest: newest + self.base,
            },
            Gap::Unreadable { from, why } => Gap::Unreadable {
                from: from + self.base,
                why,
            },
            other => other,
        }
    }
}

impl FrameLog for SharedLog {
    fn epoch(&self) -> &str {
        self.inner.epoch()
    }

    fn newest(&self) -> u64 {
        self.inner.newest() + self.base
    }

    fn append(&mut self, frame: InBatch, now: Instant) -> u64 {
        self.inner.append(frame, now) + self.base
    }

    fn since(&self, epoch: &str, offset: u64) -> Result<Vec<Kept>, Gap> {
        if epoch == self.epoch() && offset < self.base {
            return Err(Gap::TooOld {
                asked: offset,
                oldest: self.base + 1,
            });
        }
        self.inner
            .since(epoch, offset.saturating_sub(self.base))
            .map_err(|g| self.shift(g))
    }

    fn expire(&mut self, now: Instant) {
        self.inner.expire(now);
    }

    fn usage(&self) -> Usage {
        self.inner.usage()
    }

    fn append_at(&mut self, at: &At, frame: Option<InBatch>, now: Instant) {
        let newest = self.newest();
        let Some(frame) = frame else {
            // A position only: a new history, or entries this node never got.
            if *at.epoch != *self.epoch() || at.offset > newest {
                self.restart(&at.epoch, at.offset);
            }
            return;
        };
        if *at.epoch != *self.epoch() || at.offset > newest + 1 {
            self.restart(&at.epoch, at.offset.saturating_sub(1));
        } else if at.offset <= newest {
            // The fence makes this impossible; were it not, a frame kept twice would be worse.
            log::warn!(
                "shared history: offset {} again (newest {newest})",
                at.offset
            );
            return;
        }
        self.inner.append(frame, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fanout::Outgoing;
    use bytestring::ByteString;
    use std::sync::Arc;

    fn settings(max_frames: usize) -> HistorySettings {
        HistorySettings {
            max_frames,
            ..HistorySettings::default()
        }
    }

    fn frame(n: u64) -> InBatch {
        let batch: Arc<[Outgoing]> =
            vec![Outgoing::notice(ByteString::from(n.to_string()), None)].into();
        let first = InBatch::all(&batch).next().expect("one frame");
        first
    }

    fn at(epoch: &str, offset: u64, kept: bool) -> At {
        At {
            epoch: epoch.into(),
            offset,
            kept,
        }
    }

    fn put(log: &mut SharedLog, epoch: &str, offsets: impl Iterator<Item = u64>) {
        for n in offsets {
            log.append_at(&at(epoch, n, true), Some(frame(n)), Instant::now());
        }
    }

    fn texts(log: &SharedLog, epoch: &str, since: u64) -> Vec<String> {
        log.since(epoch, since)
            .expect("covered")
            .iter()
            .map(|k| k.frame().to_string())
            .collect()
    }

    #[test]
    fn positions_are_the_streams_from_wherever_this_node_started() {
        let mut log = SharedLog::new(settings(100));
        let placeholder = log.epoch().to_string();
        put(&mut log, "e1", 41..=45);
        assert_eq!(log.epoch(), "e1");
        assert_eq!(log.newest(), 45);
        assert_eq!(texts(&log, "e1", 42), ["43", "44", "45"]);
        assert_eq!(texts(&log, "e1", 40).len(), 5);
        assert_eq!(
            log.since("e1", 39).map(|v| v.len()),
            Err(Gap::TooOld {
                asked: 39,
                oldest: 41
            })
        );
        assert!(matches!(log.since(&placeholder, 0), Err(Gap::Epoch { .. })));
        assert_eq!(
            log.since("e1", 46).map(|v| v.len()),
            Err(Gap::Ahead {
                asked: 46,
                newest: 45
            })
        );
    }

    #[test]
    fn a_skip_or_a_new_epoch_forgets_what_came_before() {
        let mut log = SharedLog::new(settings(100));
        put(&mut log, "e1", 1..=5);
        put(&mut log, "e1", 8..=9);
        assert_eq!(texts(&log, "e1", 7), ["8", "9"]);
        assert!(matches!(log.since("e1", 5), Err(Gap::TooOld { .. })));
        put(&mut log, "e2", 1..=2);
        assert_eq!(log.newest(), 2);
        assert!(matches!(log.since("e1", 9), Err(Gap::Epoch { .. })));
        assert_eq!(texts(&log, "e2", 0), ["1", "2"]);
    }

    #[test]
    fn positions_without_frames_move_but_never_back_and_repeats_are_dropped() {
        let mut log = SharedLog::new(settings(100));
        log.append_at(&at("e1", 7, false), None, Instant::now());
        assert_eq!((log.epoch(), log.newest()), ("e1", 7));
        assert_eq!(log.since("e1", 7).map(|v| v.len()), Ok(0));
        put(&mut log, "e1", 8..=9);
        log.append_at(&at("e1", 3, false), None, Instant::now());
        put(&mut log, "e1", 9..=9);
        assert_eq!(texts(&log, "e1", 7), ["8", "9"]);
    }

    #[test]
    fn the_frame_bound_holds_in_stream_offsets() {
        let mut log = SharedLog::new(settings(3));
        put(&mut log, "e1", 101..=110);
        assert_eq!(texts(&log, "e1", 107), ["108", "109", "110"]);
        assert_eq!(
            log.since("e1", 106).map(|v| v.len()),
            Err(Gap::TooOld {
                asked: 106,
                oldest: 108
            })
        );
    }
}
