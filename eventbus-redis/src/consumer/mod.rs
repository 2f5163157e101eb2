//! [`RedisConsumer`]: one consumer of a group, on its own connection for blocking reads.

use std::sync::Arc;
use std::time::Duration;

use crate::conn::Conn;
use async_trait::async_trait;
use eventbus_core::envelope::now_seconds;
use eventbus_core::transport::{
    Claimed, ConsumerSpec, DeadLetterReason, Delivery, StreamConsumer, Topic,
};
use eventbus_core::{EntryId, Error as CoreError, Result as CoreResult};
use redis::{RedisError, Value};

use crate::codec;
use crate::error::Server;
use crate::reply::{self, RawEntry};
use crate::scripts;

pub(crate) mod steps;

/// A delivery of an entry as read; `None` for an entry deleted while pending.
pub(crate) fn delivery(topic: &Topic, entry: RawEntry, delivery_count: u32) -> Option<Delivery> {
    let fields = entry.fields?;
    Some(Delivery {
        topic: topic.clone(),
        entry_id: entry.id,
        delivery_count,
        event: codec::decode(&fields),
    })
}

/// Parses the reply of a claim or recovery script: `{next cursor, {{id, delivery count,
/// fields}…}, {deleted ids…}}`; `None` when it has another shape.
pub(crate) fn parse_claimed(topic: &Topic, value: &Value) -> Option<Claimed> {
    let parts = reply::items(value)?;
    let next_cursor = reply::text(parts.first()?)?;
    let mut deliveries = Vec::new();
    for row in reply::items(parts.get(1)?)? {
        let row = reply::items(row)?;
        let (id, count, fields) = (row.first()?, row.get(1)?, row.get(2)?);
        let count = u32::try_from(reply::int(count)?).unwrap_or(u32::MAX);
        let entry = reply::entry(&Value::Array(vec![id.clone(), fields.clone()]))?;
        deliveries.extend(delivery(topic, entry, count));
    }
    let deleted = match parts.get(2) {
        Some(ids) => reply::items(ids)?.iter().filter_map(reply::text).collect(),
        None => Vec::new(),
    };
    Some(Claimed {
        deliveries,
        deleted,
        next_cursor,
    })
}

/// Most ids or entries one script call takes (Lua's stack bounds `unpack`).
pub(crate) const MAX_PAGE: usize = 1000;

/// Whether an error means the connection was lost (so a fresh one may succeed).
fn connection_lost(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal()
}
use crate::client::{Inner, RedisClient};

/// A consumer of a group on Redis, made by
/// [`RedisTransport::consumer`](eventbus_core::StreamTransport::consumer).
///
/// Blocking reads (`XREADGROUP … BLOCK`) go over a dedicated connection, so they never stall
/// other commands; everything else uses the transport's shared multiplexed connection.
pub struct RedisConsumer {
    inner: Arc<Inner>,
    reader: Conn,
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
    pub(crate) fn new(client: RedisClient, reader: Conn, spec: ConsumerSpec) -> Self {
        let inner = client.shared();
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

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    fn error(&self, error: &RedisError, operation: &str, topic: &Topic) -> CoreError {
        self.server()
            .error(error, operation, Some((&topic.to_string(), self.group())))
    }

    fn protocol(&self, operation: &str) -> CoreError {
        self.server().protocol(operation, "unexpected reply")
    }

    fn claimed(&self, topic: &Topic, value: &Value, operation: &str) -> CoreResult<Claimed> {
        parse_claimed(topic, value).ok_or_else(|| self.protocol(operation))
    }

    /// Runs a command on the shared connection, once more on a fresh connection when the
    /// connection was lost (a server `timeout`, `CLIENT KILL`, a failover): the connection
    /// manager reconnects on the first failure. Every command sent here is safe to repeat.
    async fn retry_once<T, F, Fut>(&self, operation: &str, topic: &Topic, f: F) -> CoreResult<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match f(self.conn()).await {
            Err(e) if connection_lost(&e) => {
                tracing::debug!(operation, error = %e, "connection lost; retrying once on a fresh connection");
                f(self.conn()).await
            }
            other => other,
        }
        .map_err(|e| self.error(&e, operation, topic))
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
        let streams = reply::into_streams(value).ok_or_else(|| self.protocol("XREADGROUP"))?;
        let mut deliveries = Vec::new();
        for (key, entries) in streams {
            let Some(topic) = self.topic_of_key(&key) else {
                continue;
            };
            deliveries.extend(entries.into_iter().filter_map(|e| delivery(topic, e, 1)));
        }
        Ok(deliveries)
    }

