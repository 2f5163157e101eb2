//! [`RedisTransport`]: the Streams bus on Redis.

use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::transport::{ConsumerSpec, StartFrom, StreamConsumer, StreamTransport, Topic};
use eventbus_core::{EntryId, Envelope, Error as CoreError, ReplyStreams, Result as CoreResult};
use redis::{Cmd, Value};
use serde_json::Value as Json;

use crate::client::{Inner, RedisClient};
use crate::codec;
use crate::config::RedisConfig;
use crate::consumer::RedisConsumer;
use crate::error::Result;
use crate::keys::Keys;
use crate::partition::{self, Directory};
use crate::publish;
use crate::settings;

/// Entries kept in a client's reply stream (replies are read within the command timeout).
const REPLY_STREAM_MAXLEN: u64 = 10_000;

/// The Streams event bus on Redis, wire-compatible with the reference article's
/// `StreamEventBus`.
///
/// Cheap to clone: clones share one multiplexed connection (a `ConnectionManager`, which
/// reconnects with exponential backoff). Each [`consumer`](StreamTransport::consumer) gets a
/// dedicated connection for its blocking reads.
///
/// ```no_run
/// use eventbus_core::{event, EventBus, Topic};
/// use eventbus_redis::{RedisConfig, RedisTransport};
///
/// #[event(name = "OrderCreated")]
/// pub struct OrderCreated { pub order_id: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RedisConfig::new("redis://127.0.0.1:6379")?.namespace("shop");
/// let transport = RedisTransport::connect(config).await?;
/// let bus = EventBus::new(transport.clone(), "order-service");
/// bus.publish(OrderCreated { order_id: "ord_1".into() }).await?;
///
/// // Appended to its type's stream and the global one, under the namespace.
/// let keys = transport.keys();
/// assert_eq!(keys.stream(&Topic::of_type("OrderCreated")), "shop:stream:OrderCreated");
/// assert_eq!(keys.stream(&Topic::All), "shop:stream:all");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisTransport {
    client: RedisClient,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("server", &self.inner().server.redacted_url)
            .field("namespace", &self.keys().namespace())
            .field("server_version", &self.server_version())
            .finish()
    }
}

