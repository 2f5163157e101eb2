//! What one poll can't tell alone: a stream's rate (entries added per second) and whether
//! a group's lag is growing, from the samples of the last polls.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How far back samples are kept.
const WINDOW: Duration = Duration::from_secs(15);
/// A lag is "growing" only when it grew over at least this long.
const GROWTH_SPAN: Duration = Duration::from_secs(3);

/// Samples by stream key, and by stream key and group.
#[derive(Default)]
pub(crate) struct Health {
    added: HashMap<String, VecDeque<(Instant, u64)>>,
    lag: HashMap<(String, String), VecDeque<(Instant, u64)>>,
}

impl Health {
    /// Records how many entries a stream has ever had added; returns its rate per second
    /// over the window (`None` until two samples are apart).
    pub(crate) fn rate(&mut self, key: &str, added: u64, now: Instant) -> Option<f64> {
        let samples = record(self.added.entry(key.to_owned()).or_default(), added, now);
        let (then, before) = *samples.front()?;
        let span = now.duration_since(then).as_secs_f64();
        (span >= 0.5).then(|| added.saturating_sub(before) as f64 / span)
    }

    /// Records a group's lag; returns whether it has been growing: higher than it was at
    /// least [`GROWTH_SPAN`] ago, and never lower since.
    pub(crate) fn lag_growing(&mut self, key: &str, group: &str, lag: u64, now: Instant) -> bool {
        let samples = record(
            self.lag
                .entry((key.to_owned(), group.to_owned()))
                .or_default(),
            lag,
            now,
        );
        let Some(&(then, first)) = samples.front() else {
            return false;
        };
        let rising = samples
            .iter()
            .zip(samples.iter().skip(1))
            .all(|(a, b)| b.1 >= a.1);
        now.duration_since(then) >= GROWTH_SPAN && lag > first && rising
    }
}

/// Appends a sample and drops those older than the window (keeping the oldest one inside
/// it, so that a rate spans as much of the window as there is).
fn record(
    samples: &mut VecDeque<(Instant, u64)>,
    value: u64,
    now: Instant,
) -> &VecDeque<(Instant, u64)> {
    samples.push_back((now, value));
    while samples.len() > 1
        && samples
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
    {
        samples.pop_front();
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window() {
        let mut health = Health::default();
        let t0 = Instant::now();
        assert_eq!(health.rate("s", 100, t0), None);
        assert_eq!(
            health.rate("s", 150, t0 + Duration::from_secs(5)),
            Some(10.0)
        );
        assert_eq!(
            health.rate("s", 200, t0 + Duration::from_secs(10)),
            Some(10.0)
        );
    }

    #[test]
    fn lag_grows_only_when_it_rose_for_a_while() {
        let mut health = Health::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!health.lag_growing("s", "g", 5, at(0)));
        assert!(!health.lag_growing("s", "g", 6, at(1)), "too soon");
        assert!(health.lag_growing("s", "g", 9, at(4)));
        assert!(!health.lag_growing("s", "g", 7, at(5)), "fell since");
        assert!(!health.lag_growing("t", "g", 0, at(0)));
        assert!(
            !health.lag_growing("t", "g", 0, at(5)),
            "flat is not growing"
        );
    }
}
