//! What a sharded saga store (Redis Cluster) knows of the deadline schedule's shards: which
//! exist and when each is next due, so that claiming due deadlines probes only the shards
//! that may have some, a bounded number per call.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the shards are looked for again by `SCAN` on every master (finding the shards
/// other processes scheduled deadlines in, and deadlines they moved earlier): a deadline
/// scheduled by another process is claimed at most this long after it is due.
pub(crate) const RESCAN: Duration = Duration::from_secs(5);

/// Shards probed per claim, at most (the next claim goes on from there).
pub(crate) const MAX_PROBES: usize = 256;

/// The known deadline shards, by slot, with the earliest deadline each is known to hold.
#[derive(Debug, Default)]
pub(crate) struct DeadlineShards {
    /// Per slot, the earliest deadline known there (`-inf`: unknown, probe it).
    next: BTreeMap<u16, f64>,
    /// When the shards were last looked for.
    scanned_at: Option<Instant>,
    /// Probing goes round the slots from here, so no shard waits behind others.
    cursor: u16,
}

impl DeadlineShards {
    /// Whether the shards should be looked for again.
    pub(crate) fn needs_scan(&self, now: Instant) -> bool {
        self.scanned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RESCAN)
    }

    /// The shards found by a scan: each is probed again (its deadlines may have changed).
    pub(crate) fn scanned(&mut self, slots: impl IntoIterator<Item = u16>, at: Instant) {
        for slot in slots {
            self.next.insert(slot, f64::NEG_INFINITY);
        }
        self.scanned_at = Some(at);
    }

    /// This process scheduled a deadline in `slot`'s shard.
    pub(crate) fn scheduled(&mut self, slot: u16, deadline: f64) {
        let next = self.next.entry(slot).or_insert(deadline);
        *next = next.min(deadline);
    }

    /// Up to `max` shards that may hold deadlines due at `now`, going round from the last
    /// probe.
    pub(crate) fn due(&mut self, now: f64, max: usize) -> Vec<u16> {
        let after = self.next.range(self.cursor..);
        let before = self.next.range(..self.cursor);
        let due: Vec<u16> = after
            .chain(before)
            .filter(|(_, &next)| next <= now)
            .map(|(&slot, _)| slot)
            .take(max)
            .collect();
        if let Some(&last) = due.last() {
            self.cursor = last.wrapping_add(1);
        }
        due
    }

    /// A probe of `slot`'s shard left its earliest deadline at `next` (`None`: empty).
    pub(crate) fn probed(&mut self, slot: u16, next: Option<f64>) {
        match next {
            Some(next) => {
                self.next.insert(slot, next);
            }
            None => {
                self.next.remove(&slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_only_what_may_be_due_round_robin() {
        let mut shards = DeadlineShards::default();
        assert!(shards.needs_scan(Instant::now()));
        shards.scanned([3, 1, 2], Instant::now());
        assert!(!shards.needs_scan(Instant::now()));
        assert_eq!(shards.due(0.0, 2), [1, 2]);
        assert_eq!(shards.due(0.0, 2), [3, 1]);
        shards.probed(1, Some(50.0));
        shards.probed(2, None);
        shards.probed(3, Some(10.0));
        assert_eq!(shards.due(5.0, 10), Vec::<u16>::new());
        shards.scheduled(7, 4.0);
        shards.scheduled(3, 20.0);
        assert_eq!(shards.due(5.0, 10), [7]);
        assert_eq!(shards.due(60.0, 10), [1, 3, 7]);
    }
}
