//! Following a topic without a consumer group (`XREAD`), as `eventbus tail` does: every
//! partition of a partitioned topic, merged by entry id.

use std::time::Duration;

use crate::conn::Conn;
use eventbus_core::transport::{Malformed, StartFrom, Topic};
use eventbus_core::{EntryId, Envelope, Result as CoreResult};
use redis::Value;
use serde_json::Value as Json;

use crate::admin::stream_id;
use crate::codec;
use crate::partition::{self, Directory};
use crate::reply::{self, RawEntry};
use crate::transport::RedisTransport;

/// How often a tail of partitions on several cluster nodes looks for new entries while it
/// waits (a blocking `XREAD` can't span slots).
const CLUSTER_POLL: Duration = Duration::from_millis(100);

/// An entry read by a [`StreamTail`]: its id (qualified with its partition for a partitioned
/// topic, `{partition}/{id}`, as publish hands them out), and the event or why it can't be
/// decoded.
pub type TailEntry = (EntryId, Result<Envelope<Json>, Malformed>);

/// A cursor following a topic's streams (one per partition), with its own connection for
/// blocking reads. Reads acknowledge nothing and join no group: other consumers are
/// unaffected.
///
/// The partitions are those the topic has when the tail starts; partitions added later are
/// not followed.
pub struct StreamTail {
    transport: RedisTransport,
    streams: Vec<Followed>,
    /// Whether ids are qualified with their partition.
    partitioned: bool,
    /// The id of the last entry returned.
    last: EntryId,
    conn: Conn,
}

/// One partition's stream and where its reading is.
#[derive(Debug)]
struct Followed {
    index: u32,
    key: String,
    cursor: String,
}

impl std::fmt::Debug for StreamTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTail")
            .field("streams", &self.streams)
            .field("cursor", &self.last)
            .finish()
    }
}

impl RedisTransport {
    /// Follows a topic's streams (every partition's) from their beginning or from now on.
    pub async fn tail(&self, topic: &Topic, from: StartFrom) -> CoreResult<StreamTail> {
        let inner = self.inner();
        crate::settings::check_readable(inner, std::slice::from_ref(topic)).await?;
        let server = &inner.server;
        let mut conn = self.client().dedicated_connection().await?;
        let count = Directory::topic_count(inner, topic).await?;
        let partitioned =
            matches!(topic, Topic::Type(_) | Topic::All) && Directory::partitioned(inner, count);
        let mut streams = Vec::new();
        for part in Directory::parts(inner, topic, count).await? {
            let cursor = match from {
                StartFrom::Beginning => "0-0".to_string(),
                StartFrom::New => {
                    let last: Value = redis::cmd("XREVRANGE")
                        .arg(&part.key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| server.transport(&e, "XREVRANGE"))?;
                    reply::entries(&last)
                        .and_then(|entries| entries.into_iter().next())
                        .map_or_else(|| "0-0".to_string(), |e| e.id)
                }
            };
            streams.push(Followed {
                index: part.index,
                key: part.key,
                cursor,
            });
        }
        Ok(StreamTail {
            transport: self.clone(),
            streams,
            partitioned,
            last: "0-0".to_string(),
            conn,
        })
    }
}

impl StreamTail {
    /// The id of the last entry returned (`0-0` before any).
    pub fn cursor(&self) -> &str {
        &self.last
    }

    /// The stream keys it follows, partition 0 first.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.streams.iter().map(|s| s.key.as_str())
    }

    /// Up to `count` entries after the cursor, oldest first across partitions (by entry
    /// id), waiting up to `block` for one to arrive.
    pub async fn next_batch(
        &mut self,
        count: usize,
        block: Duration,
    ) -> CoreResult<Vec<TailEntry>> {
        let count = count.max(1);
        let mut read = if self.streams.len() > 1 && self.transport.config().is_cluster() {
            self.poll(count, block).await?
        } else {
            self.read(count, block, 0..self.streams.len()).await?
        };
        // Merged by id; a stream's cursor moves only past what is returned.
        read.sort_by_key(|(position, entry)| (stream_id(&entry.id), *position));
        read.truncate(count);
        let mut out = Vec::with_capacity(read.len());
        for (position, entry) in read {
            let followed = &mut self.streams[position];
            followed.cursor = entry.id.clone();
            let id = partition::qualify(followed.index, &entry.id, self.partitioned);
            self.last = id.clone();
            if let Some(fields) = entry.fields {
                out.push((id, codec::decode(&fields)));
            }
        }
        Ok(out)
    }

    /// One `XREAD` of the streams at `positions` (which share a node), blocking up to
    /// `block`: entries with the position of their stream.
    async fn read(
        &mut self,
        count: usize,
        block: Duration,
        positions: std::ops::Range<usize>,
    ) -> CoreResult<Vec<(usize, RawEntry)>> {
        let server = &self.transport.inner().server;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count);
        if !block.is_zero() {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        cmd.arg("STREAMS");
        for followed in &self.streams[positions.clone()] {
            cmd.arg(&followed.key);
        }
        for followed in &self.streams[positions.clone()] {
            cmd.arg(&followed.cursor);
        }
        let value: Value = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| server.transport(&e, "XREAD"))?;
        let mut out = Vec::new();
        for (key, entries) in reply::streams(&value).unwrap_or_default() {
            if let Some(position) = positions.clone().find(|&p| self.streams[p].key == key) {
                out.extend(entries.into_iter().map(|e| (position, e)));
            }
        }
        Ok(out)
    }

    /// Reads every partition stream on its own (they live in different slots), again every
    /// [`CLUSTER_POLL`] until one has entries or `block` is over.
    async fn poll(&mut self, count: usize, block: Duration) -> CoreResult<Vec<(usize, RawEntry)>> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let mut out = Vec::new();
            for position in 0..self.streams.len() {
                out.extend(
                    self.read(count, Duration::ZERO, position..position + 1)
                        .await?,
                );
            }
            let now = tokio::time::Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(CLUSTER_POLL.min(deadline - now)).await;
        }
    }
}
