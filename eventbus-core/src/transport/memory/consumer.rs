//! The consumer of [`MemoryTransport`]: `XREADGROUP`, `XCLAIM`, `XAUTOCLAIM`, `XACK`.

use std::ops::Bound::{Excluded, Unbounded};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{check_spec, MemoryTransport};
use crate::envelope::EntryId;
use crate::error::{Error, Result};
use crate::memory::streams::{group_missing, idle, StreamId};
use crate::transport::{Claimed, ConsumerSpec, DeadLetterReason, Delivery, StreamConsumer, Topic};

/// How many PEL entries `claim_idle` examines per entry it may return (Redis' `XAUTOCLAIM`
/// attempts factor).
const CLAIM_ATTEMPTS_FACTOR: usize = 10;

/// A consumer of a [`MemoryTransport`] group, made by
/// [`StreamTransport::consumer`](crate::transport::StreamTransport::consumer).
#[derive(Debug, Clone)]
pub struct MemoryConsumer {
    transport: MemoryTransport,
    spec: ConsumerSpec,
}

impl MemoryConsumer {
    pub(super) fn new(transport: MemoryTransport, spec: ConsumerSpec) -> Result<Self> {
        check_spec(&spec)?;
        Ok(MemoryConsumer { transport, spec })
    }

    /// What this consumer is.
    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    /// One non-blocking `XREADGROUP … >` over all topics, under one lock.
    fn read_now(&self, count: usize) -> Result<Vec<Delivery>> {
        let mut state = self.transport.shared.lock();
        let (group, consumer) = (&self.spec.group, &self.spec.consumer);
        // Like Redis, fail before reading anything when one of the groups is missing.
        for topic in &self.spec.topics {
            state.stream_of_group(topic, group)?;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for topic in &self.spec.topics {
            let stream = state.stream_of_group(topic, group)?;
            stream.read_new(topic, group, consumer, count, now, &mut out)?;
        }
        Ok(out)
    }
}

#[async_trait]
impl StreamConsumer for MemoryConsumer {
    /// Reads up to `count` entries per topic (`COUNT` applies per stream, as in Redis; 0
    /// means no limit). A zero `block` does not wait (unlike Redis' `BLOCK 0`, which waits
    /// forever).
    async fn read(&self, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now().checked_add(block);
        loop {
            // Register for wake-ups before looking, so an append in between is not missed.
            let appended = self.transport.shared.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let out = self.read_now(count)?;
            if !out.is_empty() || block.is_zero() {
                return Ok(out);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, appended).await.is_err() {
                        return Ok(out);
                    }
                }
                None => appended.await,
            }
        }
    }

    async fn recover_own(&self, topic: &Topic, after: &str, count: usize) -> Result<Claimed> {
        if count == 0 {
            return Err(Error::Config("recover_own: count must be > 0".to_owned()));
        }
        let after = StreamId::parse(after)?;
        let mut state = self.transport.shared.lock();
        let (group, consumer) = (&self.spec.group, &self.spec.consumer);
        let stream = state.stream_of_group(topic, group)?;
        let now = Instant::now();
        let own: Vec<StreamId> = stream
            .groups
            .get(group)
            .map(|g| {
                g.pel
                    .range((Excluded(after), Unbounded))
                    .filter(|(_, p)| &p.consumer == consumer)
                    .map(|(id, _)| *id)
                    .take(count)
                    .collect()
            })
            .unwrap_or_default();
        let mut recovered = Claimed::default();
        for &id in &own {
            match stream.claim(topic, group, id, consumer, now, false) {
                Some(delivery) => recovered.deliveries.push(delivery),
                None => recovered.deleted.push(id.to_string()),
            }
        }
        recovered.next_cursor = match own.last() {
            Some(last) if own.len() == count => last.to_string(),
            _ => StreamId::ZERO.to_string(),
        };
        if let Some(g) = stream.groups.get_mut(group) {
            g.touch(consumer, now);
        }
        Ok(recovered)
    }

    async fn claim_idle(
        &self,
        topic: &Topic,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<Claimed> {
        if count == 0 {
            return Err(Error::Config("claim_idle: count must be > 0".to_owned()));
        }
        let start = StreamId::parse(cursor)?;
        let mut state = self.transport.shared.lock();
        let (group, consumer) = (&self.spec.group, &self.spec.consumer);
        let stream = state.stream_of_group(topic, group)?;
        let now = Instant::now();
        let candidates: Vec<(StreamId, Instant)> = stream
            .groups
            .get(group)
            .map(|g| {
                g.pel
                    .range(start..)
                    .map(|(id, p)| (*id, p.last_delivery))
                    .collect()
            })
            .unwrap_or_default();
        let mut claimed = Claimed::default();
        let (mut attempts, mut remaining) = (count.saturating_mul(CLAIM_ATTEMPTS_FACTOR), count);
        let mut examined = 0;
        // As `XAUTOCLAIM` in Redis 7.0: deleted entries are dropped whatever their idle time
        // and count towards `count`; entries not idle enough only use up attempts.
        for &(id, last_delivery) in &candidates {
            if attempts == 0 || remaining == 0 {
                break;
            }
            attempts -= 1;
            examined += 1;
            if !stream.entries.contains_key(&id) {
                if let Some(g) = stream.groups.get_mut(group) {
                    g.pel.remove(&id);
                }
                claimed.deleted.push(id.to_string());
                remaining -= 1;
                continue;
            }
            if idle(now, last_delivery) < min_idle {
                continue;
            }
            claimed
                .deliveries
                .extend(stream.claim(topic, group, id, consumer, now, false));
            remaining -= 1;
        }
        claimed.next_cursor = candidates
            .get(examined)
            .map_or(StreamId::ZERO, |(id, _)| *id)
            .to_string();
        if let Some(g) = stream.groups.get_mut(group) {
            g.touch(consumer, now);
        }
        Ok(claimed)
    }

    async fn redeliver(&self, topic: &Topic, id: &str) -> Result<Option<Delivery>> {
        let id = StreamId::parse(id)?;
        let mut state = self.transport.shared.lock();
        let (group, consumer) = (&self.spec.group, &self.spec.consumer);
        let stream = state.stream_of_group(topic, group)?;
        let owned = stream
            .groups
            .get(group)
            .and_then(|g| g.pel.get(&id))
            .is_some_and(|p| &p.consumer == consumer);
        if !owned {
            return Ok(None);
        }
        let now = Instant::now();
        let delivery = stream.claim(topic, group, id, consumer, now, true);
        if let Some(g) = stream.groups.get_mut(group) {
            g.touch(consumer, now);
        }
        Ok(delivery)
    }

    async fn renew(&self, topic: &Topic, ids: &[EntryId]) -> Result<Vec<EntryId>> {
        let parsed = ids
            .iter()
            .map(|id| StreamId::parse(id))
            .collect::<Result<Vec<_>>>()?;
        let mut state = self.transport.shared.lock();
        let (group, consumer) = (&self.spec.group, &self.spec.consumer);
        let stream = state.stream_of_group(topic, group)?;
        let now = Instant::now();
        let mut lost = Vec::new();
        for (id, text) in parsed.into_iter().zip(ids) {
            let mine = stream
                .groups
                .get(group)
                .and_then(|g| g.pel.get(&id))
                .is_some_and(|p| &p.consumer == consumer);
            if !mine
                || stream
                    .claim(topic, group, id, consumer, now, false)
                    .is_none()
            {
                lost.push(text.clone());
            }
        }
        if let Some(g) = stream.groups.get_mut(group) {
            g.touch(consumer, now);
        }
        Ok(lost)
    }

    async fn give_back(
        &self,
        topic: &Topic,
        entries: &[(EntryId, u32)],
        idle_for: Duration,
    ) -> Result<()> {
        let parsed = entries
            .iter()
            .map(|(id, count)| Ok((StreamId::parse(id)?, *count)))
            .collect::<Result<Vec<_>>>()?;
        let mut state = self.transport.shared.lock();
        let (group, consumer) = (&self.spec.group, &self.spec.consumer);
        let stream = state.stream_of_group(topic, group)?;
        let now = Instant::now();
        let since = now.checked_sub(idle_for).unwrap_or(now);
        if let Some(g) = stream.groups.get_mut(group) {
            for (id, count) in parsed {
                if let Some(p) = g.pel.get_mut(&id).filter(|p| &p.consumer == consumer) {
                    p.delivery_count = count;
                    p.last_delivery = since;
                }
            }
        }
        Ok(())
    }

    /// Unknown ids, and topics whose stream or group is missing, are ignored (like `XACK`).
    async fn ack(&self, acks: &[(Topic, Vec<EntryId>)]) -> Result<()> {
        let mut ids = Vec::with_capacity(acks.len());
        for (topic, entry_ids) in acks {
            let parsed = entry_ids
                .iter()
                .map(|id| StreamId::parse(id))
                .collect::<Result<Vec<_>>>()?;
            ids.push((topic, parsed));
        }
        let mut state = self.transport.shared.lock();
        for (topic, parsed) in ids {
            let group = state
                .streams
                .get_mut(topic)
                .and_then(|s| s.groups.get_mut(&self.spec.group));
            if let Some(g) = group {
                for id in parsed {
                    g.pel.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// Records the dead letter even when the group or the entry is gone (the letter then has
    /// no event and no fields). See the [module docs](super) for what `fields` holds.
    async fn dead_letter(&self, topic: &Topic, id: &str, reason: &DeadLetterReason) -> Result<()> {
        let id = StreamId::parse(id)?;
        self.transport
            .dead_letter(topic, &self.spec.group, &self.spec.consumer, id, reason);
        Ok(())
    }

    async fn remove_idle_consumers(
        &self,
        topic: &Topic,
        idle_for: Duration,
    ) -> Result<Vec<String>> {
        let mut state = self.transport.shared.lock();
        let stream = state.stream_of_group(topic, &self.spec.group)?;
        let g = stream
            .groups
            .get_mut(&self.spec.group)
            .ok_or_else(|| group_missing(topic, &self.spec.group))?;
        let now = Instant::now();
        let removable: Vec<String> = g
            .consumers
            .iter()
            .filter(|(name, seen)| idle(now, **seen) > idle_for && g.pending_of(name) == 0)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &removable {
            g.consumers.remove(name);
        }
        Ok(removable)
    }
}
