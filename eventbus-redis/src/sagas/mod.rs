//! [`RedisSagaStore`]: saga state in Redis, every transition one compare-and-set script.

mod shards;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventbus_core::saga::{SagaState, SagaStatus, SagaStore, StepClaim, StepKey, StepRecord};
use eventbus_core::{Error as CoreError, Result as CoreResult};
use redis::{Cmd, FromRedisValue, Script};

use crate::client::{Inner, RedisClient};
use crate::keys::SagaKeys;
use crate::partition::slot;
use crate::scripts;
use crate::transport::RedisTransport;
use shards::{DeadlineShards, MAX_PROBES};

/// Ids read per `SSCAN` round trip.
const SCAN_COUNT: usize = 500;

/// Index shards counted at once (`SCARD`s in flight) on a cluster.
const COUNT_CONCURRENCY: usize = 64;

/// The Redis [`SagaStore`] of a [`RedisTransport`] (same server, namespace and connection).
///
/// A saga's state is the JSON string at `saga:{saga_id}` in the reference article's shape
/// (`saga_id`, `saga_name`, `state`, `current_step`, `data`, `history`, `started_at`) plus
/// `version`. Each transition is one Lua script: it writes only if the stored version is
/// the expected one, and moves the saga between the status index sets
/// (`{ns}:saga:index:{state}`) and (re)schedules or clears its deadline in
/// `{ns}:saga:deadlines` in the same atomic step. Participants' idempotency records are
/// `SET … NX` keys with a TTL under the namespace. See [`SagaKeys`] for the layout.
///
/// On a Redis Cluster ([`RedisConfig::is_cluster`](crate::RedisConfig::is_cluster)) the
/// state key stays `saga:{saga_id}`, and the indexes, the deadline schedule and the
/// participants' records are sharded by the slot of the state key (see [`SagaKeys`]), so
/// every transition is still one compare-and-set script, in one slot. Listing and counting
/// go over every shard of every master; claiming due deadlines probes the shards that may
/// have some (at most 256 per call), found by `SCAN` on every master every 5 s and by this
/// store's own writes.
#[derive(Clone)]
pub struct RedisSagaStore {
    inner: Arc<Inner>,
    keys: SagaKeys,
    /// The deadline shards known (sharded layout only), shared by clones.
    shards: Arc<Mutex<DeadlineShards>>,
}

impl std::fmt::Debug for RedisSagaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSagaStore")
            .field("server", &self.inner.server.redacted_url)
            .field("keys", &self.keys)
            .finish()
    }
}

fn deadline_arg(deadline: Option<f64>) -> String {
    deadline.map_or_else(String::new, |d| format!("{d:.6}"))
}

impl RedisSagaStore {
    /// The store of `transport`'s server and namespace, state at `saga:{saga_id}`.
    pub fn new(transport: &RedisTransport) -> Self {
        RedisSagaStore::from_client(transport.client())
    }

    /// The store of `client`'s server and namespace, state at `saga:{saga_id}`; sharded by
    /// slot when the client is a cluster's.
    pub fn from_client(client: &RedisClient) -> Self {
        RedisSagaStore {
            inner: client.shared(),
            keys: client.keys().sagas().sharded(client.config().is_cluster()),
            shards: Arc::default(),
        }
    }