impl RedisTransport {
    /// Connects and checks the server answers (`PING`): [`RedisClient::connect`], then
    /// [`from_client`](Self::from_client).
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        RedisClient::connect(config).await.map(Self::from_client)
    }

    /// Connects to `REDIS_URL` (default `redis://127.0.0.1:6379`) with default settings.
    pub async fn from_env() -> Result<Self> {
        RedisTransport::connect(RedisConfig::from_env()?).await
    }

    /// The Streams bus on `client`'s server and namespace, sharing its connection.
    pub fn from_client(client: RedisClient) -> Self {
        RedisTransport { client }
    }

    /// The client it runs on (for the other stores of the same server and namespace).
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    pub(crate) fn inner(&self) -> &Inner {
        self.client.inner()
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &RedisConfig {
        self.client.config()
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        self.client.keys()
    }

    /// The server's `redis_version`, as reported by `INFO server` when connecting; empty when
    /// the ACL user may not run `INFO`.
    pub fn server_version(&self) -> &str {
        self.client.server_version()
    }

    /// Opens a consumer with its own connection for blocking reads (the trait's
    /// [`consumer`](StreamTransport::consumer), without the box).
    pub async fn open_consumer(&self, spec: ConsumerSpec) -> CoreResult<RedisConsumer> {
        if spec.group.is_empty() || spec.consumer.is_empty() || spec.topics.is_empty() {
            return Err(CoreError::Config(format!(
                "a consumer needs a group, a name and at least one topic (got {spec:?})"
            )));
        }
        settings::check_readable(self.inner(), &spec.topics).await?;
        let reader = self.client.dedicated_connection().await?;
        Ok(RedisConsumer::new(self.client.clone(), reader, spec))
    }

    /// Appends to `topic`'s stream, trimmed to about `maxlen`; with `existing_only`, never
    /// creates the stream (`XADD … NOMKSTREAM`): entries for a stream that is gone are dropped
    /// and only the ids of appended entries are returned.
    ///
    /// An event type's topic is partitioned like a publish: each entry goes to the partition
    /// of its key (ids qualified with it when the topic is partitioned).
    async fn append_to(
        &self,
        topic: &Topic,
        entries: &[Envelope<Json>],
        maxlen: u64,
        existing_only: bool,
    ) -> CoreResult<Vec<EntryId>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner();
        let count = match topic {
            Topic::Type(_) => Directory::topic_count(inner, topic).await?,
            _ => 1,
        };
        let partitioned = !matches!(topic, Topic::Named(_)) && Directory::partitioned(inner, count);
        if !partitioned {
            // A named stream (tagged on a cluster, its ids plain), or one partition on a
            // single node.
            let key = Directory::single(inner, topic).key;
            let all: Vec<&Envelope<Json>> = entries.iter().collect();
            return self
                .append_to_key(topic, &key, &all, maxlen, existing_only)
                .await;
        }
        let parts = Directory::parts(inner, topic, count).await?;
        let groups = partition::group_by_partition(
            entries
                .iter()
                .map(|entry| inner.partitions.partition_of(entry, count)),
        );
        let mut ids = vec![None; entries.len()];
        for (index, members) in groups {
            let Some(part) = parts.get(index as usize) else {
                continue;
            };
            let chosen: Vec<&Envelope<Json>> = members.iter().map(|&m| &entries[m]).collect();
            let appended = self
                .append_to_key(topic, &part.key, &chosen, maxlen, existing_only)
                .await?;
            for (&position, id) in members.iter().zip(appended) {
                ids[position] = Some(partition::qualify(part.index, &id, true));
            }
        }
        Ok(ids.into_iter().flatten().collect())
    }

    /// Appends entries to the stream at `key` in one pipeline (see [`append_to`](Self::append_to)).
    async fn append_to_key(
        &self,
        topic: &Topic,
        key: &str,
        entries: &[&Envelope<Json>],
        maxlen: u64,
        existing_only: bool,
    ) -> CoreResult<Vec<EntryId>> {
        let mut pipe = redis::Pipeline::with_capacity(entries.len());
        for entry in entries {
            let encoded = codec::Encoded::new(entry)?;
            let size = encoded.size() + key.len() + 64;
            pipe.add_command(xadd(key, maxlen, &encoded.fields(), existing_only, size));
        }
        let ids: Vec<Option<String>> = pipe
            .query_async(&mut self.inner().conn.clone())
            .await
            .map_err(|e| self.inner().server.error(&e, "append (XADD)", None))?;
        if ids.iter().any(Option::is_none) {
            tracing::debug!(topic = %topic, "stream is gone: entries dropped");
        }
        Ok(ids.into_iter().flatten().collect())
    }

    /// Appends events of one partition, each to its type's partition stream and to the
    /// global stream's share (see [`publish`](crate::publish)). Returns their ids in their
    /// type's streams.
    async fn publish_partition(
        &self,
        index: u32,
        tags: &[String],
        events: Vec<&Envelope<Json>>,
        write_global: bool,
    ) -> CoreResult<Vec<EntryId>> {
        let inner = self.inner();
        let config = &inner.config;
        let global = Directory::part_of(inner, &Topic::All, index, tags).key;
        // The distinct type streams (usually one: batches are usually of one type).
        let mut streams: Vec<(&str, String, u64)> = Vec::new();
        let stream_of = events
            .iter()
            .map(|event| {
                let event_type = event.event_type.as_str();
                match streams.iter().position(|(t, _, _)| *t == event_type) {
                    Some(i) => i,
                    None => {
                        let key =
                            Directory::part_of(inner, &Topic::of_type(event_type), index, tags).key;
                        streams.push((event_type, key, config.stream_maxlen(event_type)));
                        streams.len() - 1
                    }
                }
            })
            .collect();
        let share = publish::Share {
            events,
            stream_of,
            streams: streams
                .into_iter()
                .map(|(_, key, max)| (key, max))
                .collect(),
            global: write_global.then(|| (global, config.global_stream_maxlen())),
        };
        publish::append(inner, share).await
    }

    /// The stream keys of `topic`'s partitions, partition 0 first.
    pub async fn partition_streams(&self, topic: &Topic) -> CoreResult<Vec<String>> {
        let inner = self.inner();
        let count = Directory::topic_count(inner, topic).await?;
        Ok(Directory::parts(inner, topic, count)
            .await?
            .into_iter()
            .map(|part| part.key)
            .collect())
    }

    /// Which consumer of `group` holds the lease on each partition of `topic`, by partition
    /// (`None`: nobody). A topic whose consumers don't share partitions (one partition on a
    /// single node) has no leases: all `None`.
    pub async fn partition_owners(
        &self,
        group: &str,
        topic: &Topic,
    ) -> CoreResult<Vec<Option<String>>> {
        let inner = self.inner();
        let count = Directory::topic_count(inner, topic).await?;
        let owners = futures_util::future::join_all((0..count).map(|index| {
            let mut conn = inner.conn.clone();
            let key = inner.keys.lease(group, topic, index);
            async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut conn)
                    .await
            }
        }))
        .await;
        owners
            .into_iter()
            .map(|owner| owner.map_err(|e| inner.server.error(&e, "GET lease", None)))
            .collect()
    }

    pub(crate) fn stream_maxlen(&self, topic: &Topic) -> u64 {
        match topic {
            Topic::Type(event_type) => self.inner().config.stream_maxlen(event_type),
            Topic::All => self.inner().config.global_stream_maxlen(),
            // A named stream (remote commands) is bounded like an event type's: by the
            // default per-type limit.
            _ => self.inner().config.stream_maxlen(""),
        }
    }

    pub(crate) async fn query(&self, cmd: &Cmd, operation: &str) -> CoreResult<Value> {
        cmd.query_async(&mut self.inner().conn.clone())
            .await
            .map_err(|e| self.inner().server.error(&e, operation, None))
    }
}

