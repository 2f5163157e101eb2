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
use crate::partition::{self, Part};
use crate::reply::{self, RawEntry};
use crate::scripts;

mod read;
pub(crate) mod share;
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
use share::Sharing;

/// A consumer of a group on Redis, made by
/// [`RedisTransport::consumer`](eventbus_core::StreamTransport::consumer).
///
/// Blocking reads (`XREADGROUP … BLOCK`) go over a dedicated connection, so they never stall
/// other commands; everything else uses the transport's shared multiplexed connection.
///
/// On a partitioned topic (more than one partition, or any topic on a cluster) the
/// consumers of a group share the partitions: each reads only the partitions whose lease it
/// holds, handed over between consumers without a duplicate.
/// Entry ids of such a topic are qualified with their partition (`"{partition}/{id}"`).
pub struct RedisConsumer {
    inner: Arc<Inner>,
    reader: Conn,
    spec: ConsumerSpec,
    sharing: Arc<Sharing>,
    /// Whose turn it is to be blocked on (cluster reads).
    rotation: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("server", &self.inner.server.redacted_url)
            .field("spec", &self.spec)
            .finish()
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        self.sharing.stop.cancel();
    }
}

impl RedisConsumer {
    pub(crate) fn new(client: RedisClient, reader: Conn, spec: ConsumerSpec) -> Self {
        let inner = client.shared();
        let sharing = Arc::new(Sharing::new(&inner, &spec.topics));
        sharing.start(inner.clone(), spec.group.clone(), spec.consumer.clone());
        RedisConsumer {
            inner,
            reader,
            spec,
            sharing,
            rotation: Default::default(),
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

    /// The partition stream of an entry of `topic`, and its unqualified id.
    fn locate(&self, topic: &Topic, id: &str) -> CoreResult<(Part, String, bool)> {
        self.sharing.locate(topic, id).ok_or_else(|| {
            CoreError::Config(format!(
                "entry {id} is of no partition of {topic} that consumer {} reads",
                self.name()
            ))
        })
    }

    /// Groups qualified ids of `topic` (with what goes with each) by partition stream.
    fn by_part<T: Clone>(
        &self,
        topic: &Topic,
        items: &[(EntryId, T)],
    ) -> CoreResult<Vec<PartBatch<T>>> {
        let mut out: Vec<PartBatch<T>> = Vec::new();
        for (id, extra) in items {
            let (part, raw, partitioned) = self.locate(topic, id)?;
            match out.iter_mut().find(|(p, _, _)| p.index == part.index) {
                Some((_, _, ids)) => ids.push((raw, extra.clone())),
                None => out.push((part, partitioned, vec![(raw, extra.clone())])),
            }
        }
        Ok(out)
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

    /// Runs one claim-shaped script page on a partition stream and qualifies its ids.
    async fn claim_page<F>(
        &self,
        topic: &Topic,
        part: &Part,
        partitioned: bool,
        operation: &str,
        script: &redis::Script,
        args: F,
    ) -> CoreResult<Claimed>
    where
        F: Fn(&mut redis::ScriptInvocation<'_>),
    {
        let value: Value = self
            .retry_once(operation, topic, |mut conn| {
                let mut invocation = script.key(&part.key);
                args(&mut invocation);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let mut claimed = self.claimed(topic, &value, operation)?;
        if partitioned {
            let i = self.sharing.topic_index(topic).unwrap_or(usize::MAX);
            self.sharing.take(i, part.index, &mut claimed.deliveries);
            for id in &mut claimed.deleted {
                *id = partition::qualify(part.index, id, true);
            }
        }
        Ok(claimed)
    }
}

impl RedisConsumer {
    /// One page of a claim-shaped script over the partitions this consumer holds, one
    /// partition per call from the cursor's on: the cursor is qualified with its partition
    /// (`"{partition}/{cursor}"`) on a partitioned topic, and `0-0` once the last held
    /// partition is done.
    async fn held_page<F>(
        &self,
        topic: &Topic,
        cursor: &str,
        operation: &str,
        script: &redis::Script,
        args: F,
    ) -> CoreResult<Claimed>
    where
        F: Fn(&mut redis::ScriptInvocation<'_>, &str),
    {
        self.sharing
            .ensure_ready(&self.inner, self.group(), self.name())
            .await?;
        let (parts, partitioned) = self.sharing.held_parts(topic);
        let (from, cursor) = split_cursor(cursor);
        let Some(position) = parts.iter().position(|p| p.index >= from) else {
            return Ok(Claimed {
                next_cursor: "0-0".to_owned(),
                ..Claimed::default()
            });
        };
        let part = &parts[position];
        let cursor = if part.index == from {
            cursor
        } else {
            "0-0".to_owned()
        };
        let mut claimed = self
            .claim_page(topic, part, partitioned, operation, script, |invocation| {
                args(invocation, &cursor)
            })
            .await?;
        claimed.next_cursor = match (claimed.next_cursor.as_str(), parts.get(position + 1)) {
            ("0-0", Some(next)) => format!("{}/0-0", next.index),
            ("0-0", None) => "0-0".to_owned(),
            (rest, _) if partitioned => format!("{}/{rest}", part.index),
            (rest, _) => rest.to_owned(),
        };
        Ok(claimed)
    }
}

/// Entries of one partition stream: the stream, whether its topic is partitioned, and the
/// unqualified ids with what goes with each.
type PartBatch<T> = (Part, bool, Vec<(String, T)>);

/// Splits a partition-qualified cursor `"{partition}/{cursor}"`.
fn split_cursor(cursor: &str) -> (u32, String) {
    let (index, rest) = partition::split_id(cursor);
    let rest = if rest.is_empty() { "0-0" } else { rest };
    (index, rest.to_owned())
}

#[async_trait]
impl StreamConsumer for RedisConsumer {
    async fn read(&self, count: usize, block: Duration) -> CoreResult<Vec<Delivery>> {
        read::read(self, count, block).await
    }

    async fn recover_own(&self, topic: &Topic, after: &str, count: usize) -> CoreResult<Claimed> {
        self.held_page(
            topic,
            after,
            "recover own pending (XPENDING+XCLAIM)",
            &steps::RECOVER,
            |invocation, cursor| {
                invocation
                    .arg(self.group())
                    .arg(self.name())
                    .arg(cursor)
                    .arg(count.clamp(1, MAX_PAGE));
            },
        )
        .await
    }

    async fn claim_idle(
        &self,
        topic: &Topic,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> CoreResult<Claimed> {
        self.held_page(
            topic,
            cursor,
            "XAUTOCLAIM",
            &steps::CLAIM,
            |invocation, cursor| {
                invocation
                    .arg(self.group())
                    .arg(self.name())
                    .arg(min_idle.as_millis() as u64)
                    .arg(cursor)
                    .arg(count.clamp(1, MAX_PAGE));
            },
        )
        .await
    }

    async fn renew(&self, topic: &Topic, ids: &[EntryId]) -> CoreResult<Vec<EntryId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<(EntryId, ())> = ids.iter().map(|id| (id.clone(), ())).collect();
        let mut lost = Vec::new();
        for (part, partitioned, ids) in self.by_part(topic, &items)? {
            let ids: Vec<String> = ids.into_iter().map(|(id, ())| id).collect();
            for chunk in ids.chunks(MAX_PAGE) {
                let value: Value = self
                    .retry_once("renew (XCLAIM JUSTID)", topic, |mut conn| {
                        let mut invocation = steps::RENEW.key(&part.key);
                        invocation.arg(self.group()).arg(self.name()).arg(chunk);
                        async move { invocation.invoke_async(&mut conn).await }
                    })
                    .await?;
                let gone: Vec<String> = reply::items(&value)
                    .ok_or_else(|| self.protocol("renew"))?
                    .iter()
                    .filter_map(reply::text)
                    .collect();
                self.sharing.settled(topic, part.index, &gone);
                lost.extend(
                    gone.iter()
                        .map(|id| partition::qualify(part.index, id, partitioned)),
                );
            }
        }
        Ok(lost)
    }

    async fn give_back(
        &self,
        topic: &Topic,
        entries: &[(EntryId, u32)],
        idle: Duration,
    ) -> CoreResult<()> {
        for (part, _, entries) in self.by_part(topic, entries)? {
            for chunk in entries.chunks(MAX_PAGE / 2) {
                let _: Value = self
                    .retry_once("give back (XCLAIM IDLE RETRYCOUNT)", topic, |mut conn| {
                        let mut invocation = steps::GIVE_BACK.key(&part.key);
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
                let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
                self.sharing.settled(topic, part.index, &ids);
            }
        }
        Ok(())
    }

    async fn redeliver(&self, topic: &Topic, id: &str) -> CoreResult<Option<Delivery>> {
        let (part, raw, partitioned) = self.locate(topic, id)?;
        let value: Value = self
            .retry_once("redeliver (XCLAIM)", topic, |mut conn| {
                let mut invocation = scripts::REDELIVER.key(&part.key);
                invocation.arg(self.group()).arg(self.name()).arg(&raw);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if matches!(value, Value::Nil) {
            // No longer this consumer's: nothing to settle here.
            self.sharing
                .settled(topic, part.index, std::slice::from_ref(&raw));
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
        Ok(
            delivery(topic, entry, u32::try_from(count).unwrap_or(u32::MAX)).map(|mut d| {
                d.entry_id = partition::qualify(part.index, &d.entry_id, partitioned);
                d
            }),
        )
    }

    async fn ack(&self, acks: &[(Topic, Vec<EntryId>)]) -> CoreResult<()> {
        // One XACK per partition stream; a pipeline per slot (a cluster pipeline cannot
        // span slots), all at once.
        let mut per_stream: Vec<(Topic, Part, Vec<String>)> = Vec::new();
        for (topic, ids) in acks.iter().filter(|(_, ids)| !ids.is_empty()) {
            let items: Vec<(EntryId, ())> = ids.iter().map(|id| (id.clone(), ())).collect();
            for (part, _, ids) in self.by_part(topic, &items)? {
                per_stream.push((
                    topic.clone(),
                    part,
                    ids.into_iter().map(|(id, ())| id).collect(),
                ));
            }
        }
        if per_stream.is_empty() {
            return Ok(());
        }
        let batches: Vec<Vec<&(Topic, Part, Vec<String>)>> = if self.inner.config.is_cluster() {
            per_stream.iter().map(|s| vec![s]).collect()
        } else {
            vec![per_stream.iter().collect()]
        };
        let results = futures_util::future::join_all(batches.iter().map(|batch| {
            let mut pipe = redis::pipe();
            for (_, part, ids) in batch {
                pipe.cmd("XACK")
                    .arg(&part.key)
                    .arg(self.group())
                    .arg(ids)
                    .ignore();
            }
            let topic = batch
                .first()
                .map(|(t, _, _)| t.clone())
                .unwrap_or(Topic::All);
            async move {
                self.retry_once("XACK", &topic, |mut conn| {
                    let pipe = &pipe;
                    async move { pipe.query_async::<()>(&mut conn).await }
                })
                .await
            }
        }))
        .await;
        for (topic, part, ids) in &per_stream {
            self.sharing.settled(topic, part.index, ids);
        }
        results.into_iter().collect()
    }

    async fn dead_letter(
        &self,
        topic: &Topic,
        id: &str,
        reason: &DeadLetterReason,
    ) -> CoreResult<()> {
        let (part, raw, _) = self.locate(topic, id)?;
        let dlq = self
            .inner
            .keys
            .partition_dead_letters(self.group(), part.tag.as_deref());
        let at = codec::format_timestamp(now_seconds());
        self.retry_once("dead letter (XADD+XACK)", topic, |mut conn| {
            let mut invocation = scripts::DEAD_LETTER.key(&part.key);
            invocation
                .key(&dlq)
                .arg(self.group())
                .arg(&raw)
                .arg(&reason.consumer)
                .arg(&reason.error)
                .arg(reason.delivery_count)
                .arg(&at)
                .arg(&part.key)
                .arg(self.inner.config.dead_letter_stream_maxlen())
                .arg(self.name());
            async move { invocation.invoke_async::<Value>(&mut conn).await }
        })
        .await?;
        self.sharing.settled(topic, part.index, &[raw]);
        Ok(())
    }

    async fn remove_idle_consumers(
        &self,
        topic: &Topic,
        idle: Duration,
    ) -> CoreResult<Vec<String>> {
        let mut removed = Vec::new();
        for part in self.sharing.parts(topic) {
            for name in self.remove_idle_on(topic, &part.key, idle).await? {
                if !removed.contains(&name) {
                    removed.push(name);
                }
            }
        }
        Ok(removed)
    }

    async fn close(&self) -> CoreResult<()> {
        self.sharing
            .close(&self.inner, self.group(), self.name())
            .await;
        Ok(())
    }
}

impl RedisConsumer {
    /// Removes the group's consumers of one stream idle longer than `idle` with nothing
    /// pending.
    async fn remove_idle_on(
        &self,
        topic: &Topic,
        key: &str,
        idle: Duration,
    ) -> CoreResult<Vec<String>> {
        let value: Value = self
            .retry_once("XINFO CONSUMERS", topic, |mut conn| {
                let mut cmd = redis::cmd("XINFO");
                cmd.arg("CONSUMERS").arg(key).arg(self.group());
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
                    let mut invocation = scripts::REMOVE_CONSUMER.key(key);
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
