//! Partitioned topics: how many partitions an event type has (stored in Redis, so every
//! publisher and consumer agrees), the hash tag of each partition, and the partition an
//! event goes to.
//!
//! A namespace has a list of partition hash tags (`{ns}:partitions`); partition `i` of every
//! event type and of the global stream lives under tag `i`, so that one publish (the type's
//! partition stream plus its share of the global stream) and every consumer script (a
//! partition stream plus its dead letters) stays in one cluster slot. On a cluster, tags are
//! chosen when a partition is first needed so that partitions go to the masters
//! round-robin, as Kafka spreads partitions over brokers; they never change afterwards.
//!
//! On a single node, partition 0 of a topic is the unpartitioned layout itself
//! (`{ns}:stream:{event_type}`, `{ns}:stream:all`, `{ns}:dlq:{group}`): with one partition
//! the keys are exactly the reference article's.

mod aggregate;
pub(crate) mod scripts;
pub(crate) mod slot;

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventbus_core::transport::Topic;
use eventbus_core::{EntryId, Envelope, Error as CoreError, Result as CoreResult};
use redis::Value;
use serde_json::Value as Json;

pub(crate) use self::aggregate::AggregateKeys;
pub(crate) use crate::client::Directory;
use crate::client::Inner;
use crate::error::has_code;
use crate::reply;

/// How long a topic's partition count is cached before it is read again: a partition count
/// raised with `eventbus topic create` reaches every publisher and consumer within this.
pub const PARTITION_COUNT_TTL: Duration = Duration::from_secs(5);

/// The most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// One partition's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Part {
    /// The partition's number, from 0.
    pub(crate) index: u32,
    /// Its stream key.
    pub(crate) key: String,
    /// Its hash tag; `None` for the unpartitioned layout (partition 0 on a single node).
    pub(crate) tag: Option<String>,
}

/// An entry id qualified with its partition: `{partition}/{id}`; plain ids are partition 0's.
pub(crate) fn qualify(index: u32, id: &str, partitioned: bool) -> EntryId {
    if partitioned {
        format!("{index}/{id}")
    } else {
        id.to_owned()
    }
}

/// The partition and stream id of a (possibly qualified) entry id.
pub(crate) fn split_id(id: &str) -> (u32, &str) {
    match id.split_once('/') {
        Some((index, rest)) => match index.parse() {
            Ok(index) => (index, rest),
            Err(_) => (0, id),
        },
        None => (0, id),
    }
}

/// Positions grouped by partition, in order of first appearance: `(partition, positions)`.
pub(crate) fn group_by_partition(
    partitions: impl IntoIterator<Item = u32>,
) -> Vec<(u32, Vec<usize>)> {
    let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
    for (position, index) in partitions.into_iter().enumerate() {
        match groups.iter_mut().find(|(i, _)| *i == index) {
            Some((_, members)) => members.push(position),
            None => groups.push((index, vec![position])),
        }
    }
    groups
}