    /// Puts state at `{prefix}{saga_id}` instead of `saga:{saga_id}`.
    pub fn with_state_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.keys = self.keys.with_state_prefix(prefix);
        self
    }

    /// The key layout.
    pub fn keys(&self) -> &SagaKeys {
        &self.keys
    }

    /// The deadline shards known (a poisoned lock is taken over: the map stays valid).
    fn shards(&self) -> MutexGuard<'_, DeadlineShards> {
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a deadline this store scheduled (sharded layout: its shard is probed then).
    fn scheduled(&self, saga_id: &str, deadline: Option<f64>) {
        if let (true, Some(deadline)) = (self.keys.is_sharded(), deadline) {
            let slot = slot::slot_of(&self.keys.state(saga_id));
            self.shards().scheduled(slot, deadline);
        }
    }

    /// Every key `SCAN` finds for `pattern` of `key_type` (on every master of a cluster).
    async fn scan(&self, pattern: &str, key_type: &str) -> CoreResult<Vec<String>> {
        let mut keys = self
            .inner
            .conn
            .clone()
            .scan(pattern, Some(key_type))
            .await
            .map_err(|e| self.inner.server.error(&e, "SCAN", None))?;
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The keys of a status index: the one key, or every shard found on the cluster.
    async fn index_keys(&self, status: SagaStatus) -> CoreResult<Vec<String>> {
        if self.keys.is_sharded() {
            self.scan(&self.keys.index_shards_pattern(status), "set")
                .await
        } else {
            Ok(vec![self.keys.index(status)])
        }
    }

    /// The keys of the deadline schedule: the one key, or every shard found on the cluster.
    async fn deadline_keys(&self) -> CoreResult<Vec<String>> {
        if self.keys.is_sharded() {
            self.scan(&self.keys.deadlines_shards_pattern(), "zset")
                .await
        } else {
            Ok(vec![self.keys.deadlines()])
        }
    }

    async fn run<T: FromRedisValue>(&self, cmd: &Cmd, operation: &str) -> CoreResult<T> {
        cmd.query_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, operation, None))
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
        operation: &str,
    ) -> CoreResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, operation, None))
    }

    /// Every saga id with a status, by `SSCAN` of each index key (up to `limit`).
    async fn ids(&self, status: SagaStatus, limit: usize) -> CoreResult<Vec<String>> {
        let mut ids = Vec::new();
        for index in self.index_keys(status).await? {
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = self
                    .run(
                        redis::cmd("SSCAN")
                            .arg(&index)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(SCAN_COUNT),
                        "SSCAN",
                    )
                    .await?;
                ids.extend(batch);
                if next == 0 || ids.len() >= limit {
                    break;
                }
                cursor = next;
            }
            if ids.len() >= limit {
                break;
            }
        }
        ids.sort();
        ids.dedup();
        ids.truncate(limit);
        Ok(ids)
    }

    /// Claims up to `max` due deadlines of one deadline key ([`scripts::SAGA_CLAIM_DUE`]):
    /// the key's next deadline left (`None`: empty) and the claimed saga ids.
    async fn claim_from(
        &self,
        key: String,
        now: f64,
        lease: Duration,
        max: usize,
    ) -> CoreResult<(Option<f64>, Vec<String>)> {
        let (next, ids): (String, Vec<String>) = self
            .script(
                &scripts::SAGA_CLAIM_DUE,
                &[key],
                &[
                    deadline_arg(Some(now)),
                    deadline_arg(Some(now + lease.as_secs_f64())),
                    max.to_string(),
                ],
                "saga claim deadlines",
            )
            .await?;
        Ok((next.parse().ok(), ids))
    }

    /// [`SagaStore::claim_due`] on the sharded layout: looks for the shards again when
    /// due, then probes those that may hold due deadlines, one script each (in its slot),
    /// until `max` are claimed or [`MAX_PROBES`] shards were probed.
    async fn claim_due_sharded(
        &self,
        now: f64,
        lease: Duration,
        max: usize,
    ) -> CoreResult<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.shards().needs_scan(Instant::now()) {
            let keys = self.deadline_keys().await?;
            let slots = keys.iter().map(|key| slot::slot_of(key));
            self.shards().scanned(slots, Instant::now());
        }
        let due = self.shards().due(now, MAX_PROBES);
        let mut claimed = Vec::new();
        for (shard, writes) in due {
            let key = self.keys.deadlines_shard(slot::slot_tag(shard));
            let (next, ids) = self
                .claim_from(key, now, lease, max - claimed.len())
                .await?;
            self.shards().probed(shard, writes, next);
            claimed.extend(ids);
            if claimed.len() >= max {
                break;
            }
        }
        Ok(claimed)
    }

    /// Deletes every indexed saga's state and the indexes and deadlines (for demos and tests
    /// that clean up; [`RedisTransport::delete_namespace`] removes the rest). Returns how
    /// many sagas were deleted.
    pub async fn delete_all(&self) -> CoreResult<u64> {
        let mut deleted = 0u64;
        for status in SagaStatus::ALL {
            let ids = self.ids(status, usize::MAX).await?;
            for batch in ids.chunks(SCAN_COUNT) {
                let keys: Vec<String> = batch.iter().map(|id| self.keys.state(id)).collect();
                let n: u64 = self.run(redis::cmd("UNLINK").arg(&keys), "UNLINK").await?;
                deleted += n;
            }
            let indexes = self.index_keys(status).await?;
            for batch in indexes.chunks(SCAN_COUNT) {
                let _: u64 = self.run(redis::cmd("UNLINK").arg(batch), "UNLINK").await?;
            }
        }
        for batch in self.deadline_keys().await?.chunks(SCAN_COUNT) {
            let _: u64 = self.run(redis::cmd("UNLINK").arg(batch), "UNLINK").await?;
        }
        *self.shards() = DeadlineShards::default();
        Ok(deleted)
    }

    fn decode_record(&self, raw: &str) -> CoreResult<StepRecord> {
        serde_json::from_str(raw).map_err(|e| CoreError::Decode {
            event_type: "saga participant record".into(),
            reason: e.to_string(),
        })
    }

    fn encode_record(&self, record: &StepRecord) -> CoreResult<String> {
        serde_json::to_string(record).map_err(|source| CoreError::Serialize {
            event_type: "saga participant record".into(),
            source,
        })
    }

    /// `SET key value NX PX ttl GET`: `Acquired` when set, the existing record otherwise.
    async fn set_if_absent(
        &self,
        key: &StepKey,
        record: &StepRecord,
        ttl: Duration,
    ) -> CoreResult<StepClaim> {
        let value = self.encode_record(record)?;
        let previous: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.keys.step(key))
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .arg("GET"),
                "SET NX",
            )
            .await?;
        match previous {
            None => Ok(StepClaim::Acquired),
            Some(raw) => Ok(StepClaim::Existing(self.decode_record(&raw)?)),
        }
    }
}

