//! [`RedisReadModels`]: read models in Redis hashes, lists, sets and counters, committed
//! atomically with the projection's checkpoint and the entry's acknowledgement.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::projection::{Commit, CommitTarget, Committed, ReadModelStore, RebuildStep};
use eventbus_core::transport::{ConsumerSpec, StreamConsumer, Topic};
use eventbus_core::{Error as CoreError, Result as CoreResult};
use redis::Cmd;

use crate::fence::FencedConsumer;
use crate::reply;
use crate::scripts;

mod encode;

/// The keys `PROJECT` takes before the read-model keys.
const PROJECT_FIXED_KEYS: usize = 5;

/// Reads of a rebuild's key registry before giving up on one that keeps changing.
const REGISTRY_ATTEMPTS: usize = 10;

/// Entries one `XAUTOCLAIM` moves when a new lease holder adopts what is pending.
const ADOPT_PAGE: usize = 100;
use crate::client::{Inner, RedisClient};
use crate::transport::RedisTransport;

/// The Redis read-model store of a [`RedisTransport`] (same server, namespace and
/// connection).
///
/// Read-model keys are exactly the projections' key templates (`orders:summary:ord_1`),
/// **not** namespaced, so that other services (the reference article's Python query side)
/// read them where they expect them; [`with_prefix`](Self::with_prefix) puts a prefix in
/// front of them (to keep tenants or tests apart). Values are strings as the article stores
/// them: numbers as decimal strings. Checkpoints, key registries and rebuild state live under
/// the namespace (see [`Keys`](crate::Keys)).
///
/// Each commit is one Lua script: it writes only while the entry is pending for the
/// committing consumer (and the projection's lease is held with the commit's token), then
/// applies the writes, advances the checkpoint, records the keys and acknowledges the entry.
/// All or nothing: before its first write the script checks that none can fail (the type of
/// every key, that increments hit integers and don't overflow), so a write Redis would reject
/// (e.g. `HINCRBY` on a field holding text) fails the commit with
/// [`Error::ReadModelWrite`](eventbus_core::Error::ReadModelWrite) having changed nothing.
/// Every key the script touches, read-model keys included, is declared in `KEYS`; so do the
/// rebuild scripts, which are given the keys their registries list (read just before, and
/// checked unchanged by the script).
#[derive(Clone)]
pub struct RedisReadModels {
    inner: Arc<Inner>,
    prefix: String,
}

impl std::fmt::Debug for RedisReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReadModels")
            .field("server", &self.inner.server.redacted_url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisReadModels {
    /// The store of `transport`'s server and namespace.
    pub fn new(transport: &RedisTransport) -> Self {
        RedisReadModels::from_client(transport.client())
    }

    /// The store of `client`'s server and namespace.
    pub fn from_client(client: &RedisClient) -> Self {
        RedisReadModels {
            inner: client.shared(),
            prefix: String::new(),
        }
    }

    /// Puts `prefix` in front of every read-model key (none by default).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The prefix of read-model keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The members of a key registry (a set of read-model keys).
    async fn members_of(&self, registry: &str) -> CoreResult<Vec<String>> {
        self.query(redis::cmd("SMEMBERS").arg(registry), "SMEMBERS")
            .await
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd, operation: &str) -> CoreResult<T> {
        cmd.query_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, operation, None))
    }
}

fn field_of(topic: &Topic) -> String {
    topic.to_string()
}

