//! Failed authentications per client address, Asterisk's `authlimit` idea: after
//! [`MAX_FAILURES`] failures within [`WINDOW`], an address is refused (429) until the window
//! ends, without any password being checked. IPv6 clients count per /64. The table is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures an address may have within one window.
pub const MAX_FAILURES: u32 = 20;
/// How long failures are remembered, counted from the first of a window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; the oldest windows go first.
const MAX_TRACKED: usize = 4096;

/// Failure counts per address.
#[derive(Default)]
pub struct FailureLimiter {
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The key an address counts under (IPv6 by /64; IPv4-mapped as IPv4).
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

impl FailureLimiter {
    /// How long `ip` stays refused, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = map.get(&key(ip))?;
        let end = *start + WINDOW;
        (*n >= MAX_FAILURES && end > now).then(|| end - now)
    }

    /// Counts one failure of `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(ip);
        if map.len() >= MAX_TRACKED && !map.contains_key(&k) {
            map.retain(|_, (start, _)| *start + WINDOW > now);
            if map.len() >= MAX_TRACKED {
                let oldest = map.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k);
                if let Some(o) = oldest {
                    map.remove(&o);
                }
            }
        }
        let entry = map.entry(k).or_insert((now, 0));
        if entry.0 + WINDOW <= now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let l = FailureLimiter::default();
        let t = Instant::now();
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(l.blocked(a, t), None);
            l.failed(a, t);
        }
        assert_eq!(l.blocked(a, t), Some(WINDOW));
        assert_eq!(l.blocked("203.0.113.6".parse().unwrap(), t), None);
        assert_eq!(l.blocked(a, t + WINDOW), None);
        l.failed(a, t + WINDOW);
        assert_eq!(l.blocked(a, t + WINDOW), None, "a new window starts afresh");
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            l.failed(v6, t);
        }
        assert!(l
            .blocked("2001:db8:1:2::ffff".parse().unwrap(), t)
            .is_some());
    }
}
