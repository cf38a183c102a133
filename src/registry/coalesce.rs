//! Write coalescing (`[fanout] flush_interval_ms`, Centrifugo's write delay): broadcast frames
//! are fanned out at most once per interval, so every session gets one wake-up and one socket
//! write per interval instead of one per PBX read. A frame that arrives when the last flush is
//! an interval old or more goes out at once (with everything held before it); one that arrives
//! sooner is held until the interval is up, or until the held frames pass `flush_bytes`. So a
//! quiet PBX's events are not delayed at all, and a busy one's wait less than an interval.
//! Frames keep their order (a server's held frames always go out before anything else of that
//! server), and nothing is stamped or kept for resume before it is fanned out, so a session
//! joining or resuming meanwhile gets them live.
//!
//! Pure state with no actors and no timers: the registry arms the timer and decides when to
//! flush early (before any frame it sends a session directly, and before a session's view of
//! the fan-out changes).

use std::time::{Duration, Instant};

use crate::config::{FanoutSettings, MAX_FLUSH_INTERVAL_MS};

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
    /// Held; flush once `Duration` has passed (arm a timer if none is armed).
    Later(Duration),
    /// The last flush is an interval old, or the held frames passed `flush_bytes`: flush
    /// everything now.
    Full,
}

/// Broadcast frames waiting for the next flush, per server, in arrival order.
pub struct Held<T> {
    settings: FanoutSettings,
    servers: Vec<(u32, Vec<T>)>,
    bytes: usize,
    /// When the last flush ([`Held::drain`]) was; None before the first.
    flushed: Option<Instant>,
}

impl<T: Weight> Held<T> {
    pub fn new(settings: FanoutSettings) -> Held<T> {
        Held {
            settings,
            servers: Vec::new(),
            bytes: 0,
            flushed: None,
        }
    }

    /// The interval between flushes to `sessions` sessions: `flush_interval_ms`, or longer
    /// so that sessions × flushes per second stays within `session_flushes_per_second`, but
    /// never past [`MAX_FLUSH_INTERVAL_MS`].
    pub fn interval(&self, sessions: usize) -> Duration {
        let fixed = Duration::from_millis(self.settings.flush_interval_ms);
        let budget = self.settings.session_flushes_per_second;
        if budget == 0 {
            return fixed;
        }
        let scaled = Duration::from_micros((sessions as u64).saturating_mul(1_000_000) / budget);
        fixed
            .max(scaled)
            .min(Duration::from_millis(MAX_FLUSH_INTERVAL_MS))
    }