#[async_trait]
impl ReadModelStore for RedisReadModels {
    async fn commit(&self, commit: Commit) -> CoreResult<Committed> {
        let keys = &self.inner.keys;
        let rebuild = commit.target == CommitTarget::Rebuild;
        let shadow = keys.projection_shadow_prefix(&commit.projection);
        let stream = keys.stream(&commit.topic);
        let mut invocation = scripts::PROJECT.prepare_invoke();
        invocation
            .key(&stream)
            .key(keys.projection_checkpoint(&commit.projection, rebuild))
            .key(keys.projection_rebuilt(&commit.projection))
            .key(keys.projection_registry(&commit.projection, rebuild))
            .key(keys.projection_lease(&commit.projection));
        // Every key written is declared in KEYS (Redis Cluster routes by them); commands
        // name their key by its index there.
        let mut targets: Vec<String> = Vec::new();
        let mut commands: Vec<Vec<String>> = Vec::new();
        let mut written: Vec<String> = Vec::new();
        for op in &commit.ops {
            let own = self.key(op.key());
            let target = if rebuild {
                format!("{shadow}{own}")
            } else {
                own.clone()
            };
            let index = match targets.iter().position(|t| *t == target) {
                Some(i) => i,
                None => {
                    invocation.key(&target);
                    targets.push(target);
                    targets.len() - 1
                }
            };
            let encoded = encode::commands(op).map_err(|reason| CoreError::ReadModelWrite {
                key: op.key().to_owned(),
                reason,
            })?;
            for mut c in encoded {
                if c.len() > 1 {
                    c[1] = (PROJECT_FIXED_KEYS + 1 + index).to_string();
                }
                commands.push(c);
            }
            if !written.contains(&own) {
                written.push(own);
            }
        }
        invocation
            .arg(&commit.group)
            .arg(&commit.consumer)
            .arg(&commit.entry_id)
            .arg(field_of(&commit.topic))
            .arg(if rebuild { "0" } else { "1" })
            .arg(commit.lease.as_deref().unwrap_or(""))
            .arg(json(&commands))
            .arg(json(&written));
        let outcome: redis::Value = invocation
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| {
                self.inner.server.error(
                    &e,
                    "EVALSHA (projection commit)",
                    Some((&commit.topic.to_string(), &commit.group)),
                )
            })?;
        match outcome {
            redis::Value::Int(1) => Ok(Committed::Applied),
            redis::Value::Int(2) => Ok(Committed::Superseded),
            redis::Value::Int(3) => Ok(Committed::LeaseLost),
            redis::Value::Int(_) => Ok(Committed::NotPending),
            refused => {
                let parts = reply::items(&refused).unwrap_or(&[]);
                let text = |i: usize| parts.get(i).and_then(reply::text).unwrap_or_default();
                let key = text(1);
                // Report the read model's own key, as the projection named it.
                let key = key
                    .strip_prefix(shadow.as_str())
                    .unwrap_or(&key)
                    .strip_prefix(self.prefix.as_str())
                    .unwrap_or(&key)
                    .to_owned();
                Err(CoreError::ReadModelWrite {
                    key,
                    reason: text(2),
                })
            }
        }
    }

    async fn lease(&self, projection: &str, token: &str, ttl: Duration) -> CoreResult<bool> {
        let held: i64 = scripts::LEASE
            .key(self.inner.keys.projection_lease(projection))
            .arg(token)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (lease)", None))?;
        Ok(held == 1)
    }

    async fn release_lease(&self, projection: &str, token: &str) -> CoreResult<()> {
        scripts::RELEASE_LEASE
            .key(self.inner.keys.projection_lease(projection))
            .arg(token)
            .invoke_async::<i64>(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (release lease)", None))?;
        Ok(())
    }

    async fn fence(
        &self,
        consumer: Box<dyn StreamConsumer>,
        spec: &ConsumerSpec,
        projection: &str,
        token: &str,
    ) -> CoreResult<Box<dyn StreamConsumer>> {
        // A projection commits an entry together with its stream's ack in one script: on a
        // partitioned topic the partitions' streams would each need their own commit path.
        for topic in &spec.topics {
            let count = crate::partition::Directory::topic_count(&self.inner, topic).await?;
            if crate::partition::Directory::partitioned(&self.inner, count) {
                return Err(CoreError::Config(format!(
                    "projection `{projection}` reads topic {topic}, which is partitioned \
                     ({count} partition(s){}): projections read unpartitioned topics only, \
                     for now (partitioned topics and Redis Cluster come with issue 13)",
                    if self.inner.config.is_cluster() {
                        ", on a cluster"
                    } else {
                        ""
                    }
                )));
            }
        }
        let fenced = FencedConsumer::new(
            self.inner.clone(),
            consumer,
            spec.clone(),
            projection,
            token,
        )
        .await?;
        Ok(Box::new(fenced))
    }

    async fn adopt_pending(
        &self,
        group: &str,
        consumer: &str,
        topics: &[Topic],
    ) -> CoreResult<u64> {
        let mut moved = 0u64;
        for topic in topics {
            let stream = self.inner.keys.stream(topic);
            let mut cursor = "0-0".to_owned();
            loop {
                let result = redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(group)
                    .arg(consumer)
                    .arg(0)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(ADOPT_PAGE)
                    .arg("JUSTID")
                    .query_async::<redis::Value>(&mut self.inner.conn.clone())
                    .await;
                let page = match result {
                    Ok(page) => page,
                    // No group (yet) on this stream: nothing pending there.
                    Err(e) if crate::error::has_code(&e, "NOGROUP") => break,
                    Err(e) => return Err(self.inner.server.error(&e, "XAUTOCLAIM", None)),
                };
                // `[next cursor, ids]`, plus deleted ids since Redis 7.
                let parts = reply::items(&page).unwrap_or(&[]);
                let (Some(next), Some(ids)) = (
                    parts.first().and_then(reply::text),
                    parts.get(1).and_then(reply::items),
                ) else {
                    return Err(self.inner.server.protocol("XAUTOCLAIM", "unexpected reply"));
                };
                moved += ids.len() as u64;
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(moved)
    }

    async fn hash(&self, key: &str) -> CoreResult<Option<BTreeMap<String, String>>> {
        let h: BTreeMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.key(key)), "HGETALL")
            .await?;
        Ok(if h.is_empty() { None } else { Some(h) })
    }

    async fn list(&self, key: &str, start: i64, stop: i64) -> CoreResult<Vec<String>> {
        self.query(
            redis::cmd("LRANGE").arg(self.key(key)).arg(start).arg(stop),
            "LRANGE",
        )
        .await
    }

    async fn members(&self, key: &str) -> CoreResult<BTreeSet<String>> {
        self.query(redis::cmd("SMEMBERS").arg(self.key(key)), "SMEMBERS")
            .await
    }

    async fn counter(&self, key: &str) -> CoreResult<Option<i64>> {
        let v: Option<String> = self
            .query(redis::cmd("GET").arg(self.key(key)), "GET")
            .await?;
        v.map(|s| {
            s.parse().map_err(|_| CoreError::ReadModel {
                key: key.to_owned(),
                reason: format!("`{s}` is not an integer"),
            })
        })
        .transpose()
    }

    async fn begin_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> CoreResult<()> {
        let keys = &self.inner.keys;
        let registry = keys.projection_registry(projection, true);
        let shadow = keys.projection_shadow_prefix(projection);
        // The script deletes the shadow keys the registry lists; they go in KEYS, so read
        // the registry first (the script checks it is unchanged, else read again).
        for _ in 0..REGISTRY_ATTEMPTS {
            let members = self.members_of(&registry).await?;
            let mut invocation = scripts::BEGIN_REBUILD.prepare_invoke();
            invocation
                .key(&registry)
                .key(keys.projection_checkpoint(projection, true));
            for topic in topics {
                invocation.key(keys.stream(topic));
            }
            for k in &members {
                invocation.key(k);
            }
            for k in &members {
                invocation.key(format!("{shadow}{k}"));
            }
            invocation
                .arg(rebuild_group)
                .arg(topics.len())
                .arg(members.len());
            let done: i64 = invocation
                .invoke_async(&mut self.inner.conn.clone())
                .await
                .map_err(|e| self.inner.server.error(&e, "EVALSHA (begin rebuild)", None))?;
            if done == 1 {
                return Ok(());
            }
        }
        Err(self.inner.server.protocol(
            "begin rebuild",
            "the rebuild's key registry kept changing (is another rebuild running?)",
        ))
    }

    async fn finish_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> CoreResult<RebuildStep> {
        let keys = &self.inner.keys;
        let registry = keys.projection_registry(projection, false);
        let rebuild_registry = keys.projection_registry(projection, true);
        let shadow = keys.projection_shadow_prefix(projection);
        // Every key the swap touches goes in KEYS: read both registries first; the script
        // checks they are unchanged (else it reports Behind, and the caller tries again).
        let live = self.members_of(&registry).await?;
        let rebuilt = self.members_of(&rebuild_registry).await?;
        let mut invocation = scripts::FINISH_REBUILD.prepare_invoke();
        invocation
            .key(keys.projection_checkpoint(projection, false))
            .key(keys.projection_checkpoint(projection, true))
            .key(&registry)
            .key(&rebuild_registry)
            .key(keys.projection_rebuilt(projection));
        for topic in topics {
            invocation.key(keys.stream(topic));
        }
        for k in live.iter().chain(&rebuilt) {
            invocation.key(k);
        }
        for k in &rebuilt {
            invocation.key(format!("{shadow}{k}"));
        }
        invocation
            .arg(rebuild_group)
            .arg(topics.len())
            .arg(live.len())
            .arg(rebuilt.len());
        for topic in topics {
            invocation.arg(field_of(topic));
        }
        let swapped: i64 = invocation
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| {
                self.inner
                    .server
                    .error(&e, "EVALSHA (finish rebuild)", None)
            })?;
        Ok(if swapped == 1 {
            RebuildStep::Swapped
        } else {
            RebuildStep::Behind
        })
    }

    fn describe(&self) -> String {
        format!(
            "redis {} (prefix {:?})",
            self.inner.server.redacted_url, self.prefix
        )
    }
}

/// JSON of a script argument (string arrays always encode).
fn json(v: &[impl serde::Serialize]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}
