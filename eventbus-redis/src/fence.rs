//! [`FencedConsumer`]: a projection's consumer that takes entries from its group only while
//! holding the projection's lease, checked in the same script that takes them.

use std::sync::Arc;
use std::time::Duration;

use crate::conn::Conn;
use async_trait::async_trait;
use eventbus_core::transport::{
    Claimed, ConsumerSpec, DeadLetterReason, Delivery, StreamConsumer, Topic,
};
use eventbus_core::{EntryId, Error as CoreError, Result as CoreResult};
use redis::Value;

use crate::client::Inner;
use crate::consumer::{delivery, parse_claimed, MAX_PAGE};
use crate::read_models::scripts;
use crate::reply;

/// Wraps the consumer of a projection's lease holder. `read` (`XREADGROUP … >`) and
/// `claim_idle` (`XAUTOCLAIM`) run in Lua scripts that first check the lease key holds this
/// instance's token, so an instance whose lease lapsed takes no entry from the group: what
/// its successor reads is exactly what the group hands out, in order. Everything else only
/// touches this consumer's own pending entries and is delegated.
///
/// Reads inside a script cannot block: when there is nothing to read, the consumer waits with
/// a plain `XREAD BLOCK` (which takes nothing) for an entry past each stream's last one, on a
/// connection of its own, then reads again under the lease.
pub(crate) struct FencedConsumer {
    inner: Arc<Inner>,
    delegate: Box<dyn StreamConsumer>,
    waiter: Conn,
    spec: ConsumerSpec,
    streams: Vec<(Topic, String)>,
    lease: String,
    token: String,
}

impl FencedConsumer {
    pub(crate) async fn new(
        inner: Arc<Inner>,
        delegate: Box<dyn StreamConsumer>,
        spec: ConsumerSpec,
        projection: &str,
        token: &str,
    ) -> CoreResult<Self> {
        let waiter = inner.dedicated_connection().await?;
        let streams = spec
            .topics
            .iter()
            .map(|t| (t.clone(), inner.keys.stream(t)))
            .collect();
        let lease = inner.keys.projection_lease(projection);
        Ok(FencedConsumer {
            inner,
            delegate,
            waiter,
            spec,
            streams,
            lease,
            token: token.to_owned(),
        })
    }

    fn error(&self, e: &redis::RedisError, operation: &str, topic: &Topic) -> CoreError {
        self.inner.server.error(
            e,
            operation,
            Some((&topic.to_string(), self.spec.group.as_str())),
        )
    }

    fn first_topic(&self) -> &Topic {
        self.streams.first().map_or(&Topic::All, |(t, _)| t)
    }

    /// One read under the lease: `None` when the lease is not held; otherwise the entries and
    /// the last id of each stream (to wait past).
    async fn read_fenced(&self, count: usize) -> CoreResult<Option<(Vec<Delivery>, Vec<String>)>> {
        let mut invocation = scripts::FENCED_READ.prepare_invoke();
        invocation.key(&self.lease);
        for (_, key) in &self.streams {
            invocation.key(key);
        }
        invocation
            .arg(&self.token)
            .arg(&self.spec.group)
            .arg(&self.spec.consumer)
            .arg(count.max(1));
        let value: Value = invocation
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.error(&e, "EVALSHA (fenced XREADGROUP)", self.first_topic()))?;
        let protocol = || {
            self.inner
                .server
                .protocol("fenced XREADGROUP", "unexpected reply")
        };
        if let Value::Int(_) = value {
            return Ok(None);
        }
        let Value::Array(mut parts) = value else {
            return Err(protocol());
        };
        if parts.len() != 2 {
            return Err(protocol());
        }
        let last: Vec<String> = reply::items(&parts[1])
            .ok_or_else(protocol)?
            .iter()
            .filter_map(reply::text)
            .collect();
        let read = parts.swap_remove(0);
        let streams = reply::into_streams(read).ok_or_else(protocol)?;
        let mut deliveries = Vec::new();
        for (key, entries) in streams {
            let Some((topic, _)) = self.streams.iter().find(|(_, k)| *k == key) else {
                continue;
            };
            deliveries.extend(entries.into_iter().filter_map(|e| delivery(topic, e, 1)));
        }
        Ok(Some((deliveries, last)))
    }
}

#[async_trait]
impl StreamConsumer for FencedConsumer {
    async fn read(&self, count: usize, block: Duration) -> CoreResult<Vec<Delivery>> {
        let Some((deliveries, last)) = self.read_fenced(count).await? else {
            // Not the lease holder (any more): take nothing; the runner stands by.
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        };
        if !deliveries.is_empty() || block.is_zero() || last.len() != self.streams.len() {
            return Ok(deliveries);
        }
        // Wait, taking nothing, for an entry past each stream's last one; then read again.
        let mut wait = redis::cmd("XREAD");
        wait.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS");
        for (_, key) in &self.streams {
            wait.arg(key);
        }
        for id in &last {
            wait.arg(id);
        }
        let limit = block + self.inner.config.response_timeout_duration();
        match tokio::time::timeout(limit, wait.query_async::<Value>(&mut self.waiter.clone())).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(self.error(&e, "XREAD", self.first_topic())),
            Err(_) => {
                return Err(self
                    .inner
                    .server
                    .timeout("XREAD", format!("no reply within {} ms", limit.as_millis())))
            }
        }
        Ok(self
            .read_fenced(count)
            .await?
            .map(|(deliveries, _)| deliveries)
            .unwrap_or_default())
    }

    async fn recover_own(&self, topic: &Topic, after: &str, count: usize) -> CoreResult<Claimed> {
        self.delegate.recover_own(topic, after, count).await
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
        let value: Value = scripts::FENCED_CLAIM
            .key(&self.lease)
            .key(&key)
            .arg(&self.token)
            .arg(&self.spec.group)
            .arg(&self.spec.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg(count.clamp(1, MAX_PAGE))
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.error(&e, "EVALSHA (fenced XAUTOCLAIM)", topic))?;
        if let Value::Int(_) = value {
            return Ok(Claimed {
                deliveries: Vec::new(),
                deleted: Vec::new(),
                next_cursor: cursor.to_owned(),
            });
        }
        parse_claimed(topic, &value).ok_or_else(|| {
            self.inner
                .server
                .protocol("fenced XAUTOCLAIM", "unexpected reply")
        })
    }

    async fn renew(&self, topic: &Topic, ids: &[EntryId]) -> CoreResult<Vec<EntryId>> {
        self.delegate.renew(topic, ids).await
    }

    async fn give_back(
        &self,
        topic: &Topic,
        entries: &[(EntryId, u32)],
        idle: Duration,
    ) -> CoreResult<()> {
        self.delegate.give_back(topic, entries, idle).await
    }

    async fn redeliver(&self, topic: &Topic, id: &str) -> CoreResult<Option<Delivery>> {
        self.delegate.redeliver(topic, id).await
    }

    async fn ack(&self, acks: &[(Topic, Vec<EntryId>)]) -> CoreResult<()> {
        self.delegate.ack(acks).await
    }

    async fn dead_letter(
        &self,
        topic: &Topic,
        id: &str,
        reason: &DeadLetterReason,
    ) -> CoreResult<()> {
        self.delegate.dead_letter(topic, id, reason).await
    }

    async fn remove_idle_consumers(
        &self,
        topic: &Topic,
        idle: Duration,
    ) -> CoreResult<Vec<String>> {
        self.delegate.remove_idle_consumers(topic, idle).await
    }
}
