//! [`RedisEventStore`]: aggregates' event streams on Redis, appended and published by one Lua
//! script.

use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::es::{EventStore, Snapshot, StoredEvent};
use eventbus_core::transport::Topic;
use eventbus_core::{EntryId, Envelope, Error as CoreError, Result as CoreResult};
use redis::Value;
use serde_json::Value as Json;

use crate::client::{Inner, RedisClient};
use crate::codec;
use crate::partition::{self, AggregateKeys, Directory};
use crate::replication::{self, Wait};
use crate::reply;
use crate::scripts;
use crate::transport::RedisTransport;

/// The event store of a [`RedisTransport`] (same server, namespace, stream limits and
/// connection).
///
/// Each aggregate instance has a stream `{ns}:aggregate:{type}:{id}` whose entries have the
/// codec's fields (those of the per-type streams) and ids `0-{version}`, and a version key
/// `{ns}:aggregate-version:{type}:{id}` holding its version explicitly, so trimming or
/// deleting entries can't corrupt it. An append is one Lua script that checks the version,
/// appends to the aggregate stream, bumps the version and `XADD`s each event to its type's
/// stream and to the global stream (with their configured `MAXLEN ~`): no event is stored
/// without being published, and none published without being stored. Aggregate streams are
/// never trimmed. On a partitioned topic an event goes to its partition (by its partition
/// key: the aggregate id unless the event names another), so one aggregate's events keep
/// their order.
///
/// On a Redis Cluster the script's keys share a slot: an aggregate instance lives in
/// partition `i = partition_for_key(id, P)` of its event types, which must all have the
/// same partition count P (an append of event types with other counts fails with
/// [`Error::AggregatePartitionsDiffer`](crate::Error::AggregatePartitionsDiffer)), its keys
/// carry partition `i`'s hash tag (`{ns}:aggregate:{t_i}:{type}:{id}`, …), and every event
/// it appends goes to partition `i`, whatever its own partition key. P is stored for the
/// aggregate type on its first append (`{ns}:aggregate-type:{type}`) and its event types'
/// partition counts are pinned from then on (see
/// [`RedisTransport::create_topic`](crate::RedisTransport::create_topic)).
///
/// ```no_run
/// use std::sync::Arc;
/// use eventbus_core::es::{EventStore, Repository};
/// use eventbus_redis::{RedisEventStore, RedisTransport};
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Account;
/// # impl eventbus_core::es::Aggregate for Account {
/// #     const TYPE: &'static str = "Account";
/// #     fn apply(&mut self, _: &eventbus_core::Envelope) -> eventbus_core::Result<()> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = RedisTransport::from_env().await?;
/// let store: Arc<dyn EventStore> = Arc::new(RedisEventStore::new(&transport));
/// let accounts = Repository::<Account>::new(store).snapshot_every(100).max_retries(5);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisEventStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("server", &self.inner.server.redacted_url)
            .field("namespace", &self.inner.keys.namespace())
            .finish()
    }
}

impl RedisEventStore {
    /// The event store of `transport`'s server and namespace.
    pub fn new(transport: &RedisTransport) -> Self {
        RedisEventStore::from_client(transport.client())
    }

    /// The event store of `client`'s server and namespace.
    pub fn from_client(client: &RedisClient) -> Self {
        RedisEventStore {
            inner: client.shared(),
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        operation: &str,
    ) -> CoreResult<T> {
        cmd.query_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, operation, None))
    }

    /// Runs the append script, followed on the same connection by `WAIT` when given: its
    /// reply, and how many replicas acknowledged it.
    async fn invoke(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        wait: Option<Wait>,
    ) -> redis::RedisResult<(Value, Option<i64>)> {
        let mut conn = self.inner.conn.clone();
        let Some(wait) = wait else {
            return Ok((invocation.invoke_async(&mut conn).await?, None));
        };
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation);
        replication::add_wait(&mut pipe, wait);
        let replied: redis::RedisResult<(Value, i64)> = match pipe.query_async(&mut conn).await {
            // A server that lost its scripts (restarted, failed over, flushed).
            Err(e) if e.code() == Some("NOSCRIPT") => {
                invocation.load_async(&mut conn).await?;
                pipe.query_async(&mut conn).await
            }
            other => other,
        };
        replied.map(|(reply, acked)| (reply, Some(acked)))
    }
}

#[async_trait]
impl EventStore for RedisEventStore {
    async fn version(&self, aggregate_type: &str, aggregate_id: &str) -> CoreResult<u64> {
        let Some(keys) = Directory::aggregate(&self.inner, aggregate_type, aggregate_id).await?
        else {
            return Ok(0);
        };
        let version: Option<u64> = self
            .query(redis::cmd("GET").arg(&keys.version), "GET")
            .await?;
        Ok(version.unwrap_or(0))
    }