    async fn recover_own(&self, topic: &Topic, after: &str, count: usize) -> CoreResult<Claimed> {
        let key = self.inner.keys.stream(topic);
        let after = if after.is_empty() { "0-0" } else { after };
        let value: Value = self
            .retry_once(
                "recover own pending (XPENDING+XCLAIM)",
                topic,
                |mut conn| {
                    let mut invocation = steps::RECOVER.key(&key);
                    invocation
                        .arg(self.group())
                        .arg(self.name())
                        .arg(after)
                        .arg(count.clamp(1, MAX_PAGE));
                    async move { invocation.invoke_async(&mut conn).await }
                },
            )
            .await?;
        self.claimed(topic, &value, "recover own pending")
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
        let value: Value = self
            .retry_once("XAUTOCLAIM", topic, |mut conn| {
                let mut invocation = steps::CLAIM.key(&key);
                invocation
                    .arg(self.group())
                    .arg(self.name())
                    .arg(min_idle.as_millis() as u64)
                    .arg(cursor)
                    .arg(count.clamp(1, MAX_PAGE));
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        self.claimed(topic, &value, "XAUTOCLAIM")
    }

    async fn renew(&self, topic: &Topic, ids: &[EntryId]) -> CoreResult<Vec<EntryId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.inner.keys.stream(topic);
        let mut lost = Vec::new();
        for chunk in ids.chunks(MAX_PAGE) {
            let value: Value = self
                .retry_once("renew (XCLAIM JUSTID)", topic, |mut conn| {
                    let mut invocation = steps::RENEW.key(&key);
                    invocation.arg(self.group()).arg(self.name()).arg(chunk);
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            let ids = reply::items(&value).ok_or_else(|| self.protocol("renew"))?;
            lost.extend(ids.iter().filter_map(reply::text));
        }
        Ok(lost)
    }

    async fn give_back(
        &self,
        topic: &Topic,
        entries: &[(EntryId, u32)],
        idle: Duration,
    ) -> CoreResult<()> {
        let key = self.inner.keys.stream(topic);
        for chunk in entries.chunks(MAX_PAGE / 2) {
            let _: Value = self
                .retry_once("give back (XCLAIM IDLE RETRYCOUNT)", topic, |mut conn| {
                    let mut invocation = steps::GIVE_BACK.key(&key);
                    invocation
                        .arg(self.group())
                        .arg(self.name())
                        .arg(idle.as_millis() as u64);
                    for (id, count) in chunk {
                        invocation.arg(id).arg(*count);
                    }
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
        }
        Ok(())
    }

    async fn redeliver(&self, topic: &Topic, id: &str) -> CoreResult<Option<Delivery>> {
        let key = self.inner.keys.stream(topic);
        let value: Value = self
            .retry_once("redeliver (XCLAIM)", topic, |mut conn| {
                let mut invocation = scripts::REDELIVER.key(&key);
                invocation.arg(self.group()).arg(self.name()).arg(id);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
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
        Ok(delivery(
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
        let topic = acks.first().map(|(t, _)| t.clone()).unwrap_or(Topic::All);
        self.retry_once("XACK", &topic, |mut conn| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut conn).await }
        })
        .await
    }

    async fn dead_letter(
        &self,
        topic: &Topic,
        id: &str,
        reason: &DeadLetterReason,
    ) -> CoreResult<()> {
        let key = self.inner.keys.stream(topic);
        let dlq = self.inner.keys.dead_letters(self.group());
        let at = codec::format_timestamp(now_seconds());
        self.retry_once("dead letter (XADD+XACK)", topic, |mut conn| {
            let mut invocation = scripts::DEAD_LETTER.key(&key);
            invocation
                .key(&dlq)
                .arg(self.group())
                .arg(id)
                .arg(&reason.consumer)
                .arg(&reason.error)
                .arg(reason.delivery_count)
                .arg(&at)
                .arg(&key)
                .arg(self.inner.config.dead_letter_stream_maxlen())
                .arg(self.name());
            async move { invocation.invoke_async::<Value>(&mut conn).await }
        })
        .await?;
        Ok(())
    }

    async fn remove_idle_consumers(
        &self,
        topic: &Topic,
        idle: Duration,
    ) -> CoreResult<Vec<String>> {
        let key = self.inner.keys.stream(topic);
        let value: Value = self
            .retry_once("XINFO CONSUMERS", topic, |mut conn| {
                let mut cmd = redis::cmd("XINFO");
                cmd.arg("CONSUMERS").arg(&key).arg(self.group());
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
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
            let deleted: i64 = self
                .retry_once("XGROUP DELCONSUMER", topic, |mut conn| {
                    let mut invocation = scripts::REMOVE_CONSUMER.key(&key);
                    invocation.arg(self.group()).arg(&name);
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            if deleted == 1 {
                removed.push(name);
            }
        }
        Ok(removed)
    }
}
