//! The data behind the in-memory server ([`super::MemoryServer`]): streams, consumer groups and dead letters,
//! with synchronous operations that mirror the Redis Streams commands. Everything here runs
//! under the transport's lock; time is passed in so the operations stay pure.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use crate::envelope::{EntryId, Envelope};
use crate::error::{Error, Result, TransportError, TransportErrorKind};
use crate::transport::{Delivery, Malformed, Topic};

/// A stream entry id, compared numerically like Redis does (`ms`, then `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct StreamId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl StreamId {
    pub(crate) const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `ms-seq`, or `ms` alone (sequence 0), as Redis accepts for range starts.
    pub(crate) fn parse(s: &str) -> Result<StreamId> {
        let parsed = match s.split_once('-') {
            Some((ms, seq)) => ms.parse().ok().zip(seq.parse().ok()),
            None => s.parse().ok().map(|ms| (ms, 0)),
        };
        parsed.map(|(ms, seq)| StreamId { ms, seq }).ok_or_else(|| {
            Error::Transport(TransportError::new(
                TransportErrorKind::Other,
                "memory",
                "parse stream id",
                format!("invalid stream id `{s}`"),
            ))
        })
    }

    /// The next id after `self` at wall-clock time `now_ms`: strictly increasing even when the
    /// clock stands still or goes back.
    fn next(self, now_ms: u64) -> StreamId {
        if now_ms > self.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else {
            match self.seq.checked_add(1) {
                Some(seq) => StreamId { ms: self.ms, seq },
                None => StreamId {
                    ms: self.ms.saturating_add(1),
                    seq: 0,
                },
            }
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Wall-clock milliseconds since the Unix epoch, for entry ids.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What an entry holds: an event, or what a broken producer wrote.
pub(crate) type Entry = std::result::Result<Arc<Envelope<Value>>, Malformed>;

/// One stored entry with its position among all entries ever added to its stream (1-based,
/// Redis' logical read counter).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) entry: Entry,
    ordinal: u64,
}

/// An entry delivered to a group and not yet acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) consumer: String,
    pub(crate) delivery_count: u32,
    pub(crate) last_delivery: Instant,
}

/// A consumer group of one stream.
#[derive(Debug)]
pub(crate) struct Group {
    /// The last id handed out with `>`.
    pub(crate) last_delivered: StreamId,
    /// How many entries of the stream's history the group has read (Redis `entries-read`).
    pub(crate) entries_read: u64,
    /// The largest id the group never read that trimming dropped; lag is unknown while the
    /// group has not read past it.
    pub(crate) trimmed_unread: Option<StreamId>,
    /// The pending entries list.
    pub(crate) pel: BTreeMap<StreamId, Pending>,
    /// Consumers with the time they were last seen (read or claimed).
    pub(crate) consumers: BTreeMap<String, Instant>,
}

impl Group {
    /// Marks a consumer as seen now, creating it if needed (as `XREADGROUP`/`XCLAIM` do).
    pub(crate) fn touch(&mut self, consumer: &str, now: Instant) {
        self.consumers.insert(consumer.to_owned(), now);
    }

    /// The lag (entries not yet delivered), `None` when trimming dropped unread entries.
    pub(crate) fn lag(&self, entries_added: u64) -> Option<u64> {
        match self.trimmed_unread {
            Some(t) if t > self.last_delivered => None,
            _ => Some(entries_added.saturating_sub(self.entries_read)),
        }
    }

    /// Pending entries held by `consumer`.
    pub(crate) fn pending_of(&self, consumer: &str) -> u64 {
        self.pel.values().filter(|p| p.consumer == consumer).count() as u64
    }
}

/// One stream: its entries, its id generator and its groups.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) entries: BTreeMap<StreamId, Stored>,
    pub(crate) last_id: StreamId,
    /// Entries ever added (Redis `entries-added`).
    pub(crate) entries_added: u64,
    pub(crate) groups: BTreeMap<String, Group>,
}

impl Stream {
    /// Appends an entry with a fresh id, then trims to `max_len` entries, oldest first.
    pub(crate) fn append(&mut self, entry: Entry, max_len: usize) -> StreamId {
        let id = self.last_id.next(wall_ms());
        self.last_id = id;
        self.entries_added += 1;
        self.entries.insert(
            id,
            Stored {
                entry,
                ordinal: self.entries_added,
            },
        );
        while self.entries.len() > max_len {
            let Some((dropped, _)) = self.entries.pop_first() else {
                break;
            };
            for group in self.groups.values_mut() {
                if dropped > group.last_delivered {
                    group.trimmed_unread =
                        Some(group.trimmed_unread.map_or(dropped, |t| t.max(dropped)));
                }
            }
        }
        id
    }

    /// A new group positioned at the end (`$`) or at the start (`0`) of the stream.
    pub(crate) fn new_group(&self, from_beginning: bool) -> Group {
        let (last_delivered, entries_read) = if from_beginning {
            (
                StreamId::ZERO,
                self.entries_added - self.entries.len() as u64,
            )
        } else {
            (self.last_id, self.entries_added)
        };
        Group {
            last_delivered,
            entries_read,
            trimmed_unread: None,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// `XREADGROUP … >`: up to `count` (0: no limit) entries after the group's last delivered
    /// id, added to the PEL of `consumer` with a delivery count of 1.
    pub(crate) fn read_new(
        &mut self,
        topic: &Topic,
        group: &str,
        consumer: &str,
        count: usize,
        now: Instant,
        out: &mut Vec<Delivery>,
    ) -> Result<()> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| group_missing(topic, group))?;
        g.touch(consumer, now);
        let limit = if count == 0 { usize::MAX } else { count };
        let range = self
            .entries
            .range((Excluded(g.last_delivered), Unbounded))
            .take(limit);
        for (&id, stored) in range {
            g.last_delivered = id;
            g.entries_read = stored.ordinal;
            let pending = Pending {
                consumer: consumer.to_owned(),
                delivery_count: 1,
                last_delivery: now,
            };
            g.pel.insert(id, pending);
            out.push(delivery(topic, id, 1, &stored.entry));
        }
        Ok(())
    }

