//! [`RedisReadModels`]: read models in Redis hashes, lists, sets and counters, committed
//! atomically with the projection's checkpoint and the entry's acknowledgement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::projection::{Commit, Committed, ReadModelStore, RebuildStep};
use eventbus_core::transport::{ConsumerSpec, StreamConsumer, Topic};
use eventbus_core::{Error as CoreError, Result as CoreResult};
use redis::Cmd;

use crate::fence::FencedConsumer;
use crate::keys::Keys;
use crate::partition::Directory;
use crate::reply;

mod commit;
mod encode;
mod rebuild;
pub(crate) mod rebuild_scripts;
pub(crate) mod scripts;

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
/// the namespace (see [`Keys`]).
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
    /// On a cluster, the epoch of each lease token this store took a projection's lease
    /// with (see the `commit` module).
    epochs: Arc<Mutex<HashMap<String, u64>>>,
    /// On a cluster, the slots (projection and short tag) this store has recorded in a
    /// projection's slot index (see [`Keys::projection_slots`]).
    slots_known: Arc<Mutex<BTreeSet<String>>>,
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
            epochs: Arc::default(),
            slots_known: Arc::default(),
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

    fn epochs_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch of the projection's lease held with `token` (on a cluster): the one this
    /// store took when it took the lease, or a new one if the lease is held with `token`;
    /// `None` when it is not.
    async fn epoch_of(&self, projection: &str, token: &str) -> CoreResult<Option<u64>> {
        let key = epoch_key(projection, token);
        if let Some(epoch) = self.epochs_map().get(&key) {
            return Ok(Some(*epoch));
        }
        if !self.lease_held(projection, token).await? {
            return Ok(None);
        }
        let epoch: u64 = self
            .query(
                redis::cmd("INCR").arg(self.inner.keys.projection_epoch(projection)),
                "INCR",
            )
            .await?;
        Ok(Some(*self.epochs_map().entry(key).or_insert(epoch)))
    }

    /// Whether the projection's lease is held with `token`.
    async fn lease_held(&self, projection: &str, token: &str) -> CoreResult<bool> {
        let holder: Option<String> = self
            .query(
                redis::cmd("GET").arg(self.inner.keys.projection_lease(projection)),
                "GET",
            )
            .await?;
        Ok(holder.as_deref() == Some(token))
    }

    /// On a cluster, raises the fence of every partition slot of `topics` to the epoch of
    /// the lease held with `token`, so that an earlier holder acknowledges nothing more.
    async fn raise_fences(
        &self,
        projection: &str,
        token: &str,
        topics: &[Topic],
    ) -> CoreResult<()> {
        let Some(epoch) = self.epoch_of(projection, token).await? else {
            return Ok(());
        };
        let tags = self
            .switch_parts(topics)
            .await?
            .iter()
            .map(|part| Keys::projection_slot_tag(&part.stream).to_owned())
            .collect();
        self.raise_fence_tags(projection, epoch, &tags).await
    }

    /// Raises the projection's fence in the slot of each of `tags` to `epoch`.
    async fn raise_fence_tags(
        &self,
        projection: &str,
        epoch: u64,
        tags: &BTreeSet<String>,
    ) -> CoreResult<()> {
        let raises = tags.iter().map(|tag| {
            let mut conn = self.inner.conn.clone();
            let fence = self.inner.keys.projection_fence(projection, tag);
            async move {
                scripts::RAISE_FENCE
                    .key(fence)
                    .arg(epoch)
                    .invoke_async::<i64>(&mut conn)
                    .await
            }
        });
        futures_util::future::try_join_all(raises)
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (raise fence)", None))?;
        Ok(())
    }

    /// Takes or renews the projection's lease with `token`: the flags of
    /// [`scripts::LEASE`] (0: another holder has it).
    async fn take_lease(&self, projection: &str, token: &str, ttl: Duration) -> CoreResult<i64> {
        scripts::LEASE
            .key(self.inner.keys.projection_lease(projection))
            .key(self.inner.keys.projection_swap(projection))
            .arg(token)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (lease)", None))
    }

    /// Whether any of `topics` is partitioned (always on a cluster).
    async fn partitioned(&self, topics: &[Topic]) -> CoreResult<bool> {
        for topic in topics {
            let count = Directory::topic_count(&self.inner, topic).await?;
            if Directory::partitioned(&self.inner, count) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd, operation: &str) -> CoreResult<T> {
        cmd.query_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, operation, None))
    }
}