    /// Holds a server's batch that arrived at `now` until the next flush (the interval for
    /// `sessions` sessions after the last one), or says to flush now; hands it back when
    /// coalescing is off.
    pub fn hold(&mut self, server: u32, batch: Vec<T>, now: Instant, sessions: usize) -> Hold<T> {
        if self.settings.flush_interval_ms == 0 {
            return Hold::Now(batch);
        }
        self.bytes += batch.iter().map(Weight::weight).sum::<usize>();
        match self.servers.iter_mut().find(|(id, _)| *id == server) {
            Some((_, held)) => held.extend(batch),
            None => self.servers.push((server, batch)),
        }
        let interval = self.interval(sessions);
        let wait = self.flushed.map_or(Duration::ZERO, |at| {
            interval.saturating_sub(now.saturating_duration_since(at))
        });
        if self.bytes >= self.settings.flush_bytes || wait.is_zero() {
            Hold::Full
        } else {
            Hold::Later(wait)
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

    /// Everything held, per server, flushed at `now`; nothing is held afterwards.
    pub fn drain(&mut self, now: Instant) -> Vec<(u32, Vec<T>)> {
        self.bytes = 0;
        self.flushed = Some(now);
        std::mem::take(&mut self.servers)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// The delay to give the flush timer so that it fires `wait` from now on average. tokio's
/// timer wheel rounds a deadline up to its next millisecond tick and then wakes up to a
/// millisecond after it, so a timer asked for 3.3 ms fires after 4–5 ms; asked for a
/// millisecond less, it fires within half a millisecond of `wait`.
pub fn timer_delay(wait: Duration) -> Duration {
    wait.saturating_sub(TIMER_LATENESS)
}

/// How late, about, tokio's timer fires after the deadline it is given.
const TIMER_LATENESS: Duration = Duration::from_millis(1);

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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A coalescer that flushed at `t0` (so what arrives then is held).
    fn flushed_at(t0: Instant, flush_interval_ms: u64, flush_bytes: usize) -> Held<Outgoing> {
        let mut held = Held::new(FanoutSettings {
            flush_interval_ms,
            flush_bytes,
            session_flushes_per_second: 0,
        });
        assert!(held.drain(t0).is_empty());
        held
    }

    #[test]
    fn off_hands_every_batch_back() {
        let t0 = Instant::now();
        let mut held = flushed_at(t0, 0, 1 << 16);
        match held.hold(1, frames(&["a", "b"]), t0, 1) {
            Hold::Now(batch) => assert_eq!(texts(&batch), ["a", "b"]),
            _ => panic!("coalescing is off"),
        }
        assert!(held.is_empty());
    }

    #[test]
    fn a_frame_after_a_quiet_interval_goes_out_at_once_and_the_next_waits_out_the_interval() {
        let t0 = Instant::now();
        let mut held = Held::new(FanoutSettings {
            flush_interval_ms: 3,
            flush_bytes: 1 << 16,
            ..FanoutSettings::default()
        });
        // Nothing flushed yet: the first frame is not delayed.
        assert!(matches!(held.hold(1, frames(&["a"]), t0, 1), Hold::Full));
        assert_eq!(held.drain(t0).len(), 1);
        // One millisecond after that flush: held for the two left of the interval.
        assert!(
            matches!(held.hold(1, frames(&["b"]), t0 + ms(1), 1), Hold::Later(d) if d == ms(2))
        );
        assert!(
            matches!(held.hold(1, frames(&["c"]), t0 + ms(2), 1), Hold::Later(d) if d == ms(1))
        );
        // The interval is up when the next frame arrives: everything held goes with it.
        assert!(matches!(
            held.hold(1, frames(&["d"]), t0 + ms(3), 1),
            Hold::Full
        ));
        let drained = held.drain(t0 + ms(3));
        assert_eq!(texts(&drained[0].1), ["b", "c", "d"]);
        // Long after the last flush: at once again.
        assert!(matches!(
            held.hold(1, frames(&["e"]), t0 + ms(50), 1),
            Hold::Full
        ));
    }

    #[test]
    fn the_interval_grows_with_the_sessions_past_the_flush_budget() {
        let held = Held::<Outgoing>::new(FanoutSettings::default());
        // 35,000 session flushes per second: 2 ms serves 70 sessions.
        assert_eq!(held.interval(1), ms(2));
        assert_eq!(held.interval(70), ms(2));
        assert_eq!(held.interval(100), Duration::from_micros(2_857));
        assert_eq!(held.interval(1000), Duration::from_micros(28_571));
        assert_eq!(
            held.interval(1_000_000),
            ms(MAX_FLUSH_INTERVAL_MS),
            "capped"
        );
        let fixed = Held::<Outgoing>::new(FanoutSettings {
            session_flushes_per_second: 0,
            ..FanoutSettings::default()
        });
        assert_eq!(fixed.interval(1000), ms(2), "0 keeps the interval fixed");
    }

    #[test]
    fn with_1500_sessions_a_frame_waits_out_the_longer_interval() {
        let t0 = Instant::now();
        let mut held = Held::new(FanoutSettings::default());
        assert!(held.drain(t0).is_empty());
        let wait = Duration::from_micros(42_857) - ms(10);
        assert!(
            matches!(held.hold(1, frames(&["a"]), t0 + ms(10), 1500), Hold::Later(d) if d == wait)
        );
        assert!(
            matches!(held.hold(1, frames(&["b"]), t0 + ms(10), 1), Hold::Full),
            "one session: the 2 ms interval is long up"
        );
    }

    #[test]
    fn the_timer_is_asked_a_millisecond_early_for_its_lateness() {
        assert_eq!(
            timer_delay(Duration::from_micros(2_857)),
            Duration::from_micros(1_857)
        );
        assert_eq!(timer_delay(ms(1)), Duration::ZERO);
        assert_eq!(timer_delay(Duration::from_micros(300)), Duration::ZERO);
    }

    #[test]
    fn holds_per_server_in_order_until_drained() {
        let t0 = Instant::now();
        let mut held = flushed_at(t0, 2, 1 << 16);
        assert!(matches!(held.hold(1, frames(&["a"]), t0, 1), Hold::Later(d) if d == ms(2)));
        assert!(matches!(
            held.hold(2, frames(&["x"]), t0, 1),
            Hold::Later(_)
        ));
        assert!(matches!(
            held.hold(1, frames(&["b", "c"]), t0, 1),
            Hold::Later(_)
        ));
        let drained: Vec<(u32, Vec<String>)> = held
            .drain(t0)
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
        let t0 = Instant::now();
        let mut held = flushed_at(t0, 5, 4);
        assert!(matches!(
            held.hold(1, frames(&["ab"]), t0, 1),
            Hold::Later(_)
        ));
        assert!(matches!(held.hold(1, frames(&["cd"]), t0, 1), Hold::Full));
        held.drain(t0);
        // The count starts again after a flush.
        assert!(matches!(
            held.hold(1, frames(&["ef"]), t0, 1),
            Hold::Later(_)
        ));
    }

    #[test]
    fn a_direct_batch_of_a_server_goes_after_what_it_held() {
        let t0 = Instant::now();
        let mut held = flushed_at(t0, 5, 8);
        held.hold(1, frames(&["a", "b"]), t0, 1);
        held.hold(2, frames(&["x"]), t0, 1);
        assert_eq!(
            texts(&held.before(1, frames(&["status"]))),
            ["a", "b", "status"]
        );
        assert_eq!(texts(&held.before(1, frames(&["next"]))), ["next"]);
        // Server 1's bytes left the count: server 2's alone stay under the bound.
        assert!(matches!(
            held.hold(2, frames(&["yyyy"]), t0, 1),
            Hold::Later(_)
        ));
        assert_eq!(held.drain(t0).len(), 1);
    }
}
