//! The in-memory server: what Redis holds for the Redis backend, held in process memory —
//! streams with their consumer groups and dead letters ([`streams`]), and read models
//! ([`models`]). Two façades wrap one server:
//! [`MemoryTransport`](crate::transport::memory::MemoryTransport) (streams) and
//! [`MemoryReadModels`](crate::projection::memory::MemoryReadModels) (read models, committed
//! atomically with the acknowledgement of the entry that made them). Neither façade knows the
//! other; both know the server.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::error::Result;
use crate::transport::Topic;

pub(crate) mod models;
pub(crate) mod streams;

use models::ModelState;
use streams::{Limits, State, StreamId};

/// What the in-memory backends share: the streams (behind one lock, with a wake-up for
/// appends) and the read models (behind another).
#[derive(Debug)]
pub(crate) struct MemoryServer {
    state: Mutex<State>,
    /// Woken whenever entries are appended (or everything is flushed).
    pub(crate) appended: Notify,
    pub(crate) limits: Limits,
    /// The read models (kept by a flush of the streams).
    models: Mutex<ModelState>,
}

impl MemoryServer {
    /// An empty server whose streams are trimmed to `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        MemoryServer {
            state: Mutex::new(State::default()),
            appended: Notify::new(),
            limits,
            models: Mutex::default(),
        }
    }

    /// Locks the streams; a poisoned lock is taken over (no operation leaves them
    /// inconsistent halfway, since none can panic between two writes).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the read models (taken over when poisoned, like [`lock`](Self::lock)).
    pub(crate) fn models(&self) -> MutexGuard<'_, ModelState> {
        self.models.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut state = self.lock();
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
        let state = self.lock();
        state
            .streams
            .get(topic)
            .and_then(|s| s.groups.get(group))
            .map_or(0, |g| g.pel.len())
    }

    /// Moves every entry pending in `group` on `topic` to `consumer`, without counting a
    /// delivery (`XAUTOCLAIM … 0 JUSTID`). Returns how many moved.
    pub(crate) fn adopt_pending(&self, topic: &Topic, group: &str, consumer: &str) -> u64 {
        let mut state = self.lock();
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
        let mut state = self.lock();
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
