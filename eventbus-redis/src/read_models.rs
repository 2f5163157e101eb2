//! [`RedisReadModels`]: read models in Redis hashes, lists, sets and counters, committed
//! atomically with the projection's checkpoint and the entry's acknowledgement.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::projection::{Commit, CommitTarget, Committed, ReadModelStore, RebuildStep};
use eventbus_core::transport::Topic;
use eventbus_core::{Error as CoreError, Result as CoreResult};
use redis::Cmd;

use crate::scripts;
use crate::transport::{Inner, RedisTransport};

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
/// committing consumer, then applies the writes, advances the checkpoint, records the keys
/// and acknowledges the entry. A write Redis rejects (e.g. `HINCRBY` on a field holding
/// text) fails the commit; the writes before it in that script stay (Redis has no
/// rollback), so keep read-model keys to projections.
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
        RedisReadModels {
            inner: transport.shared(),
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
        let mut commands: Vec<Vec<String>> = Vec::new();
        let mut written: Vec<String> = Vec::new();
        for op in &commit.ops {
            let own = self.key(op.key());
            let target = if rebuild {
                format!("{shadow}{own}")
            } else {
                own.clone()
            };
            for mut c in op.to_commands() {
                if c.len() > 1 {
                    c[1] = target.clone();
                }
                commands.push(c);
            }
            if !written.contains(&own) {
                written.push(own);
            }
        }
        let stream = keys.stream(&commit.topic);
        let mut invocation = scripts::PROJECT.prepare_invoke();
        invocation
            .key(&stream)
            .key(keys.projection_checkpoint(&commit.projection, rebuild))
            .key(keys.projection_rebuilt(&commit.projection))
            .key(keys.projection_registry(&commit.projection, rebuild))
            .arg(&commit.group)
            .arg(&commit.consumer)
            .arg(&commit.entry_id)
            .arg(field_of(&commit.topic))
            .arg(if rebuild { "0" } else { "1" })
            .arg(json(&commands))
            .arg(json(&written));
        let outcome: i64 = invocation
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| {
                self.inner.server.error(
                    &e,
                    "EVALSHA (projection commit)",
                    Some((&commit.topic.to_string(), &commit.group)),
                )
            })?;
        Ok(match outcome {
            1 => Committed::Applied,
            2 => Committed::Superseded,
            _ => Committed::NotPending,
        })
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
        let mut invocation = scripts::BEGIN_REBUILD.prepare_invoke();
        invocation
            .key(keys.projection_registry(projection, true))
            .key(keys.projection_checkpoint(projection, true));
        for topic in topics {
            invocation.key(keys.stream(topic));
        }
        invocation
            .arg(rebuild_group)
            .arg(keys.projection_shadow_prefix(projection));
        invocation
            .invoke_async::<i64>(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (begin rebuild)", None))?;
        Ok(())
    }

    async fn finish_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> CoreResult<RebuildStep> {
        let keys = &self.inner.keys;
        let mut invocation = scripts::FINISH_REBUILD.prepare_invoke();
        invocation
            .key(keys.projection_checkpoint(projection, false))
            .key(keys.projection_checkpoint(projection, true))
            .key(keys.projection_registry(projection, false))
            .key(keys.projection_registry(projection, true))
            .key(keys.projection_rebuilt(projection));
        for topic in topics {
            invocation.key(keys.stream(topic));
        }
        invocation
            .arg(rebuild_group)
            .arg(keys.projection_shadow_prefix(projection));
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
