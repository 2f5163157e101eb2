//! Exponential backoff with jitter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff: `initial × multiplier^(attempt-1)`, capped at `max`, with up to 50%
/// random jitter taken off so that many consumers don't retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Growth factor per attempt (at least 1).
    pub multiplier: f64,
    /// Whether to randomise delays (between 50% and 100% of the computed value).
    pub jitter: bool,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 10 s, with jitter.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl Backoff {
    /// A backoff from `initial` to `max`, doubling, with jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            ..Backoff::default()
        }
    }

    /// A constant delay without jitter (useful in tests).
    pub fn constant(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            max: delay,
            multiplier: 1.0,
            jitter: false,
        }
    }

    /// The delay before retry number `attempt` (1 = after the first failure).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let capped = base.min(self.max.as_secs_f64()).max(0.0);
        let factor = if self.jitter {
            0.5 + 0.5 * unit_random()
        } else {
            1.0
        };
        Duration::from_secs_f64(capped * factor)
    }
}

/// A number in `[0, 1)`; only used for jitter, so the clock's nanoseconds are random enough.
fn unit_random() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Scramble the low bits (splitmix-style) so consecutive calls differ.
    let mut x = u64::from(nanos).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x % 1_000_000) as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_caps() {
        let b = Backoff {
            jitter: false,
            ..Backoff::new(Duration::from_millis(10), Duration::from_millis(70))
        };
        assert_eq!(b.delay(1), Duration::from_millis(10));
        assert_eq!(b.delay(2), Duration::from_millis(20));
        assert_eq!(b.delay(3), Duration::from_millis(40));
        assert_eq!(b.delay(4), Duration::from_millis(70));
        assert_eq!(b.delay(100), Duration::from_millis(70));
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..6 {
            let full = Backoff { jitter: false, ..b }.delay(attempt);
            let d = b.delay(attempt);
            assert!(d <= full && d >= full / 2, "{d:?} vs {full:?}");
        }
    }
}
