//! Where the event store keeps an aggregate instance, and on a Redis Cluster the partition
//! its events are published to.
//!
//! On a single node an aggregate's keys are untagged (`{ns}:aggregate:{type}:{id}`, …) and
//! each event goes to the partition of its own key. On a cluster the aggregate lives in
//! partition `i = partition_for_key(id, P)` of its event types (co-partitioned: they all
//! have P partitions), and its keys carry partition `i`'s hash tag, so that the append
//! script's keys (aggregate stream and version, each event's type and global partition
//! streams) share one slot. P is stored for the aggregate type on its first append
//! (`{ns}:aggregate-type:{type}`, field `partitions`), so reads find the keys without
//! knowing the event types, and the event types' topics are pinned (field `pinned_by` of
//! `{ns}:topic:{type}`): their partition count can no longer change, since that would move
//! the aggregates' keys.

use std::collections::HashMap;
use std::sync::Mutex;

use eventbus_core::{Error as CoreError, Result as CoreResult};

use super::{hget_partitions, lock, partition_for_key, read_count, scripts, Directory};
use crate::client::Inner;
use crate::error::Error;

/// The keys of one aggregate instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AggregateKeys {
    /// Its event stream.
    pub(crate) stream: String,
    /// Its version.
    pub(crate) version: String,
    /// Its snapshot.
    pub(crate) snapshot: String,
    /// On a cluster: its partition, and the namespace's tags up to it.
    pub(crate) placed: Option<(u32, Vec<String>)>,
}

impl AggregateKeys {
    /// The untagged keys of the single-node layout.
    fn untagged(inner: &Inner, aggregate_type: &str, id: &str) -> Self {
        let keys = &inner.keys;
        AggregateKeys {
            stream: keys.aggregate_stream(aggregate_type, id),
            version: keys.aggregate_version(aggregate_type, id),
            snapshot: keys.aggregate_snapshot(aggregate_type, id),
            placed: None,
        }
    }
}

impl Directory {
    /// The keys of an aggregate instance to read: on a cluster `None` while its type has
    /// stored no events (so it has none).
    pub(crate) async fn aggregate(
        inner: &Inner,
        aggregate_type: &str,
        id: &str,
    ) -> CoreResult<Option<AggregateKeys>> {
        if !inner.config.is_cluster() {
            return Ok(Some(AggregateKeys::untagged(inner, aggregate_type, id)));
        }
        match aggregate_count(inner, aggregate_type).await? {
            Some(count) => Ok(Some(tagged(inner, aggregate_type, id, count).await?)),
            None => Ok(None),
        }
    }

    /// The keys of an aggregate instance to append events of `event_types` to. On a
    /// cluster, checks that the event types have the aggregate type's partition count, pins
    /// them, and stores the count for the aggregate type on its first append.
    pub(crate) async fn place_aggregate(
        inner: &Inner,
        aggregate_type: &str,
        id: &str,
        event_types: &[&str],
    ) -> CoreResult<AggregateKeys> {
        if !inner.config.is_cluster() {
            return Ok(AggregateKeys::untagged(inner, aggregate_type, id));
        }
        let mut counts: Vec<(String, u32)> = Vec::new();
        for event_type in event_types {
            if counts.iter().any(|(t, _)| t == event_type) {
                continue;
            }
            let count = match cached(&inner.partitions.pinned, event_type) {
                Some(count) => count,
                None => read_count(inner, event_type).await?,
            };
            counts.push(((*event_type).to_owned(), count));
        }
        let stored = aggregate_count(inner, aggregate_type).await?;
        let Some(count) = stored.or_else(|| counts.first().map(|(_, n)| *n)) else {
            return tagged(inner, aggregate_type, id, 1).await;
        };
        let differ = |counts: &[(String, u32)]| -> CoreError {
            Error::AggregatePartitionsDiffer {
                aggregate_type: aggregate_type.to_owned(),
                partitions: stored,
                event_types: counts.to_vec(),
            }
            .into()
        };
        if counts.iter().any(|(_, n)| *n != count) {
            return Err(differ(&counts));
        }
        for (event_type, read) in &mut counts {
            if cached(&inner.partitions.pinned, event_type).is_none() {
                *read = pin(inner, event_type, aggregate_type).await?;
            }
        }
        if counts.iter().any(|(_, n)| *n != count) {
            return Err(differ(&counts));
        }
        if stored.is_none() {
            let now = store_count(
                inner,
                &scripts::PLACE_AGGREGATES,
                (
                    &inner.keys.aggregate_type_meta(aggregate_type),
                    &count.to_string(),
                ),
                &inner.partitions.aggregates,
                aggregate_type,
            )
            .await?;
            if now != count {
                return Err(Error::AggregatePartitionsDiffer {
                    aggregate_type: aggregate_type.to_owned(),
                    partitions: Some(now),
                    event_types: counts,
                }
                .into());
            }
        }
        tagged(inner, aggregate_type, id, count).await
    }
}

/// The keys of an aggregate instance in its partition among `count`.
async fn tagged(
    inner: &Inner,
    aggregate_type: &str,
    id: &str,
    count: u32,
) -> CoreResult<AggregateKeys> {
    let index = partition_for_key(id, count);
    let tags = Directory::tags(inner, count).await?;
    let tag = tags.get(index as usize).ok_or_else(|| {
        inner
            .server
            .protocol("partition tags", "fewer tags than asked")
    })?;
    let keys = &inner.keys;
    Ok(AggregateKeys {
        stream: keys.aggregate_stream_tagged(tag, aggregate_type, id),
        version: keys.aggregate_version_tagged(tag, aggregate_type, id),
        snapshot: keys.aggregate_snapshot_tagged(tag, aggregate_type, id),
        placed: Some((index, tags)),
    })
}

/// The partition count an aggregate type's aggregates are placed by, if stored. Cached
/// once read: it never changes.
async fn aggregate_count(inner: &Inner, aggregate_type: &str) -> CoreResult<Option<u32>> {
    if let Some(count) = cached(&inner.partitions.aggregates, aggregate_type) {
        return Ok(Some(count));
    }
    let count = hget_partitions(inner, &inner.keys.aggregate_type_meta(aggregate_type)).await?;
    if let Some(count) = count {
        lock(&inner.partitions.aggregates).insert(aggregate_type.to_owned(), count);
    }
    Ok(count)
}

/// Pins an event type's partition count for `aggregate_type`; returns the count, cached.
async fn pin(inner: &Inner, event_type: &str, aggregate_type: &str) -> CoreResult<u32> {
    store_count(
        inner,
        &scripts::PIN_TOPIC,
        (&inner.keys.topic_meta(event_type), aggregate_type),
        &inner.partitions.pinned,
        event_type,
    )
    .await
}

/// Runs a script of one key and one argument that returns a partition count for good, and
/// caches the count in `cache` under `name`.
async fn store_count(
    inner: &Inner,
    script: &redis::Script,
    (key, arg): (&str, &str),
    cache: &Mutex<HashMap<String, u32>>,
    name: &str,
) -> CoreResult<u32> {
    let count: u32 = script
        .key(key)
        .arg(arg)
        .invoke_async(&mut inner.conn.clone())
        .await
        .map_err(|e| inner.server.error(&e, "store a partition count", None))?;
    lock(cache).insert(name.to_owned(), count);
    Ok(count)
}

fn cached(map: &Mutex<HashMap<String, u32>>, name: &str) -> Option<u32> {
    lock(map).get(name).copied()
}