/// FNV-1a (64-bit) of `key`: the stable hash that maps a partition key to a partition.
pub fn key_hash(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The partition of a key among `count`: `fnv1a64(key) % count`.
pub fn partition_for_key(key: &str, count: u32) -> u32 {
    (key_hash(key) % u64::from(count.max(1))) as u32
}

impl Directory {
    /// Whether a topic of `count` partitions uses partition leases and qualified ids: on a
    /// cluster always, on a single node when it has more than one partition.
    pub(crate) fn partitioned(inner: &Inner, count: u32) -> bool {
        inner.config.is_cluster() || count > 1
    }

    /// Where each event goes — its partition, and whether its ids are qualified with it —
    /// and the namespace's tags covering those partitions (none when every event goes to
    /// the unpartitioned layout).
    pub(crate) async fn place(
        inner: &Inner,
        events: &[Envelope<Json>],
    ) -> CoreResult<(Vec<(u32, bool)>, Vec<String>)> {
        let mut placed = Vec::with_capacity(events.len());
        for event in events {
            let count = Directory::count(inner, &event.event_type).await?;
            let index = inner.partitions.partition_of(event, count);
            placed.push((index, Directory::partitioned(inner, count)));
        }
        let max = placed.iter().map(|(i, _)| *i).max().unwrap_or(0);
        let tags = if inner.config.is_cluster() || max > 0 {
            Directory::tags(inner, max + 1).await?
        } else {
            Vec::new()
        };
        Ok((placed, tags))
    }

    /// The partition an event goes to among `count`: by its key, else round-robin.
    pub(crate) fn partition_of(&self, event: &Envelope<Json>, count: u32) -> u32 {
        if count <= 1 {
            return 0;
        }
        match event.partition_key() {
            Some(key) => partition_for_key(key, count),
            None => (self.next.fetch_add(1, Ordering::Relaxed) % u64::from(count)) as u32,
        }
    }

    /// The partition count of an event type (1 unless set), cached for
    /// [`PARTITION_COUNT_TTL`].
    pub(crate) async fn count(inner: &Inner, event_type: &str) -> CoreResult<u32> {
        let directory = &inner.partitions;
        if let Some((count, at)) = lock(&directory.counts).get(event_type) {
            if at.elapsed() < PARTITION_COUNT_TTL {
                return Ok(*count);
            }
        }
        let count = read_count(inner, event_type).await?;
        lock(&directory.counts).insert(event_type.to_owned(), (count, Instant::now()));
        Ok(count)
    }

    /// The global stream's partition count: the number of partitions of the namespace (at
    /// least 1), cached for [`PARTITION_COUNT_TTL`].
    pub(crate) async fn global_count(inner: &Inner) -> CoreResult<u32> {
        if let Some((count, at)) = *lock(&inner.partitions.global) {
            if at.elapsed() < PARTITION_COUNT_TTL {
                return Ok(count);
            }
        }
        let tags = load_tags(inner).await?;
        let count = u32::try_from(tags.len()).unwrap_or(u32::MAX).max(1);
        *lock(&inner.partitions.global) = Some((count, Instant::now()));
        Ok(count)
    }

    /// The partition count of a topic (named streams have one).
    pub(crate) async fn topic_count(inner: &Inner, topic: &Topic) -> CoreResult<u32> {
        match topic {
            Topic::Type(event_type) => Directory::count(inner, event_type).await,
            Topic::All => Directory::global_count(inner).await,
            _ => Ok(1),
        }
    }

    /// The streams of a topic's partitions `0..count`, creating tags that don't exist yet.
    pub(crate) async fn parts(inner: &Inner, topic: &Topic, count: u32) -> CoreResult<Vec<Part>> {
        let unpartitioned = !matches!(topic, Topic::Type(_) | Topic::All);
        if unpartitioned || (count <= 1 && !inner.config.is_cluster()) {
            return Ok(vec![Directory::single(inner, topic)]);
        }
        let tags = Directory::tags(inner, count).await?;
        Ok((0..count)
            .map(|index| Directory::part_of(inner, topic, index, &tags))
            .collect())
    }

    /// The partition stream holding the entry `id` of `topic` (qualified with its partition
    /// when the topic is partitioned), and the entry's id in that stream.
    pub(crate) async fn entry_part<'a>(
        inner: &Inner,
        topic: &Topic,
        id: &'a str,
    ) -> CoreResult<(Part, &'a str)> {
        let count = Directory::topic_count(inner, topic).await?;
        let event_stream = matches!(topic, Topic::Type(_) | Topic::All);
        if !event_stream || !Directory::partitioned(inner, count) {
            return Ok((Directory::single(inner, topic), id));
        }
        let (index, raw) = split_id(id);
        let tags = Directory::tags(inner, count.max(index + 1)).await?;
        Ok((Directory::part_of(inner, topic, index, &tags), raw))
    }

    /// The one stream of a topic read unpartitioned: a named stream (remote commands'
    /// `cmd:{service}`, `reply:{instance}`), or an event type's partition 0 on a single node.
    ///
    /// On a cluster a named stream carries its name as its hash tag,
    /// `{ns}:stream:{name}:{name}` (`eventbus:stream:cmd:billing:{cmd:billing}`), so that its
    /// dead letters (`{ns}:dlq:{group}:{name}`) share its slot; its entry ids stay plain. On a
    /// single node it is `{ns}:stream:{name}`, as ever. (An event type's topic is never
    /// read unpartitioned on a cluster: this is its plain stream, the first layout a consumer
    /// assumes before it learns the partitions.)
    pub(crate) fn single(inner: &Inner, topic: &Topic) -> Part {
        match topic {
            Topic::Named(name) if inner.config.is_cluster() => Part {
                index: 0,
                key: inner.keys.partition_stream(topic, name),
                tag: Some(name.clone()),
            },
            _ => Part {
                index: 0,
                key: inner.keys.stream(topic),
                tag: None,
            },
        }
    }

    /// The stream of one partition, given the namespace's tags (which must cover `index`).
    pub(crate) fn part_of(inner: &Inner, topic: &Topic, index: u32, tags: &[String]) -> Part {
        match tags.get(index as usize) {
            Some(tag) if index > 0 || inner.config.is_cluster() => Part {
                index,
                key: inner.keys.partition_stream(topic, tag),
                tag: Some(tag.clone()),
            },
            _ => Part {
                index,
                key: inner.keys.stream(topic),
                tag: None,
            },
        }
    }

    /// The namespace's first `count` partition tags, creating missing ones.
    pub(crate) async fn tags(inner: &Inner, count: u32) -> CoreResult<Vec<String>> {
        let count = count as usize;
        {
            let tags = inner
                .partitions
                .tags
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if tags.len() >= count {
                return Ok(tags[..count].to_vec());
            }
        }
        let mut tags = load_tags(inner).await?;
        while tags.len() < count {
            tags = extend_tags(inner, &tags, count).await?;
        }
        Ok(tags[..count].to_vec())
    }

    /// Sets an event type's partition count (creating the tags it needs). A count can only
    /// grow: fewer partitions would strand the entries of the dropped ones. Returns the count
    /// now in force.
    pub(crate) async fn set_count(inner: &Inner, event_type: &str, count: u32) -> CoreResult<u32> {
        if count == 0 || count > MAX_PARTITIONS {
            return Err(CoreError::Config(format!(
                "a topic has 1 to {MAX_PARTITIONS} partitions (asked for {count})"
            )));
        }
        Directory::tags(inner, count).await?;
        let key = inner.keys.topic_meta(event_type);
        let mut invocation = scripts::SET_PARTITIONS.key(&key);
        invocation.arg(count);
        let reply: Value = invocation
            .invoke_async(&mut inner.conn.clone())
            .await
            .map_err(|e| inner.server.error(&e, "set partition count", None))?;
        let items = reply::items(&reply).unwrap_or_default();
        let now = items
            .first()
            .and_then(reply::int)
            .ok_or_else(|| inner.server.protocol("set partition count", "no count"))?;
        let pinned = items.get(1).and_then(reply::text);
        let now = u32::try_from(now.unsigned_abs()).unwrap_or(u32::MAX);
        if let Some(aggregate_type) = pinned {
            return Err(CoreError::Config(format!(
                "topic {event_type} has {now} partitions and is co-partitioned with aggregate \
                 type {aggregate_type}: it cannot change (asked for {count})"
            )));
        }
        if now > count {
            return Err(CoreError::Config(format!(
                "topic {event_type} has {now} partitions; a partition count can only grow \
                 (asked for {count})"
            )));
        }
        Directory::global_count(inner).await?;
        lock(&inner.partitions.counts).insert(event_type.to_owned(), (now, Instant::now()));
        *lock(&inner.partitions.global) = None;
        Ok(now)
    }
}