    async fn read(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> CoreResult<Vec<StoredEvent>> {
        let Some(AggregateKeys { stream: key, .. }) =
            Directory::aggregate(&self.inner, aggregate_type, aggregate_id).await?
        else {
            return Ok(Vec::new());
        };
        let value: Value = self
            .query(
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(format!("0-{}", after.saturating_add(1)))
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1)),
                "XRANGE",
            )
            .await?;
        let server = &self.inner.server;
        let entries =
            reply::entries(&value).ok_or_else(|| server.protocol("XRANGE", "unexpected reply"))?;
        entries
            .into_iter()
            .map(|entry| {
                let version = entry
                    .id
                    .strip_prefix("0-")
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| CoreError::Decode {
                        event_type: aggregate_type.to_owned(),
                        reason: format!("`{key}` holds entry `{}`, not `0-{{version}}`", entry.id),
                    })?;
                let fields = entry.fields.unwrap_or_default();
                let event = codec::decode(&fields).map_err(|m| CoreError::Decode {
                    event_type: aggregate_type.to_owned(),
                    reason: format!("`{key}` version {version}: {m}"),
                })?;
                Ok(StoredEvent { version, event })
            })
            .collect()
    }

    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected: u64,
        events: &[Envelope<Json>],
    ) -> CoreResult<Vec<EntryId>> {
        let inner = &self.inner;
        let config = &inner.config;
        let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let aggregate =
            Directory::place_aggregate(inner, aggregate_type, aggregate_id, &event_types).await?;
        let (placed, tags) = match aggregate.placed {
            // On a cluster every event goes to the aggregate's partition (its keys' slot).
            Some((index, tags)) => (vec![(index, true); events.len()], tags),
            // On a single node each event goes to its partition (by its key: the aggregate
            // id, unless the event names another), its type stream and its share of the
            // global stream.
            None => Directory::place(inner, events).await?,
        };
        let mut invocation = scripts::APPEND.key(&aggregate.stream);
        invocation
            .key(&aggregate.version)
            .arg(expected)
            .arg(config.global_stream_maxlen())
            .arg(events.len());
        for (event, (index, _)) in events.iter().zip(&placed) {
            let topic = Topic::of_type(&event.event_type);
            invocation
                .key(Directory::part_of(inner, &topic, *index, &tags).key)
                .key(Directory::part_of(inner, &Topic::All, *index, &tags).key);
            let fields = codec::encode(event)?;
            invocation
                .arg(config.stream_maxlen(&event.event_type))
                .arg(fields.len());
            for (field, value) in &fields {
                invocation.arg(field).arg(value);
            }
        }
        let wait = config.publish_replicas();
        let (reply, acked) = self.invoke(&invocation, wait).await.map_err(|e| {
            self.inner
                .server
                .error(&e, "append (event store script)", None)
        })?;
        let protocol = |what: &str| self.inner.server.protocol("append", what.to_owned());
        let items = reply::items(&reply).ok_or_else(|| protocol("not an array"))?;
        let status = items.first().and_then(reply::int);
        let version = items
            .get(1)
            .and_then(reply::int)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| protocol("no version"))?;
        match status {
            Some(1) => {
                let ids: Option<Vec<String>> = items[2..].iter().map(reply::text).collect();
                let ids = ids.ok_or_else(|| protocol("entry ids are not text"))?;
                if ids.len() != events.len() {
                    return Err(protocol("one entry id per event"));
                }
                if let (Some(acked), Some(wait)) = (acked, wait) {
                    replication::check(
                        inner,
                        "append (WAIT)",
                        &format!(
                            "{aggregate_type} {aggregate_id} appended up to version {version} \
                             (a retry conflicts: the events are stored)"
                        ),
                        acked,
                        wait,
                    )?;
                }
                Ok(ids
                    .iter()
                    .zip(&placed)
                    .map(|(id, (index, partitioned))| partition::qualify(*index, id, *partitioned))
                    .collect())
            }
            Some(0) => Err(CoreError::Conflict {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                expected,
                actual: version,
            }),
            _ => Err(protocol("unknown status")),
        }
    }

    async fn snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> CoreResult<Option<Snapshot>> {
        let Some(AggregateKeys { snapshot: key, .. }) =
            Directory::aggregate(&self.inner, aggregate_type, aggregate_id).await?
        else {
            return Ok(None);
        };
        let fields: Vec<Option<String>> = self
            .query(
                redis::cmd("HMGET").arg(&key).arg(&[
                    "version",
                    "state_version",
                    "state",
                    "taken_at",
                ]),
                "HMGET",
            )
            .await?;
        let [Some(version), Some(state_version), Some(state), taken_at] =
            <[Option<String>; 4]>::try_from(fields).unwrap_or_default()
        else {
            return Ok(None);
        };
        let unreadable = |what: &str| CoreError::Decode {
            event_type: format!("{aggregate_type} snapshot"),
            reason: format!("`{key}`: {what}"),
        };
        Ok(Some(Snapshot {
            version: version
                .parse()
                .map_err(|_| unreadable("`version` is not a number"))?,
            state_version: state_version
                .parse()
                .map_err(|_| unreadable("`state_version` is not a number"))?,
            state: serde_json::from_str(&state)
                .map_err(|e| unreadable(&format!("`state` is not JSON: {e}")))?,
            taken_at: taken_at.and_then(|t| t.parse().ok()).unwrap_or(0.0),
        }))
    }

    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        snapshot: &Snapshot,
    ) -> CoreResult<()> {
        let Some(AggregateKeys { snapshot: key, .. }) =
            Directory::aggregate(&self.inner, aggregate_type, aggregate_id).await?
        else {
            return Err(CoreError::Config(format!(
                "no snapshot of {aggregate_type} {aggregate_id}: its type has stored no \
                 events yet, so its place on the cluster is not known"
            )));
        };
        let state =
            serde_json::to_string(&snapshot.state).map_err(|source| CoreError::Serialize {
                event_type: format!("{aggregate_type} snapshot"),
                source,
            })?;
        let _: i64 = scripts::SAVE_SNAPSHOT
            .key(&key)
            .arg(snapshot.version)
            .arg(snapshot.state_version)
            .arg(state)
            .arg(codec::format_timestamp(snapshot.taken_at))
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "save snapshot", None))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("Redis event store at {}", self.inner.server.redacted_url)
    }
}
