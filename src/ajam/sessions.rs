//! HTTP manager session state that is not I/O: the `mansession_id` (128 random bits, where
//! Asterisk uses 32) and the bounded queue of events waiting for `WaitEvent`. Pure: nothing here
//! knows HTTP, actors, clocks or the registry.

use std::collections::VecDeque;

use rand::RngCore;

/// Bytes of randomness in a session id (Asterisk uses 32 bits; guessing 128 is hopeless).
const ID_BYTES: usize = 16;

/// A fresh session id: 32 lower-case hex digits from the OS generator.
pub fn new_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` has the shape of an id amihub issues (anything else is never looked up).
pub fn is_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// What `WaitEvent` takes from a session's queue.
#[derive(Debug, PartialEq, Eq)]
pub struct Drained<E> {
    pub events: Vec<E>,
    /// Events dropped (oldest first) since the last drain because the queue was full.
    pub dropped: u64,
}

/// Events waiting for `WaitEvent`, bounded by count and bytes; when full the oldest go, and
/// how many went is reported with the next drain.
pub struct EventQueue<E> {
    queue: VecDeque<(E, usize)>,
    bytes: usize,
    dropped: u64,
    max_events: usize,
    max_bytes: usize,
}

impl<E> EventQueue<E> {
    pub fn new(max_events: usize, max_bytes: usize) -> EventQueue<E> {
        EventQueue {
            queue: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Queues an event of `size` bytes, dropping the oldest while over a bound; returns how
    /// many were dropped (an event larger than the byte bound alone is dropped itself).
    pub fn push(&mut self, event: E, size: usize) -> u64 {
        let before = self.dropped;
        self.queue.push_back((event, size));
        self.bytes += size;
        while self.queue.len() > self.max_events || self.bytes > self.max_bytes {
            let Some((_, gone)) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= gone;
            self.dropped += 1;
        }
        self.dropped - before
    }

    /// Takes every waiting event, in order, each exactly once.
    pub fn drain(&mut self) -> Drained<E> {
        self.bytes = 0;
        Drained {
            events: self.queue.drain(..).map(|(e, _)| e).collect(),
            dropped: std::mem::take(&mut self.dropped),
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits (and nothing was dropped since the last drain).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.dropped == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_random_and_distinct() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert!(is_id(&a) && is_id(&b));
        assert_ne!(a, b);
        assert!(!is_id("5475a4ec"), "Asterisk's 32-bit shape is not ours");
        assert!(!is_id(&a.to_uppercase()));
        assert!(!is_id(&format!("{}\"", &a[..31])));
    }

    #[test]
    fn events_come_out_in_order_exactly_once_and_overflow_drops_the_oldest() {
        let mut q = EventQueue::new(2, 1000);
        q.push(1, 1);
        q.push(2, 1);
        assert_eq!(
            q.drain(),
            Drained {
                events: vec![1, 2],
                dropped: 0
            }
        );
        assert!(q.is_empty());
        assert_eq!(q.drain().events, Vec::<u32>::new());
        let dropped: u64 = (3..=6).map(|e| q.push(e, 1)).sum();
        assert_eq!(dropped, 2);
        assert!(!q.is_empty());
        assert_eq!(
            q.drain(),
            Drained {
                events: vec![5, 6],
                dropped: 2
            }
        );
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let mut q = EventQueue::new(100, 10);
        q.push("a", 4);
        q.push("b", 4);
        assert_eq!(q.push("c", 4), 1, "a goes");
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.push("huge", 11),
            3,
            "too big alone: everything goes, itself too"
        );
        assert_eq!(q.len(), 0);
        assert_eq!(q.drain().dropped, 4);
    }
}