/// Creates `group` on the stream at `key` at `id` (creating the stream), unless it exists.
pub(crate) async fn create_group(
    inner: &Inner,
    key: &str,
    group: &str,
    id: &str,
) -> CoreResult<()> {
    let result = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(id)
        .arg("MKSTREAM")
        .query_async::<Value>(&mut inner.conn.clone())
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if has_code(&e, "BUSYGROUP") => Ok(()),
        Err(e) => Err(inner.server.error(&e, "XGROUP CREATE", None)),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The partition count stored for an event type (1 when none is), read now, not cached.
pub(crate) async fn read_count(inner: &Inner, event_type: &str) -> CoreResult<u32> {
    let count = hget_partitions(inner, &inner.keys.topic_meta(event_type)).await?;
    Ok(count.unwrap_or(1).max(1))
}

/// The field `partitions` of the hash at `key` (a topic's or an aggregate type's
/// metadata), read now; `None` when absent or not a number.
pub(crate) async fn hget_partitions(inner: &Inner, key: &str) -> CoreResult<Option<u32>> {
    let value: Option<String> = redis::cmd("HGET")
        .arg(key)
        .arg("partitions")
        .query_async(&mut inner.conn.clone())
        .await
        .map_err(|e| inner.server.error(&e, "HGET partitions", None))?;
    Ok(value.and_then(|v| v.parse().ok()))
}

async fn load_tags(inner: &Inner) -> CoreResult<Vec<String>> {
    let tags: Vec<String> = redis::cmd("LRANGE")
        .arg(inner.keys.partition_tags())
        .arg(0)
        .arg(-1)
        .query_async(&mut inner.conn.clone())
        .await
        .map_err(|e| inner.server.error(&e, "LRANGE partitions", None))?;
    store_tags(inner, &tags);
    Ok(tags)
}

fn store_tags(inner: &Inner, tags: &[String]) {
    let mut cached = inner
        .partitions
        .tags
        .write()
        .unwrap_or_else(|e| e.into_inner());
    if tags.len() > cached.len() {
        *cached = tags.to_vec();
    }
}

/// Appends tags up to `count` unless someone else did first; returns the tags now stored.
async fn extend_tags(inner: &Inner, known: &[String], count: usize) -> CoreResult<Vec<String>> {
    let mut conn = inner.conn.clone();
    let mut new: Vec<String> = known.to_vec();
    if inner.config.is_cluster() {
        let masters = conn
            .cluster_masters()
            .await
            .map_err(|e| inner.server.error(&e, "CLUSTER SLOTS", None))?;
        while new.len() < count {
            let index = u32::try_from(new.len()).unwrap_or(u32::MAX);
            let tag = slot::cluster_tag(index, &masters, &new);
            new.push(tag);
        }
    } else {
        while new.len() < count {
            let index = u32::try_from(new.len()).unwrap_or(u32::MAX);
            new.push(slot::single_node_tag(index));
        }
    }
    let mut invocation = scripts::EXTEND_TAGS.key(inner.keys.partition_tags());
    invocation.arg(known.len());
    for tag in &new[known.len()..] {
        invocation.arg(tag);
    }
    let value: Value = invocation
        .invoke_async(&mut conn)
        .await
        .map_err(|e| inner.server.error(&e, "extend partition tags", None))?;
    let tags: Vec<String> = reply::items(&value)
        .ok_or_else(|| {
            inner
                .server
                .protocol("extend partition tags", "not an array")
        })?
        .iter()
        .filter_map(reply::text)
        .collect();
    store_tags(inner, &tags);
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_partition() {
        assert_eq!(qualify(3, "5-1", true), "3/5-1");
        assert_eq!(qualify(0, "5-1", false), "5-1");
        assert_eq!(split_id("3/5-1"), (3, "5-1"));
        assert_eq!(split_id("5-1"), (0, "5-1"));
    }

    #[test]
    fn keys_map_to_stable_partitions() {
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
        for count in 1..10 {
            let p = partition_for_key("order-17", count);
            assert!(p < count);
            assert_eq!(p, partition_for_key("order-17", count));
        }
        let spread: std::collections::HashSet<u32> = (0..100)
            .map(|i| partition_for_key(&format!("k{i}"), 6))
            .collect();
        assert_eq!(spread.len(), 6);
    }
}
