//! The reconnect policy: a plain value with a pure `delay(attempt, jitter_sample)`, testable without a clock.

use std::time::Duration;

use crate::config::ReconnectSettings;

/// Exponential backoff with multiplicative jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    /// Fraction of the delay that is randomised: 0.2 means ±20 %.
    pub jitter: f64,
}

impl From<&ReconnectSettings> for Backoff {
    fn from(r: &ReconnectSettings) -> Self {
        Backoff {
            initial_ms: r.initial_ms,
            max_ms: r.max_ms,
            multiplier: r.multiplier,
            jitter: r.jitter,
        }
    }
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (1 = first retry). `sample` is a uniform
    /// random number in [0, 1): 0.5 gives the un-jittered delay. Never exceeds `max_ms`.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial_ms as f64 * exp).min(self.max_ms as f64);
        let factor = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        let ms = (base * factor).clamp(0.0, self.max_ms as f64);
        Duration::from_millis(ms as u64)
    }

    /// The delay after a refused login: the maximum, as the SPEC says.
    pub fn auth_failed_delay(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            initial_ms: 500,
            max_ms: 30_000,
            multiplier: 2.0,
            jitter: 0.2,
        }
    }

    #[test]
    fn grows_exponentially_without_jitter_at_midpoint() {
        let p = policy();
        let ms: Vec<u128> = (1..=8).map(|a| p.delay(a, 0.5).as_millis()).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = policy();
        assert_eq!(p.delay(3, 0.0).as_millis(), 1600);
        assert_eq!(p.delay(3, 0.999_999).as_millis(), 2399);
        for s in [0.0, 0.1, 0.5, 0.9, 0.99] {
            let d = p.delay(2, s).as_millis();
            assert!((800..=1200).contains(&d), "{d}");
        }
    }

    #[test]
    fn never_exceeds_max_even_with_jitter_or_huge_attempts() {
        let p = policy();
        assert_eq!(p.delay(u32::MAX, 0.99).as_millis(), 30_000);
        assert_eq!(p.delay(40, 0.0).as_millis(), 24_000);
        assert_eq!(p.auth_failed_delay(), Duration::from_secs(30));
    }
}