/// The key of a lease token's epoch in [`RedisReadModels::epochs`].
fn epoch_key(projection: &str, token: &str) -> String {
    format!("{projection}\n{token}")
}

fn field_of(topic: &Topic) -> String {
    topic.to_string()
}

#[async_trait]
impl ReadModelStore for RedisReadModels {
    async fn commit(&self, commit: Commit) -> CoreResult<Committed> {
        self.commit_entry(commit).await
    }

    /// `GETDEL` of the request key: one instance takes a request, once.
    async fn take_rebuild_request(&self, projection: &str) -> CoreResult<bool> {
        let key = self.inner.keys.projection_rebuild_request(projection);
        let taken: Option<String> = self.query(redis::cmd("GETDEL").arg(key), "GETDEL").await?;
        Ok(taken.is_some())
    }

    async fn lease(&self, projection: &str, token: &str, ttl: Duration) -> CoreResult<bool> {
        let flags = self.take_lease(projection, token, ttl).await?;
        if flags & 1 == 0 {
            return Ok(false);
        }
        if flags & 2 == 2 {
            // Taken anew: an epoch from an earlier holding may be fenced by now.
            self.epochs_map().remove(&epoch_key(projection, token));
        }
        if self.inner.config.is_cluster() {
            self.epoch_of(projection, token).await?;
        }
        if flags & 4 == 4 {
            // A rebuild's switch-over is unfinished: complete it before applying anything.
            self.complete_recorded(projection, token, false).await?;
        }
        Ok(true)
    }

    async fn release_lease(&self, projection: &str, token: &str) -> CoreResult<()> {
        scripts::RELEASE_LEASE
            .key(self.inner.keys.projection_lease(projection))
            .arg(token)
            .invoke_async::<i64>(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (release lease)", None))?;
        self.epochs_map().remove(&epoch_key(projection, token));
        Ok(())
    }

    async fn fence(
        &self,
        consumer: Box<dyn StreamConsumer>,
        spec: &ConsumerSpec,
        projection: &str,
        token: &str,
    ) -> CoreResult<Box<dyn StreamConsumer>> {
        // Reads are fenced where the lease and the streams share a server and the streams
        // are read unpartitioned. A partitioned topic is read by the consumer that shares its
        // partitions (on a cluster the partitions lie in other slots than the lease); its
        // commits are fenced all the same (module `commit`).
        if self.partitioned(&spec.topics).await? {
            if self.inner.config.is_cluster() {
                self.raise_fences(projection, token, &spec.topics).await?;
            }
            return Ok(consumer);
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
        let mut streams = Vec::new();
        for topic in topics {
            let count = Directory::topic_count(&self.inner, topic).await?;
            streams.extend(Directory::parts(&self.inner, topic, count).await?);
        }
        for stream in streams.iter().map(|part| &part.key) {
            let mut cursor = "0-0".to_owned();
            loop {
                let result = redis::cmd("XAUTOCLAIM")
                    .arg(stream)
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
        if self.partitioned(topics).await? {
            return self.begin_in_steps(projection, rebuild_group, topics).await;
        }
        let keys = &self.inner.keys;
        let registry = keys.projection_registry(projection, true);
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
                invocation.key(keys.projection_shadow(projection, k, false));
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
        if self.partitioned(topics).await? {
            return self
                .finish_in_steps(projection, rebuild_group, topics)
                .await;
        }
        let keys = &self.inner.keys;
        let registry = keys.projection_registry(projection, false);
        let rebuild_registry = keys.projection_registry(projection, true);
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
            invocation.key(keys.projection_shadow(projection, k, false));
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
