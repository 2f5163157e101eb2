//! What this consumer holds: every entry it read (or recovered, or claimed) and has not
//! settled yet, with how long its hold is safe, and the heartbeat that renews the holds.
//!
//! Another consumer can take an entry only once it has been idle for `claim_idle`. Every
//! read, claim and renewal resets that idle time, so a hold is safe until `claim_idle` after
//! the command that took or renewed it was *sent* (the server acted on it no earlier). The
//! heartbeat renews every hold every third of `claim_idle`; an entry whose hold is stale is
//! renewed before its handler starts and before it is acknowledged, and an entry the server
//! says is no longer ours is neither started nor acknowledged. This assumes every consumer
//! of the group uses the same `claim_idle` (a shorter one could take entries early).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{InflightKey, Runner};
use crate::bus::stats::SubscriptionStats;
use crate::envelope::EntryId;
use crate::transport::Topic;

/// Ids per renewal call.
const RENEW_CHUNK: usize = 500;

/// One entry held.
struct Held {
    /// Which dispatch of the entry this is: a job of an older one is stale.
    generation: u64,
    /// Until when no other consumer can have taken it.
    until: Instant,
    /// Its delivery count on the server, as last known.
    count: u32,
    /// Whether `count` includes a delivery of this dispatch that has not ended with a
    /// verdict (a fresh read, or an attempt still running): given back, it is not counted.
    charged: bool,
    /// Its acknowledgement is on its way: the heartbeat leaves it alone (the server may
    /// already have acknowledged it, which a renewal would misread as a loss).
    settling: bool,
}

impl Held {
    /// The count to leave when it is given back.
    fn given_back(&self) -> u32 {
        if self.charged {
            self.count.saturating_sub(1)
        } else {
            self.count
        }
    }
}

/// The entries held, by key.
#[derive(Default)]
pub(super) struct Holdings {
    held: HashMap<InflightKey, Held>,
    next_generation: u64,
}

