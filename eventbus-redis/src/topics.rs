//! Topics: creating a partitioned topic, and listing the namespace's topics with where each
//! partition lives (its stream, hash tag, cluster slot and master) and how long it is, as
//! `eventbus topic create|list` does.
//!
//! ```no_run
//! use eventbus_redis::{RedisConfig, RedisTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = RedisTransport::connect(RedisConfig::from_env()?).await?;
//! transport.create_topic("OrderCreated", 6).await?;
//! for topic in transport.topics().await? {
//!     for p in &topic.partitions {
//!         println!("{} #{}: {} ({} entries)", topic.topic, p.index, p.stream, p.length);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;

use eventbus_core::transport::Topic;
use eventbus_core::{Error as CoreError, Result as CoreResult};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::partition::slot::{self, Master};
use crate::partition::{self, Directory, MAX_PARTITIONS};
use crate::transport::RedisTransport;

/// A topic of the namespace and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TopicInfo {
    /// The topic: an event type, or the global stream (shown as `all`).
    #[serde(serialize_with = "display")]
    pub topic: Topic,
    /// Its partitions, by index.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Entries in all its partitions.
    pub fn length(&self) -> u64 {
        self.partitions.iter().map(|p| p.length).sum()
    }
}

/// One partition of a topic: where it lives and how long it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// Its number, from 0.
    pub index: u32,
    /// Its stream key.
    pub stream: String,
    /// Its hash tag; `None` for the unpartitioned layout (partition 0 on a single node).
    pub tag: Option<String>,
    /// The cluster slot of its stream key.
    pub slot: u16,
    /// The master serving that slot (`host:port`) on a cluster; `None` on a single node.
    pub node: Option<String>,
    /// Entries in its stream (`XLEN`; 0 when the stream doesn't exist).
    pub length: u64,
}

fn display<S: serde::Serializer>(topic: &Topic, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(topic)
}