    /// Gives pending entry `id` to `consumer` (`XCLAIM`): resets its idle time and, when
    /// `count`, counts a delivery (`JUSTID` doesn't). When the entry no longer exists it
    /// leaves the PEL and `None` is returned.
    pub(crate) fn claim(
        &mut self,
        topic: &Topic,
        group: &str,
        id: StreamId,
        consumer: &str,
        now: Instant,
        count: bool,
    ) -> Option<Delivery> {
        let g = self.groups.get_mut(group)?;
        let Some(stored) = self.entries.get(&id) else {
            g.pel.remove(&id);
            return None;
        };
        let p = g.pel.get_mut(&id)?;
        p.consumer = consumer.to_owned();
        if count {
            p.delivery_count = p.delivery_count.saturating_add(1);
        }
        p.last_delivery = now;
        Some(delivery(topic, id, p.delivery_count, &stored.entry))
    }
}

/// Builds a delivery of a stored entry.
pub(crate) fn delivery(
    topic: &Topic,
    id: StreamId,
    delivery_count: u32,
    entry: &Entry,
) -> Delivery {
    Delivery {
        topic: topic.clone(),
        entry_id: id.to_string(),
        delivery_count,
        event: entry
            .as_ref()
            .map(|e| Envelope::clone(e))
            .map_err(Clone::clone),
    }
}

/// The error for a missing stream or group (`NOGROUP`).
pub(crate) fn group_missing(topic: &Topic, group: &str) -> Error {
    Error::GroupMissing {
        stream: topic.to_string(),
        group: group.to_owned(),
    }
}

/// A dead letter with the entry it came from, kept as-is for an exact replay.
#[derive(Debug, Clone)]
pub(crate) struct DeadRecord {
    pub(crate) letter: crate::transport::DeadLetter,
    pub(crate) entry: Option<Entry>,
}

/// The dead-letter stream of one group.
#[derive(Debug, Default)]
pub(crate) struct DeadStream {
    pub(crate) last_id: StreamId,
    pub(crate) records: BTreeMap<StreamId, DeadRecord>,
}

impl DeadStream {
    /// A fresh id for the next dead letter.
    pub(crate) fn next_id(&mut self) -> StreamId {
        self.last_id = self.last_id.next(wall_ms());
        self.last_id
    }

    /// Removes the selected records (`None`: all) that satisfy `keep_if`, oldest first;
    /// unknown or invalid ids are skipped.
    pub(crate) fn take(
        &mut self,
        ids: Option<&[EntryId]>,
        keep_if: impl Fn(&DeadRecord) -> bool,
    ) -> Vec<DeadRecord> {
        let mut wanted: Vec<StreamId> = match ids {
            None => self.records.keys().copied().collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| StreamId::parse(id).ok())
                .collect(),
        };
        wanted.sort_unstable();
        wanted.dedup();
        wanted.retain(|id| self.records.get(id).is_some_and(&keep_if));
        wanted
            .into_iter()
            .filter_map(|id| self.records.remove(&id))
            .collect()
    }
}

/// Maximum stream lengths: per type stream (with overrides per event type) and global.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) per_type: usize,
    pub(crate) overrides: HashMap<String, usize>,
    pub(crate) all: usize,
}

impl Limits {
    /// The maximum length of a topic's stream.
    pub(crate) fn max_len(&self, topic: &Topic) -> usize {
        match topic {
            Topic::All => self.all,
            Topic::Type(t) => self.overrides.get(t).copied().unwrap_or(self.per_type),
            _ => self.per_type,
        }
    }
}

/// Everything the transport stores.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) streams: BTreeMap<Topic, Stream>,
    pub(crate) dead: HashMap<String, DeadStream>,
}

impl State {
    /// The stream of a topic that has `group`, or `GroupMissing` when the stream or the group does not exist.
    pub(crate) fn stream_of_group(&mut self, topic: &Topic, group: &str) -> Result<&mut Stream> {
        match self.streams.get_mut(topic) {
            Some(s) if s.groups.contains_key(group) => Ok(s),
            _ => Err(group_missing(topic, group)),
        }
    }
}

/// `Duration` since `then`, zero if `then` is in the future.
pub(crate) fn idle(now: Instant, then: Instant) -> Duration {
    now.saturating_duration_since(then)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_compare_numerically_and_increase() {
        let a = StreamId::parse("9-5").unwrap();
        let b = StreamId::parse("10-0").unwrap();
        assert!(a < b, "numeric, not string, order");
        assert_eq!(StreamId::parse("7").unwrap(), StreamId { ms: 7, seq: 0 });
        assert!(StreamId::parse("x-1").is_err());
        assert!(StreamId::parse("1-").is_err());
        let last = StreamId { ms: 100, seq: 3 };
        assert_eq!(last.next(100), StreamId { ms: 100, seq: 4 });
        assert_eq!(
            last.next(50),
            StreamId { ms: 100, seq: 4 },
            "clock went back"
        );
        assert_eq!(last.next(101), StreamId { ms: 101, seq: 0 });
        assert_eq!(b.to_string(), "10-0");
    }
}
