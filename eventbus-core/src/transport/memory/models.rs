//! What the in-memory read-model store needs from the transport: acknowledging an entry only
//! while it is pending for a consumer, and looking at or dropping a group, under the
//! transport's lock.

use std::sync::MutexGuard;

use crate::error::Result;
use crate::projection::memory::{MemoryReadModels, ModelState};
use crate::transport::Topic;

use super::state::StreamId;
use super::MemoryTransport;

impl MemoryTransport {
    /// A read-model store sharing this transport's streams and groups (the store
    /// acknowledges entries atomically with its writes). Every call returns a handle on the
    /// same read models.
    pub fn read_models(&self) -> MemoryReadModels {
        MemoryReadModels::new(self.clone())
    }

    pub(crate) fn models(&self) -> MutexGuard<'_, ModelState> {
        self.shared.models.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Acknowledges `id` if it is pending for `consumer`; `Ok(false)` otherwise.
    /// `GroupMissing` when the group doesn't exist.
    pub(crate) fn ack_if_pending(
        &self,
        topic: &Topic,
        group: &str,
        consumer: &str,
        id: &str,
    ) -> Result<bool> {
        let id = StreamId::parse(id)?;
        let mut state = self.shared.lock();
        let stream = state.stream_of_group(topic, group)?;
        let Some(g) = stream.groups.get_mut(group) else {
            return Ok(false);
        };
        if g.pel.get(&id).is_some_and(|p| p.consumer == consumer) {
            g.pel.remove(&id);
            return Ok(true);
        }
        Ok(false)
    }

    /// Entries pending in `group` on `topic` (0 when the group doesn't exist).
    pub(crate) fn pending_count(&self, topic: &Topic, group: &str) -> usize {
        let state = self.shared.lock();
        state
            .streams
            .get(topic)
            .and_then(|s| s.groups.get(group))
            .map_or(0, |g| g.pel.len())
    }

    /// Moves every entry pending in `group` on `topic` to `consumer`, without counting a
    /// delivery (`XAUTOCLAIM … 0 JUSTID`). Returns how many moved.
    pub(crate) fn adopt_pending(&self, topic: &Topic, group: &str, consumer: &str) -> u64 {
        let mut state = self.shared.lock();
        let Some(g) = state
            .streams
            .get_mut(topic)
            .and_then(|s| s.groups.get_mut(group))
        else {
            return 0;
        };
        let mut moved = 0;
        for p in g.pel.values_mut() {
            if p.consumer != consumer {
                p.consumer = consumer.to_owned();
                moved += 1;
            }
        }
        if moved > 0 {
            g.consumers
                .entry(consumer.to_owned())
                .or_insert_with(tokio::time::Instant::now);
        }
        moved
    }

    /// Drops `group` from `topic`'s stream, like `XGROUP DESTROY`.
    pub(crate) fn destroy_group(&self, topic: &Topic, group: &str) {
        let mut state = self.shared.lock();
        if let Some(s) = state.streams.get_mut(topic) {
            s.groups.remove(group);
        }
    }
}

/// Whether stream id `a` is at most `b` (ids that don't parse compare as `0-0`).
pub(crate) fn id_le(a: &str, b: &str) -> bool {
    let parse = |s: &str| StreamId::parse(s).unwrap_or(StreamId::ZERO);
    parse(a) <= parse(b)
}
