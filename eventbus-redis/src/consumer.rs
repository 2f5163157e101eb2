//! [`RedisConsumer`]: one consumer of a group, on its own connection for blocking reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::envelope::now_seconds;
use eventbus_core::transport::{
    Claimed, ConsumerSpec, DeadLetterReason, Delivery, StreamConsumer, Topic,
};
use eventbus_core::{EntryId, Error as CoreError, Result as CoreResult};
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};

use crate::codec;
use crate::error::Server;
use crate::reply::{self, RawEntry};
use crate::scripts;
use crate::transport::Inner;

/// A consumer of a group on Redis, made by
/// [`RedisTransport::consumer`](eventbus_core::StreamTransport::consumer).
///
/// Blocking reads (`XREADGROUP … BLOCK`) go over a dedicated connection, so they never stall
/// other commands; everything else uses the transport's shared multiplexed connection.
pub struct RedisConsumer {
    inner: Arc<Inner>,
    reader: ConnectionManager,
    spec: ConsumerSpec,
    /// `(topic, stream key)` of every topic read.
    streams: Vec<(Topic, String)>,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("server", &self.inner.server.redacted_url)
            .field("spec", &self.spec)
            .finish()
    }
}

impl RedisConsumer {
    pub(crate) fn new(inner: Arc<Inner>, reader: ConnectionManager, spec: ConsumerSpec) -> Self {
        let streams = spec
            .topics
            .iter()
            .map(|t| (t.clone(), inner.keys.stream(t)))
            .collect();
        RedisConsumer {
            inner,
            reader,
            spec,
            streams,
        }
    }

    /// What this consumer is.
    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    fn server(&self) -> &Server {
        &self.inner.server
    }

    fn group(&self) -> &str {
        &self.spec.group
    }

