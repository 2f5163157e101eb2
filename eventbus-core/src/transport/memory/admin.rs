//! The admin side of [`MemoryTransport`]: groups' lag and dead letters.

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryTransport;
use crate::envelope::EntryId;
use crate::error::Result;
use crate::memory::streams::{idle, Group, Stream, StreamId};
use crate::transport::{ConsumerInfo, DeadLetter, GroupLag, StreamAdmin, Topic};

#[async_trait]
impl StreamAdmin for MemoryTransport {
    async fn settled(&self, topic: &Topic, group: &str, ids: &[EntryId]) -> Result<bool> {
        let ids = ids
            .iter()
            .map(|id| StreamId::parse(id))
            .collect::<Result<Vec<_>>>()?;
        let state = self.shared.lock();
        let Some(g) = state.streams.get(topic).and_then(|s| s.groups.get(group)) else {
            return Ok(false);
        };
        Ok(ids
            .iter()
            .all(|id| *id <= g.last_delivered && !g.pel.contains_key(id)))
    }

    async fn lag(&self, group: Option<&str>) -> Result<Vec<GroupLag>> {
        let state = self.shared.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        for (topic, stream) in &state.streams {
            for (name, g) in &stream.groups {
                if group.is_none_or(|wanted| wanted == name) {
                    out.push(group_lag(topic, name, g, stream, now));
                }
            }
        }
        Ok(out)
    }

    async fn lag_of(&self, topic: &Topic, group: &str) -> Result<Option<GroupLag>> {
        let state = self.shared.lock();
        Ok(state.streams.get(topic).and_then(|stream| {
            let g = stream.groups.get(group)?;
            Some(group_lag(topic, group, g, stream, Instant::now()))
        }))
    }

    async fn dead_letters(&self, group: &str, count: usize) -> Result<Vec<DeadLetter>> {
        let state = self.shared.lock();
        let Some(dead) = state.dead.get(group) else {
            return Ok(Vec::new());
        };
        Ok(dead
            .records
            .values()
            .take(count)
            .map(|r| r.letter.clone())
            .collect())
    }

    /// Dead letters whose entry was already gone when they were dead-lettered (no event, no
    /// fields) cannot be replayed: they stay until purged.
    async fn replay_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> Result<usize> {
        let replayed = {
            let mut state = self.shared.lock();
            let Some(dead) = state.dead.get_mut(group) else {
                return Ok(0);
            };
            let records = dead.take(ids, |r| r.entry.is_some());
            for record in &records {
                if let Some(entry) = &record.entry {
                    self.append(&mut state, &record.letter.origin_topic, entry.clone());
                }
            }
            records.len()
        };
        if replayed > 0 {
            self.shared.appended.notify_waiters();
        }
        Ok(replayed)
    }

    async fn purge_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> Result<usize> {
        let mut state = self.shared.lock();
        Ok(state
            .dead
            .get_mut(group)
            .map_or(0, |dead| dead.take(ids, |_| true).len()))
    }
}

/// The health of group `name` (`g`) on `topic`'s `stream`, as of `now`.
fn group_lag(topic: &Topic, name: &str, g: &Group, stream: &Stream, now: Instant) -> GroupLag {
    let consumers = g
        .consumers
        .iter()
        .map(|(consumer, seen)| ConsumerInfo {
            name: consumer.clone(),
            pending: g.pending_of(consumer),
            idle: idle(now, *seen),
        })
        .collect();
    GroupLag {
        topic: topic.clone(),
        partition: None,
        group: name.to_owned(),
        lag: g.lag(stream.entries_added),
        pending: g.pel.len() as u64,
        oldest_pending_idle: g.pel.values().next().map(|p| idle(now, p.last_delivery)),
        consumers,
    }
}