impl Holdings {
    /// Starts holding an entry; `None` when it is held already (a reclaim or recovery of an
    /// entry this consumer is still working on).
    pub(super) fn insert(
        &mut self,
        key: InflightKey,
        delivery: &crate::transport::Delivery,
        counted: bool,
        until: Instant,
    ) -> Option<u64> {
        if self.held.contains_key(&key) {
            return None;
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        self.held.insert(
            key,
            Held {
                generation,
                until,
                count: delivery.delivery_count,
                charged: counted,
                settling: false,
            },
        );
        Some(generation)
    }

    /// Until when the hold of this dispatch is safe; `None` when it is no longer held.
    pub(super) fn until(&self, key: &InflightKey, generation: u64) -> Option<Instant> {
        self.held
            .get(key)
            .filter(|h| h.generation == generation)
            .map(|h| h.until)
    }

    /// Records a renewal.
    pub(super) fn renewed(&mut self, key: &InflightKey, generation: u64, until: Instant) {
        if let Some(h) = self
            .held
            .get_mut(key)
            .filter(|h| h.generation == generation)
        {
            h.until = h.until.max(until);
        }
    }

    /// Records that an attempt started and was counted: the entry's count is now `count`.
    pub(super) fn charged(&mut self, key: &InflightKey, generation: u64, count: u32) {
        if let Some(h) = self
            .held
            .get_mut(key)
            .filter(|h| h.generation == generation)
        {
            h.count = count;
            h.charged = true;
        }
    }

    /// Records that the running attempt ended with a verdict (a failure that counts).
    pub(super) fn verdict(&mut self, key: &InflightKey, generation: u64) {
        if let Some(h) = self
            .held
            .get_mut(key)
            .filter(|h| h.generation == generation)
        {
            h.charged = false;
        }
    }

    /// Stops holding one dispatch of an entry to give it back: its key and the delivery
    /// count to leave on the server.
    pub(super) fn take_back(
        &mut self,
        key: &InflightKey,
        generation: u64,
    ) -> Option<(InflightKey, u32)> {
        if self
            .held
            .get(key)
            .is_none_or(|h| h.generation != generation)
        {
            return None;
        }
        self.held
            .remove_entry(key)
            .map(|(k, h)| (k, h.given_back()))
    }

    /// Stops holding everything, to give it all back (at shutdown).
    pub(super) fn take_all_back(&mut self) -> Vec<(InflightKey, u32)> {
        self.held
            .drain()
            .map(|(k, h)| {
                let count = h.given_back();
                (k, count)
            })
            .collect()
    }

    /// Marks this dispatch of an entry as being acknowledged (or not any more).
    pub(super) fn set_settling(&mut self, key: &InflightKey, generation: u64, settling: bool) {
        if let Some(h) = self
            .held
            .get_mut(key)
            .filter(|h| h.generation == generation)
        {
            h.settling = settling;
        }
    }

    fn is_settling(&self, key: &InflightKey, generation: u64) -> bool {
        self.held
            .get(key)
            .is_some_and(|h| h.generation == generation && h.settling)
    }

    /// Stops holding this dispatch of an entry (settled, lost or given back).
    pub(super) fn release(&mut self, key: &InflightKey, generation: u64) {
        if self
            .held
            .get(key)
            .is_some_and(|h| h.generation == generation)
        {
            self.held.remove(key);
        }
    }

    /// Entries held and not being acknowledged, as `(key, generation)`.
    fn snapshot(&self) -> Vec<(InflightKey, u64)> {
        self.held
            .iter()
            .filter(|(_, h)| !h.settling)
            .map(|(k, h)| (k.clone(), h.generation))
            .collect()
    }
}

/// How often holds are renewed: a third of `claim_idle`.
pub(super) fn renew_every(claim_idle: Duration) -> Duration {
    claim_idle / 3
}

/// Whether a hold is fresh enough to start or acknowledge the entry without renewing it.
pub(super) fn is_fresh(until: Instant, claim_idle: Duration) -> bool {
    until > Instant::now() + renew_every(claim_idle)
}

/// The outcome of renewing holds.
pub(super) enum Renewal {
    /// Still ours; the hold is safe for another `claim_idle`.
    Held,
    /// Not ours any more: don't start it, don't acknowledge it.
    Lost,
}

/// Renews some holds of one topic: returns, for each `(key, generation, id)`, whether it is
/// still held. Lost ones are released.
pub(super) async fn renew(
    runner: &Runner,
    topic: &Topic,
    entries: &[(InflightKey, u64, EntryId)],
) -> crate::Result<Vec<Renewal>> {
    let mut out = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(RENEW_CHUNK) {
        let sent = Instant::now();
        let ids: Vec<EntryId> = chunk.iter().map(|(_, _, id)| id.clone()).collect();
        let lost = runner.consumer.renew(topic, &ids).await?;
        SubscriptionStats::add(&runner.stats.renewed, (ids.len() - lost.len()) as u64);
        let until = sent + runner.options.claim_idle;
        let mut holdings = runner.holdings();
        for (key, generation, id) in chunk {
            if lost.contains(id) {
                if holdings.until(key, *generation).is_none()
                    || holdings.is_settling(key, *generation)
                {
                    // Settled meanwhile (acknowledged or dead-lettered here): not lost.
                    out.push(Renewal::Lost);
                    continue;
                }
                holdings.release(key, *generation);
                SubscriptionStats::add(&runner.stats.lost, 1);
                tracing::warn!(
                    topic = %topic, id = %id, group = %runner.spec.group,
                    consumer = %runner.spec.consumer,
                    "entry taken over by another consumer (this one's hold lapsed); it will not be handled or acknowledged here"
                );
                out.push(Renewal::Lost);
            } else {
                holdings.renewed(key, *generation, until);
                out.push(Renewal::Held);
            }
        }
    }
    Ok(out)
}

/// Renews every hold each third of `claim_idle`, until the acker stopped.
pub(super) async fn heartbeat(runner: Arc<Runner>) {
    let every = renew_every(runner.options.claim_idle);
    loop {
        tokio::select! {
            _ = runner.ack_stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let snapshot = runner.holdings().snapshot();
        let mut by_topic: HashMap<Topic, Vec<(InflightKey, u64, EntryId)>> = HashMap::new();
        for (key, generation) in snapshot {
            let (topic, id) = runner.entry_of(&key);
            by_topic
                .entry(topic)
                .or_default()
                .push((key, generation, id));
        }
        for (topic, entries) in by_topic {
            if let Err(e) = renew(&runner, &topic, &entries).await {
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                tracing::warn!(topic = %topic, error = %e, count = entries.len(), "cannot renew held entries; retrying");
            }
        }
    }
}
