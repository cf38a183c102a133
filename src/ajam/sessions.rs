//! HTTP manager sessions (the `mansession_id` cookie): who is logged in, and each session's
//! bounded queue of events waiting for `WaitEvent`. Pure state: time comes in as an argument and
//! nothing here knows HTTP, actors or the registry.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::RngCore;

/// Bytes of randomness in a session id (Asterisk uses 32 bits; guessing 128 is hopeless).
const ID_BYTES: usize = 16;

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("too many HTTP manager sessions ({0})")]
    Full(usize),
}

/// What `WaitEvent` takes from a session's queue.
#[derive(Debug, PartialEq, Eq)]
pub struct Drained<E> {
    pub events: Vec<E>,
    /// Events dropped (oldest first) since the last drain because the queue was full.
    pub dropped: u64,
}

struct Entry<E> {
    user: String,
    queue: VecDeque<E>,
    dropped: u64,
    last_seen: Instant,
}

/// Every HTTP manager session, with its bounds.
pub struct SessionTable<E> {
    map: HashMap<String, Entry<E>>,
    max_sessions: usize,
    queue_max: usize,
    idle: Duration,
}

impl<E> SessionTable<E> {
    /// `idle` is Asterisk's `httptimeout`; `queue_max` bounds each session's waiting events.
    pub fn new(max_sessions: usize, queue_max: usize, idle: Duration) -> SessionTable<E> {
        SessionTable {
            map: HashMap::new(),
            max_sessions,
            queue_max: queue_max.max(1),
            idle,
        }
    }

    /// Starts a session for a logged-in user and returns its new random id.
    pub fn create(&mut self, user: &str, now: Instant) -> Result<String, SessionError> {
        self.expire(now);
        if self.map.len() >= self.max_sessions {
            return Err(SessionError::Full(self.max_sessions));
        }
        let id = loop {
            let mut bytes = [0u8; ID_BYTES];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if !self.map.contains_key(&id) {
                break id;
            }
        };
        self.map.insert(
            id.clone(),
            Entry {
                user: user.to_owned(),
                queue: VecDeque::new(),
                dropped: 0,
                last_seen: now,
            },
        );
        Ok(id)
    }

    /// The user of a live session, refreshing its idle timer; `None` if unknown or expired.
    pub fn touch(&mut self, id: &str, now: Instant) -> Option<&str> {
        let idle = self.idle;
        let entry = self.map.get_mut(id)?;
        if now.saturating_duration_since(entry.last_seen) >= idle {
            self.map.remove(id);
            return None;
        }
        entry.last_seen = now;
        Some(&self.map.get(id)?.user)
    }

    /// Ends a session (Logoff); whether it existed.
    pub fn remove(&mut self, id: &str) -> bool {
        self.map.remove(id).is_some()
    }

    /// Queues an event for one session, dropping its oldest when full.
    pub fn push(&mut self, id: &str, event: E) {
        let Some(entry) = self.map.get_mut(id) else {
            return;
        };
        if entry.queue.len() >= self.queue_max {
            entry.queue.pop_front();
            entry.dropped += 1;
        }
        entry.queue.push_back(event);
    }

    /// Ids of the live sessions of one user (to push what that user may see).
    pub fn ids(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.map
            .iter()
            .map(|(id, e)| (id.as_str(), e.user.as_str()))
    }

    /// Takes every waiting event of a session, in order, each exactly once.
    pub fn drain(&mut self, id: &str) -> Option<Drained<E>> {
        let entry = self.map.get_mut(id)?;
        Some(Drained {
            events: entry.queue.drain(..).collect(),
            dropped: std::mem::take(&mut entry.dropped),
        })
    }

    /// Removes sessions idle for `idle` or longer; returns how many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        let idle = self.idle;
        self.map
            .retain(|_, e| now.saturating_duration_since(e.last_seen) < idle);
        before - self.map.len()
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SessionTable<u32> {
        SessionTable::new(3, 2, Duration::from_secs(60))
    }

    #[test]
    fn ids_are_long_random_and_distinct() {
        let mut t = table();
        let now = Instant::now();
        let a = t.create("ann", now).expect("a");
        let b = t.create("ann", now).expect("b");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(t.touch(&a, now), Some("ann"));
        assert_eq!(t.touch("00", now), None);
    }

    #[test]
    fn events_come_out_in_order_exactly_once_and_overflow_drops_the_oldest() {
        let mut t = table();
        let now = Instant::now();
        let id = t.create("ann", now).expect("id");
        t.push(&id, 1);
        t.push(&id, 2);
        assert_eq!(
            t.drain(&id),
            Some(Drained {
                events: vec![1, 2],
                dropped: 0
            })
        );
        assert_eq!(
            t.drain(&id),
            Some(Drained {
                events: vec![],
                dropped: 0
            })
        );
        for e in 3..=6 {
            t.push(&id, e);
        }
        assert_eq!(
            t.drain(&id),
            Some(Drained {
                events: vec![5, 6],
                dropped: 2
            })
        );
    }

    #[test]
    fn idle_sessions_expire_and_the_table_is_bounded() {
        let mut t = table();
        let start = Instant::now();
        let kept = t.create("a", start).expect("a");
        let _gone = t.create("b", start).expect("b");
        t.create("c", start).expect("c");
        assert_eq!(t.create("d", start), Err(SessionError::Full(3)));
        let later = start + Duration::from_secs(30);
        assert!(t.touch(&kept, later).is_some());
        let after = start + Duration::from_secs(61);
        assert_eq!(t.expire(after), 2);
        assert_eq!(t.len(), 1);
        assert!(t.create("d", after).is_ok());
        assert_eq!(t.touch(&kept, later + Duration::from_secs(60)), None);
    }

    #[test]
    fn logoff_ends_a_session() {
        let mut t = table();
        let now = Instant::now();
        let id = t.create("a", now).expect("id");
        assert!(t.remove(&id));
        assert!(!t.remove(&id));
        assert_eq!(t.drain(&id), None);
    }
}