#[async_trait]
impl StreamTransport for RedisTransport {
    async fn publish(&self, events: &[Envelope<Json>]) -> CoreResult<Vec<EntryId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner();
        let (placed, tags) = Directory::place(inner, events).await?;
        let write_global = settings::global_stream(inner).await?;
        // One atomic step per partition: a partition's type streams and its share of the
        // global stream share a slot.
        let groups = partition::group_by_partition(placed.iter().map(|(index, _)| *index));
        let replies = futures_util::future::join_all(groups.iter().map(|(index, members)| {
            let chosen: Vec<&Envelope<Json>> = members.iter().map(|&m| &events[m]).collect();
            self.publish_partition(*index, &tags, chosen, write_global)
        }))
        .await;
        let mut ids = vec![String::new(); events.len()];
        for ((index, members), reply) in groups.iter().zip(replies) {
            for (&position, id) in members.iter().zip(reply?) {
                ids[position] = partition::qualify(*index, &id, placed[position].1);
            }
        }
        Ok(ids)
    }

    /// Appends to `topic`'s stream.
    async fn append(&self, topic: &Topic, entries: &[Envelope<Json>]) -> CoreResult<Vec<EntryId>> {
        self.append_to(topic, entries, self.stream_maxlen(topic), false)
            .await
    }

    async fn ensure_group(&self, topic: &Topic, group: &str, start: StartFrom) -> CoreResult<()> {
        let inner = self.inner();
        settings::check_readable(inner, std::slice::from_ref(topic)).await?;
        let count = Directory::topic_count(inner, topic).await?;
        let parts = Directory::parts(inner, topic, count).await?;
        let id = match start {
            StartFrom::New => "$",
            StartFrom::Beginning => "0",
        };
        for result in futures_util::future::join_all(
            parts
                .iter()
                .map(|part| partition::create_group(inner, &part.key, group, id)),
        )
        .await
        {
            result?;
        }
        Ok(())
    }

    async fn consumer(&self, spec: ConsumerSpec) -> CoreResult<Box<dyn StreamConsumer>> {
        Ok(Box::new(self.open_consumer(spec).await?))
    }

    fn describe(&self) -> String {
        self.inner().server.redacted_url.clone()
    }

    fn system(&self) -> &'static str {
        "redis"
    }

    fn destination(&self, topic: &Topic) -> String {
        self.inner().keys.stream(topic)
    }

    fn reply_streams(&self) -> Option<std::sync::Arc<dyn ReplyStreams>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

/// `XADD key [NOMKSTREAM] [MAXLEN ~ maxlen] * fields…` (`NOMKSTREAM` with `existing_only`:
/// appends only to an existing stream), its buffer sized up front (`size`: about the bytes
/// of its arguments).
fn xadd(key: &str, maxlen: u64, fields: &[(&str, &str)], existing_only: bool, size: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(9 + 2 * fields.len(), size);
    cmd.arg("XADD").arg(key);
    if existing_only {
        cmd.arg("NOMKSTREAM");
    }
    if maxlen > 0 {
        cmd.arg("MAXLEN").arg("~").arg(maxlen);
    }
    cmd.arg("*");
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd
}

/// A client's reply stream is kept with `PEXPIRE` while the client runs and deleted (with its
/// group) when it shuts down; replies to it never create it (see `reply`).
#[async_trait]
impl ReplyStreams for RedisTransport {
    async fn keep_alive(&self, topic: &Topic, ttl: Duration) -> CoreResult<()> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.query(
            redis::cmd("PEXPIRE")
                .arg(Directory::single(self.inner(), topic).key)
                .arg(ms),
            "PEXPIRE",
        )
        .await?;
        Ok(())
    }

    async fn remove(&self, topic: &Topic) -> CoreResult<()> {
        self.query(
            redis::cmd("DEL").arg(Directory::single(self.inner(), topic).key),
            "DEL",
        )
        .await?;
        Ok(())
    }

    async fn reply(&self, topic: &Topic, entries: &[Envelope<Json>]) -> CoreResult<Vec<EntryId>> {
        self.append_to(topic, entries, REPLY_STREAM_MAXLEN, true)
            .await
    }
}
