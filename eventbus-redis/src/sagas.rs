//! [`RedisSagaStore`]: saga state in Redis, every transition one compare-and-set script.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::saga::{SagaState, SagaStatus, SagaStore, StepClaim, StepKey, StepRecord};
use eventbus_core::{Error as CoreError, Result as CoreResult};
use redis::{Cmd, FromRedisValue, Script};

use crate::client::{Inner, RedisClient};
use crate::keys::SagaKeys;
use crate::scripts;
use crate::transport::RedisTransport;

/// Ids read per `SSCAN` round trip.
const SCAN_COUNT: usize = 500;

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
/// The transition script writes the state key and namespaced index and deadline keys
/// together, so on Redis Cluster they would need one hash slot: this store targets a single
/// server (or a primary with replicas) until [`SagaKeys`] gains a hash-tagged layout.
#[derive(Clone)]
pub struct RedisSagaStore {
    inner: Arc<Inner>,
    keys: SagaKeys,
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

    /// The store of `client`'s server and namespace, state at `saga:{saga_id}`.
    pub fn from_client(client: &RedisClient) -> Self {
        RedisSagaStore {
            inner: client.shared(),
            keys: client.keys().sagas(),
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

    /// Every saga id with a status, by `SSCAN` (up to `limit`).
    async fn ids(&self, status: SagaStatus, limit: usize) -> CoreResult<Vec<String>> {
        let index = self.keys.index(status);
        let mut cursor = 0u64;
        let mut ids = Vec::new();
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
                ids.sort();
                ids.dedup();
                ids.truncate(limit);
                return Ok(ids);
            }
            cursor = next;
        }
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
            let _: u64 = self
                .run(redis::cmd("UNLINK").arg(self.keys.index(status)), "UNLINK")
                .await?;
        }
        let _: u64 = self
            .run(redis::cmd("UNLINK").arg(self.keys.deadlines()), "UNLINK")
            .await?;
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
                    self.keys.index(state.state),
                    self.keys.deadlines(),
                ],
                &[
                    state.to_json()?,
                    state.saga_id.clone(),
                    deadline_arg(state.deadline),
                ],
                "saga create",
            )
            .await?;
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
                    self.keys.index(current.state),
                    self.keys.index(next.state),
                    self.keys.deadlines(),
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
        self.run(redis::cmd("SCARD").arg(self.keys.index(status)), "SCARD")
            .await
    }

    async fn claim_due(&self, now: f64, lease: Duration, max: usize) -> CoreResult<Vec<String>> {
        self.script(
            &scripts::SAGA_CLAIM_DUE,
            &[self.keys.deadlines()],
            &[
                deadline_arg(Some(now)),
                deadline_arg(Some(now + lease.as_secs_f64())),
                max.to_string(),
            ],
            "saga claim deadlines",
        )
        .await
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
