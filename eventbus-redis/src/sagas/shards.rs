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

/// What is known of one shard.
#[derive(Debug, Clone, Copy)]
struct Shard {
    /// The earliest deadline known there (`-inf`: unknown, probe it).
    next: f64,
    /// Deadlines this process scheduled there so far: a probe's answer is only taken as
    /// is when none was scheduled while it ran.
    writes: u64,
}

/// The known deadline shards, by slot, with the earliest deadline each is known to hold.
#[derive(Debug, Default)]
pub(crate) struct DeadlineShards {
    /// Per slot.
    shards: BTreeMap<u16, Shard>,
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
            self.shards
                .entry(slot)
                .or_insert(Shard {
                    next: f64::NEG_INFINITY,
                    writes: 0,
                })
                .next = f64::NEG_INFINITY;
        }
        self.scanned_at = Some(at);
    }

    /// This process scheduled a deadline in `slot`'s shard.
    pub(crate) fn scheduled(&mut self, slot: u16, deadline: f64) {
        let shard = self.shards.entry(slot).or_insert(Shard {
            next: deadline,
            writes: 0,
        });
        shard.next = shard.next.min(deadline);
        shard.writes += 1;
    }

    /// Up to `max` shards that may hold deadlines due at `now`, going round from the last
    /// probe, each with the count of writes seen (for [`DeadlineShards::probed`]).
    pub(crate) fn due(&mut self, now: f64, max: usize) -> Vec<(u16, u64)> {
        let after = self.shards.range(self.cursor..);
        let before = self.shards.range(..self.cursor);
        let due: Vec<(u16, u64)> = after
            .chain(before)
            .filter(|(_, shard)| shard.next <= now)
            .map(|(&slot, shard)| (slot, shard.writes))
            .take(max)
            .collect();
        if let Some(&(last, _)) = due.last() {
            self.cursor = last.wrapping_add(1);
        }
        due
    }

    /// A probe of `slot`'s shard, begun when `writes` deadlines had been scheduled there,
    /// left its earliest deadline at `next` (`None`: empty). When this process scheduled
    /// one meanwhile, the probe may not have seen it: the shard stays as due as it was.
    pub(crate) fn probed(&mut self, slot: u16, writes: u64, next: Option<f64>) {
        match (self.shards.get_mut(&slot), next) {
            (Some(shard), Some(next)) if shard.writes != writes => {
                shard.next = shard.next.min(next);
            }
            (Some(shard), None) if shard.writes != writes => {}
            (Some(shard), Some(next)) => shard.next = next,
            (Some(_), None) => {
                self.shards.remove(&slot);
            }
            (None, Some(next)) => {
                self.shards.insert(slot, Shard { next, writes: 0 });
            }
            (None, None) => {}
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
        assert_eq!(shards.due(0.0, 2), [(1, 0), (2, 0)]);
        assert_eq!(shards.due(0.0, 2), [(3, 0), (1, 0)]);
        shards.probed(1, 0, Some(50.0));
        shards.probed(2, 0, None);
        shards.probed(3, 0, Some(10.0));
        assert_eq!(shards.due(5.0, 10), []);
        shards.scheduled(7, 4.0);
        shards.scheduled(3, 20.0);
        assert_eq!(shards.due(5.0, 10), [(7, 1)]);
        assert_eq!(shards.due(60.0, 10), [(1, 0), (3, 1), (7, 1)]);
    }

    #[test]
    fn a_deadline_scheduled_during_a_probe_is_not_forgotten() {
        let mut shards = DeadlineShards::default();
        shards.scheduled(4, 1.0);
        let [(slot, writes)] = shards.due(2.0, 10)[..] else {
            panic!("shard 4 is due");
        };
        // The probe claimed what was due and found the shard empty, while this process
        // scheduled a new deadline there.
        shards.scheduled(4, 3.0);
        shards.probed(slot, writes, None);
        assert_eq!(shards.due(3.0, 10), [(4, 2)]);
        // A probe that saw every write is believed.
        shards.probed(4, 2, None);
        assert_eq!(shards.due(100.0, 10), []);
    }
}