#[async_trait]
impl SagaStore for RedisSagaStore {
    async fn create(&self, state: &SagaState) -> CoreResult<bool> {
        let created: i64 = self
            .script(
                &scripts::SAGA_CREATE,
                &[
                    self.keys.state(&state.saga_id),
                    self.keys.index_of(state.state, &state.saga_id),
                    self.keys.deadlines_of(&state.saga_id),
                ],
                &[
                    state.to_json()?,
                    state.saga_id.clone(),
                    deadline_arg(state.deadline),
                ],
                "saga create",
            )
            .await?;
        if created == 1 {
            self.scheduled(&state.saga_id, state.deadline);
        }
        Ok(created == 1)
    }

    async fn load(&self, saga_id: &str) -> CoreResult<Option<SagaState>> {
        let raw: Option<String> = self
            .run(redis::cmd("GET").arg(self.keys.state(saga_id)), "GET")
            .await?;
        raw.map(|json| SagaState::from_json(&json)).transpose()
    }

    async fn update(&self, current: &SagaState, next: &SagaState) -> CoreResult<bool> {
        let applied: i64 = self
            .script(
                &scripts::SAGA_UPDATE,
                &[
                    self.keys.state(&current.saga_id),
                    self.keys.index_of(current.state, &current.saga_id),
                    self.keys.index_of(next.state, &current.saga_id),
                    self.keys.deadlines_of(&current.saga_id),
                ],
                &[
                    current.version.to_string(),
                    next.to_json()?,
                    next.saga_id.clone(),
                    deadline_arg(next.deadline),
                ],
                "saga update",
            )
            .await?;
        if applied == 1 {
            self.scheduled(&current.saga_id, next.deadline);
        }
        Ok(applied == 1)
    }

    async fn list(&self, status: SagaStatus, limit: usize) -> CoreResult<Vec<SagaState>> {
        let ids = self.ids(status, limit).await?;
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(SCAN_COUNT) {
            let keys: Vec<String> = batch.iter().map(|id| self.keys.state(id)).collect();
            let raw: Vec<Option<String>> = self.run(redis::cmd("MGET").arg(&keys), "MGET").await?;
            for json in raw.into_iter().flatten() {
                out.push(SagaState::from_json(&json)?);
            }
        }
        Ok(out)
    }

    async fn count(&self, status: SagaStatus) -> CoreResult<u64> {
        let mut total = 0u64;
        for batch in self.index_keys(status).await?.chunks(COUNT_CONCURRENCY) {
            let counts = batch.iter().map(|index| async move {
                let mut scard = redis::cmd("SCARD");
                scard.arg(index);
                self.run::<u64>(&scard, "SCARD").await
            });
            for n in futures_util::future::try_join_all(counts).await? {
                total += n;
            }
        }
        Ok(total)
    }

    async fn claim_due(&self, now: f64, lease: Duration, max: usize) -> CoreResult<Vec<String>> {
        if self.keys.is_sharded() {
            return self.claim_due_sharded(now, lease, max).await;
        }
        let (_, claimed) = self
            .claim_from(self.keys.deadlines(), now, lease, max)
            .await?;
        Ok(claimed)
    }

    async fn claim_step(&self, key: &StepKey, lease: Duration) -> CoreResult<StepClaim> {
        self.set_if_absent(key, &StepRecord::InProgress, lease)
            .await
    }

    async fn finish_step(
        &self,
        key: &StepKey,
        record: &StepRecord,
        ttl: Duration,
    ) -> CoreResult<()> {
        let value = self.encode_record(record)?;
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.keys.step(key))
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64),
            "SET",
        )
        .await
    }

    async fn release_step(&self, key: &StepKey) -> CoreResult<()> {
        let in_progress = self.encode_record(&StepRecord::InProgress)?;
        let _: i64 = self
            .script(
                &scripts::SAGA_RELEASE_STEP,
                &[self.keys.step(key)],
                &[in_progress],
                "saga release step",
            )
            .await?;
        Ok(())
    }

    async fn cancel_step(&self, key: &StepKey, ttl: Duration) -> CoreResult<StepClaim> {
        self.set_if_absent(key, &StepRecord::Cancelled, ttl).await
    }
}
