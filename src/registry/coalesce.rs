//! Write coalescing (`[fanout] flush_interval_ms`, Centrifugo's write delay): each server's
//! broadcast frames are held for at most one interval, or until they pass `flush_bytes`, and
//! then fanned out as one batch, so every session gets one wake-up and one socket write per
//! interval instead of one per PBX read. Frames keep their order (a server's held frames always
//! go out before anything else of that server), and nothing is stamped or kept for resume
//! before it is fanned out, so a session joining or resuming meanwhile gets them live.
//!
//! Pure state with no actors and no timers: the registry arms the timer and decides when to
//! flush early (before any frame it sends a session directly, and before a session's view of
//! the fan-out changes).

use std::time::Duration;

use crate::config::FanoutSettings;

use super::fanout::Outgoing;

/// What a held frame weighs against `flush_bytes`.
pub trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for Outgoing {
    fn weight(&self) -> usize {
        self.frame.len()
    }
}

/// A frame with what travels beside it (in cluster mode, its place in the shared history).
impl<P> Weight for (Outgoing, P) {
    fn weight(&self) -> usize {
        self.0.frame.len()
    }
}

/// What the registry does with a batch it asked to hold.
pub enum Hold<T> {
    /// Coalescing is off: fan this batch out now.
    Now(Vec<T>),
    /// Held; flush once `Duration` has passed since the first held frame (arm a timer if none).
    Later(Duration),
    /// Held frames passed `flush_bytes`: flush everything now.
    Full,
}

/// Broadcast frames waiting for the next flush, per server, in arrival order.
pub struct Held<T> {
    settings: FanoutSettings,
    servers: Vec<(u32, Vec<T>)>,
    bytes: usize,
}

impl<T: Weight> Held<T> {
    pub fn new(settings: FanoutSettings) -> Held<T> {
        Held {
            settings,
            servers: Vec::new(),
            bytes: 0,
        }
    }

    /// Holds a server's batch until the next flush (or hands it back when coalescing is off).
    pub fn hold(&mut self, server: u32, batch: Vec<T>) -> Hold<T> {
        if self.settings.flush_interval_ms == 0 {
            return Hold::Now(batch);
        }
        self.bytes += batch.iter().map(Weight::weight).sum::<usize>();
        match self.servers.iter_mut().find(|(id, _)| *id == server) {
            Some((_, held)) => held.extend(batch),
            None => self.servers.push((server, batch)),
        }
        if self.bytes >= self.settings.flush_bytes {
            Hold::Full
        } else {
            Hold::Later(Duration::from_millis(self.settings.flush_interval_ms))
        }
    }

    /// `batch` of `server` preceded by what is held for that server (which is no longer held).
    pub fn before(&mut self, server: u32, batch: Vec<T>) -> Vec<T> {
        let Some(i) = self.servers.iter().position(|(id, _)| *id == server) else {
            return batch;
        };
        let (_, mut held) = self.servers.swap_remove(i);
        self.bytes -= held.iter().map(Weight::weight).sum::<usize>();
        held.extend(batch);
        held
    }

    /// Everything held, per server; nothing is held afterwards.
    pub fn drain(&mut self) -> Vec<(u32, Vec<T>)> {
        self.bytes = 0;
        std::mem::take(&mut self.servers)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn frames(names: &[&str]) -> Vec<Outgoing> {
        names
            .iter()
            .map(|n| Outgoing::notice(ByteString::from(n.to_string()), None))
            .collect()
    }

    fn texts(batch: &[Outgoing]) -> Vec<String> {
        batch.iter().map(|o| o.frame.to_string()).collect()
    }

    fn settings(flush_interval_ms: u64, flush_bytes: usize) -> FanoutSettings {
        FanoutSettings {
            flush_interval_ms,
            flush_bytes,
        }
    }

    #[test]
    fn off_hands_every_batch_back() {
        let mut held = Held::new(settings(0, 1 << 16));
        match held.hold(1, frames(&["a", "b"])) {
            Hold::Now(batch) => assert_eq!(texts(&batch), ["a", "b"]),
            _ => panic!("coalescing is off"),
        }
        assert!(held.is_empty());
    }

    #[test]
    fn holds_per_server_in_order_until_drained() {
        let mut held = Held::new(settings(2, 1 << 16));
        assert!(matches!(held.hold(1, frames(&["a"])), Hold::Later(d) if d.as_millis() == 2));
        assert!(matches!(held.hold(2, frames(&["x"])), Hold::Later(_)));
        assert!(matches!(held.hold(1, frames(&["b", "c"])), Hold::Later(_)));
        let drained: Vec<(u32, Vec<String>)> = held
            .drain()
            .into_iter()
            .map(|(id, b)| (id, texts(&b)))
            .collect();
        assert_eq!(
            drained,
            [
                (1, vec!["a".into(), "b".into(), "c".into()]),
                (2, vec!["x".into()])
            ]
        );
        assert!(held.is_empty());
    }

    #[test]
    fn passing_the_byte_bound_asks_for_a_flush() {
        let mut held = Held::new(settings(5, 4));
        assert!(matches!(held.hold(1, frames(&["ab"])), Hold::Later(_)));
        assert!(matches!(held.hold(1, frames(&["cd"])), Hold::Full));
        held.drain();
        // The count starts again after a flush.
        assert!(matches!(held.hold(1, frames(&["ef"])), Hold::Later(_)));
    }

    #[test]
    fn a_direct_batch_of_a_server_goes_after_what_it_held() {
        let mut held = Held::new(settings(5, 8));
        held.hold(1, frames(&["a", "b"]));
        held.hold(2, frames(&["x"]));
        assert_eq!(
            texts(&held.before(1, frames(&["status"]))),
            ["a", "b", "status"]
        );
        assert_eq!(texts(&held.before(1, frames(&["next"]))), ["next"]);
        // Server 1's bytes left the count: server 2's alone stay under the bound.
        assert!(matches!(held.hold(2, frames(&["yyyy"])), Hold::Later(_)));
        assert_eq!(held.drain().len(), 1);
    }
}