impl RedisTransport {
    /// Gives an event type `partitions` partitions (creating the hash tags they need), or
    /// keeps the count it has when that is already `partitions`. Returns the count now in
    /// force. Every publisher and consumer sees a new count within
    /// [`PARTITION_COUNT_TTL`](crate::partition::PARTITION_COUNT_TTL).
    ///
    /// A count only grows (fewer partitions would strand the entries of the dropped ones):
    /// asking for fewer than the topic has fails with
    /// [`Error::PartitionCountCannotShrink`], and a count outside 1 to
    /// [`MAX_PARTITIONS`] with [`Error::InvalidPartitionCount`], both without changing
    /// anything. Events with the same key stay in order only within one count: after a
    /// raise, a key may map to another partition.
    ///
    /// On a Redis Cluster, once an event-sourced aggregate type has appended events of this
    /// type, the count is pinned (the aggregates' keys are placed by it): asking for another
    /// count fails with [`Error::TopicPinned`], naming the aggregate type.
    pub async fn create_topic(&self, event_type: &str, partitions: u32) -> Result<u32> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(Error::InvalidPartitionCount {
                event_type: event_type.to_owned(),
                asked: partitions,
                max: MAX_PARTITIONS,
            });
        }
        let current = self.stored_count(event_type).await?;
        let shrink = |current| Error::PartitionCountCannotShrink {
            event_type: event_type.to_owned(),
            current,
            asked: partitions,
        };
        if current > partitions {
            return Err(shrink(current));
        }
        match Directory::set_count(self.inner(), event_type, partitions).await {
            Ok(now) => Ok(now),
            // Pinned by an aggregate type, or raised by someone else meanwhile above what
            // was asked.
            Err(CoreError::Config(_)) => {
                let (current, pinned_by) = self.stored_meta(event_type).await?;
                Err(match pinned_by {
                    Some(aggregate_type) if current != partitions => Error::TopicPinned {
                        event_type: event_type.to_owned(),
                        current,
                        asked: partitions,
                        aggregate_type,
                    },
                    _ => shrink(current),
                })
            }
            Err(other) => Err(self.setup_error(other, "create topic")),
        }
    }

    /// The partition count stored for an event type and the aggregate type that pinned it,
    /// if any, read now.
    async fn stored_meta(&self, event_type: &str) -> Result<(u32, Option<String>)> {
        let inner = self.inner();
        let (count, pinned_by): (Option<u32>, Option<String>) = redis::cmd("HMGET")
            .arg(inner.keys.topic_meta(event_type))
            .arg("partitions")
            .arg("pinned_by")
            .query_async(&mut inner.conn.clone())
            .await
            .map_err(|e| Error::Transport(inner.server.transport(&e, "HMGET")))?;
        Ok((count.unwrap_or(1).max(1), pinned_by))
    }

    /// Every topic of the namespace that has partition metadata or a stream (event types,
    /// and the global stream), by name, with each partition's stream, hash tag, cluster slot,
    /// master (on a cluster) and length. Named streams (remote commands' and replies') are
    /// not topics and are left out.
    ///
    /// Scans the namespace (`SCAN`, on every master of a cluster), then reads each
    /// partition's length; not atomic.
    pub async fn topics(&self) -> CoreResult<Vec<TopicInfo>> {
        let inner = self.inner();
        let keys = &inner.keys;
        let mut conn = inner.conn.clone();
        let scan_error = |e: redis::RedisError| inner.server.error(&e, "SCAN", None);
        let mut topics: BTreeSet<Topic> = BTreeSet::new();
        let meta_prefix = keys.topic_meta("");
        for key in conn
            .scan(&keys.topic_meta_pattern(), Some("hash"))
            .await
            .map_err(scan_error)?
        {
            if let Some(event_type) = key.strip_prefix(&meta_prefix) {
                topics.insert(Topic::of_type(event_type));
            }
        }
        for key in conn
            .scan(&keys.stream_pattern(), Some("stream"))
            .await
            .map_err(scan_error)?
        {
            if let Some((topic @ (Topic::Type(_) | Topic::All), _)) = keys.parse_stream(&key) {
                topics.insert(topic);
            }
        }
        let masters = if inner.config.is_cluster() {
            conn.cluster_masters()
                .await
                .map_err(|e| inner.server.error(&e, "CLUSTER SLOTS", None))?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(topics.len());
        for topic in topics {
            out.push(self.topic_info(topic, &masters).await?);
        }
        Ok(out)
    }

    /// One topic's partitions, given the cluster's masters (none on a single node).
    async fn topic_info(&self, topic: Topic, masters: &[Master]) -> CoreResult<TopicInfo> {
        let inner = self.inner();
        let count = Directory::topic_count(inner, &topic).await?;
        let parts = Directory::parts(inner, &topic, count).await?;
        let lengths = futures_util::future::join_all(parts.iter().map(|part| {
            let mut conn = inner.conn.clone();
            async move {
                redis::cmd("XLEN")
                    .arg(&part.key)
                    .query_async::<u64>(&mut conn)
                    .await
                    .map_err(|e| inner.server.error(&e, "XLEN", None))
            }
        }))
        .await;
        let mut partitions = Vec::with_capacity(parts.len());
        for (part, length) in parts.into_iter().zip(lengths) {
            let slot = slot::slot_of(&part.key);
            partitions.push(PartitionInfo {
                index: part.index,
                node: slot::owner(masters, slot).map(|m| m.address.clone()),
                stream: part.key,
                tag: part.tag,
                slot,
                length: length?,
            });
        }
        Ok(TopicInfo { topic, partitions })
    }

    /// The partition count stored for an event type, read now.
    async fn stored_count(&self, event_type: &str) -> Result<u32> {
        partition::read_count(self.inner(), event_type)
            .await
            .map_err(|e| self.setup_error(e, "create topic"))
    }

    /// A core error of a topic operation as this crate's error.
    fn setup_error(&self, error: CoreError, operation: &str) -> Error {
        match error {
            CoreError::Transport(e) => Error::Transport(e),
            other => Error::Transport(eventbus_core::TransportError::new(
                eventbus_core::TransportErrorKind::Protocol,
                &self.inner().server.redacted_url,
                operation,
                other.to_string(),
            )),
        }
    }
}