    fn name(&self) -> &str {
        &self.spec.consumer
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn error(&self, error: &RedisError, operation: &str, topic: &Topic) -> CoreError {
        self.server()
            .error(error, operation, Some((&topic.to_string(), self.group())))
    }

    fn protocol(&self, operation: &str) -> CoreError {
        self.server().protocol(operation, "unexpected reply")
    }

    fn delivery(topic: &Topic, entry: RawEntry, delivery_count: u32) -> Option<Delivery> {
        let fields = entry.fields?;
        Some(Delivery {
            topic: topic.clone(),
            entry_id: entry.id,
            delivery_count,
            event: codec::decode(&fields),
        })
    }

    /// The topic a stream key of a reply belongs to.
    fn topic_of_key(&self, key: &str) -> Option<&Topic> {
        self.streams.iter().find(|(_, k)| k == key).map(|(t, _)| t)
    }

    /// The topic named in a `NOGROUP` reply to a multi-stream read, or the first topic.
    fn topic_in_error(&self, error: &RedisError) -> &Topic {
        let text = error.to_string();
        self.streams
            .iter()
            .find(|(_, key)| text.contains(&format!("'{key}'")))
            .or(self.streams.first())
            .map(|(t, _)| t)
            .unwrap_or(&Topic::All)
    }
}

#[async_trait]
impl StreamConsumer for RedisConsumer {
    async fn read(&self, count: usize, block: Duration) -> CoreResult<Vec<Delivery>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(self.group())
            .arg(self.name())
            .arg("COUNT")
            .arg(count.max(1));
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for (_, key) in &self.streams {
            cmd.arg(key);
        }
        for _ in &self.streams {
            cmd.arg(">");
        }
        let limit = block + self.inner.config.response_timeout_duration();
        let mut reader = self.reader.clone();
        let value: Value = match tokio::time::timeout(limit, cmd.query_async(&mut reader)).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => return Err(self.error(&e, "XREADGROUP", self.topic_in_error(&e))),
            Err(_) => {
                return Err(self.server().timeout(
                    "XREADGROUP",
                    format!("no reply within {} ms", limit.as_millis()),
                ))
            }
        };
        let streams = reply::streams(&value).ok_or_else(|| self.protocol("XREADGROUP"))?;
        let mut deliveries = Vec::new();
        for (key, entries) in streams {
            let Some(topic) = self.topic_of_key(&key) else {
                continue;
            };
            deliveries.extend(
                entries
                    .into_iter()
                    .filter_map(|e| Self::delivery(topic, e, 1)),
            );
        }
        Ok(deliveries)
    }

    async fn recover_own(&self, topic: &Topic, count: usize) -> CoreResult<Vec<Delivery>> {
        let key = self.inner.keys.stream(topic);
        let pending: Value = redis::cmd("XPENDING")
            .arg(&key)
            .arg(self.group())
            .arg("-")
            .arg("+")
            .arg(count.max(1))
            .arg(self.name())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.error(&e, "XPENDING", topic))?;
        let rows = reply::pending_rows(&pending).ok_or_else(|| self.protocol("XPENDING"))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let counts: HashMap<&str, u32> =
            rows.iter().map(|r| (r.id.as_str(), r.deliveries)).collect();
        let claimed: Value = redis::cmd("XCLAIM")
            .arg(&key)
            .arg(self.group())
            .arg(self.name())
            .arg(0)
            .arg(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.error(&e, "XCLAIM", topic))?;
        let entries = reply::entries(&claimed).ok_or_else(|| self.protocol("XCLAIM"))?;
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in entries {
            let count = counts
                .get(entry.id.as_str())
                .map_or(1, |c| c.saturating_add(1));
            deliveries.extend(Self::delivery(topic, entry, count));
        }
        // Ids XCLAIM did not return no longer exist (trimmed or deleted): ack them.
        let deleted: Vec<&str> = rows
            .iter()
            .map(|r| r.id.as_str())
            .filter(|id| !deliveries.iter().any(|d| d.entry_id == *id))
            .collect();
        if !deleted.is_empty() {
            redis::cmd("XACK")
                .arg(&key)
                .arg(self.group())
                .arg(&deleted)
                .query_async::<Value>(&mut self.conn())
                .await
                .map_err(|e| self.error(&e, "XACK", topic))?;
        }
        Ok(deliveries)
    }

    async fn claim_idle(
        &self,
        topic: &Topic,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> CoreResult<Claimed> {
        let key = self.inner.keys.stream(topic);
        let cursor = if cursor.is_empty() { "0-0" } else { cursor };
        let value: Value = redis::cmd("XAUTOCLAIM")
            .arg(&key)
            .arg(self.group())
            .arg(self.name())
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.error(&e, "XAUTOCLAIM", topic))?;
        let parts = reply::items(&value).ok_or_else(|| self.protocol("XAUTOCLAIM"))?;
        let next_cursor = parts
            .first()
            .and_then(reply::text)
            .ok_or_else(|| self.protocol("XAUTOCLAIM"))?;
        let entries = parts
            .get(1)
            .and_then(reply::entries)
            .ok_or_else(|| self.protocol("XAUTOCLAIM"))?;
        let mut deleted: Vec<EntryId> = match parts.get(2) {
            Some(ids) => reply::items(ids)
                .ok_or_else(|| self.protocol("XAUTOCLAIM"))?
                .iter()
                .filter_map(reply::text)
                .collect(),
            None => Vec::new(),
        };
        // Older servers return deleted entries as nil fields instead.
        deleted.extend(
            entries
                .iter()
                .filter(|e| e.fields.is_none())
                .map(|e| e.id.clone()),
        );

        let mut pipe = redis::pipe();
        if !deleted.is_empty() {
            pipe.cmd("XACK")
                .arg(&key)
                .arg(self.group())
                .arg(&deleted)
                .ignore();
        }
        let claimed: Vec<&RawEntry> = entries.iter().filter(|e| e.fields.is_some()).collect();
        if let (Some(first), Some(last)) = (claimed.first(), claimed.last()) {
            pipe.cmd("XPENDING")
                .arg(&key)
                .arg(self.group())
                .arg(&first.id)
                .arg(&last.id)
                .arg(claimed.len())
                .arg(self.name());
        }
        let mut counts: HashMap<String, u32> = HashMap::new();
        if !pipe.is_empty() {
            let values: Vec<Value> = pipe
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.error(&e, "XACK/XPENDING", topic))?;
            if let Some(rows) = values.first().and_then(reply::pending_rows) {
                counts.extend(rows.into_iter().map(|r| (r.id, r.deliveries)));
            }
        }
        let deliveries = entries
            .into_iter()
            .filter_map(|e| {
                let count = counts.get(&e.id).copied().unwrap_or(1);
                Self::delivery(topic, e, count)
            })
            .collect();
        Ok(Claimed {
            deliveries,
            deleted,
            next_cursor,
        })
    }

    async fn redeliver(&self, topic: &Topic, id: &str) -> CoreResult<Option<Delivery>> {
        let key = self.inner.keys.stream(topic);
        let value: Value = scripts::REDELIVER
            .key(&key)
            .arg(self.group())
            .arg(self.name())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.error(&e, "redeliver (XCLAIM)", topic))?;
        if matches!(value, Value::Nil) {
            return Ok(None);
        }
        let parts = reply::items(&value).ok_or_else(|| self.protocol("redeliver"))?;
        let count = parts
            .first()
            .and_then(reply::int)
            .ok_or_else(|| self.protocol("redeliver"))?;
        let entry = parts
            .get(1)
            .and_then(reply::entry)
            .ok_or_else(|| self.protocol("redeliver"))?;
        Ok(Self::delivery(
            topic,
            entry,
            u32::try_from(count).unwrap_or(u32::MAX),
        ))
    }

    async fn ack(&self, acks: &[(Topic, Vec<EntryId>)]) -> CoreResult<()> {
        let mut pipe = redis::pipe();
        for (topic, ids) in acks.iter().filter(|(_, ids)| !ids.is_empty()) {
            pipe.cmd("XACK")
                .arg(self.inner.keys.stream(topic))
                .arg(self.group())
                .arg(ids)
                .ignore();
        }
        if pipe.is_empty() {
            return Ok(());
        }
        pipe.query_async::<()>(&mut self.conn()).await.map_err(|e| {
            let topic = acks.first().map(|(t, _)| t.clone()).unwrap_or(Topic::All);
            self.error(&e, "XACK", &topic)
        })
    }

    async fn dead_letter(
        &self,
        topic: &Topic,
        id: &str,
        reason: &DeadLetterReason,
    ) -> CoreResult<()> {
        let key = self.inner.keys.stream(topic);
        let dlq = self.inner.keys.dead_letters(self.group());
        scripts::DEAD_LETTER
            .key(&key)
            .key(&dlq)
            .arg(self.group())
            .arg(id)
            .arg(&reason.consumer)
            .arg(&reason.error)
            .arg(reason.delivery_count)
            .arg(codec::format_timestamp(now_seconds()))
            .arg(&key)
            .arg(self.inner.config.dead_letter_stream_maxlen())
            .arg(self.name())
            .invoke_async::<Value>(&mut self.conn())
            .await
            .map_err(|e| self.error(&e, "dead letter (XADD+XACK)", topic))?;
        Ok(())
    }

    async fn remove_idle_consumers(
        &self,
        topic: &Topic,
        idle: Duration,
    ) -> CoreResult<Vec<String>> {
        let key = self.inner.keys.stream(topic);
        let value: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&key)
            .arg(self.group())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.error(&e, "XINFO CONSUMERS", topic))?;
        let consumers = reply::items(&value).ok_or_else(|| self.protocol("XINFO CONSUMERS"))?;
        let mut removed = Vec::new();
        for consumer in consumers {
            let info = reply::map(consumer).ok_or_else(|| self.protocol("XINFO CONSUMERS"))?;
            let name = reply::field(&info, "name").and_then(reply::text);
            let pending = reply::field(&info, "pending").and_then(reply::int);
            let idle_ms = reply::field(&info, "idle").and_then(reply::int);
            let (Some(name), Some(pending), Some(idle_ms)) = (name, pending, idle_ms) else {
                return Err(self.protocol("XINFO CONSUMERS"));
            };
            if pending != 0 || u128::try_from(idle_ms).unwrap_or(0) <= idle.as_millis() {
                continue;
            }
            let deleted: i64 = scripts::REMOVE_CONSUMER
                .key(&key)
                .arg(self.group())
                .arg(&name)
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| self.error(&e, "XGROUP DELCONSUMER", topic))?;
            if deleted == 1 {
                removed.push(name);
            }
        }
        Ok(removed)
    }
}
