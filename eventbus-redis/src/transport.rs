//! [`RedisTransport`]: the Streams bus on Redis.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::transport::{
    ConsumerInfo, ConsumerSpec, DeadLetter, DeadLetterReason, GroupLag, StartFrom, StreamConsumer,
    StreamTransport, Topic,
};
use eventbus_core::{
    EntryId, Envelope, Error as CoreError, ReplyStreams, Result as CoreResult, TransportErrorKind,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Cmd, Value};
use serde_json::Value as Json;

use crate::codec;
use crate::config::RedisConfig;
use crate::consumer::RedisConsumer;
use crate::error::{has_code, kind_of, Result, Server};
use crate::keys::Keys;
use crate::reply::{self, RawEntry};
use crate::scripts;

/// Entries kept in a client's reply stream (replies are read within the command timeout).
const REPLY_STREAM_MAXLEN: u64 = 10_000;

/// How many dead letters one `XRANGE` page reads when replaying all of them.
const REPLAY_PAGE: usize = 100;

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
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) server: Server,
    pub(crate) conn: ConnectionManager,
    server_version: String,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("server", &self.inner.server.redacted_url)
            .field("namespace", &self.inner.keys.namespace())
            .field("server_version", &self.inner.server_version)
            .finish()
    }
}

impl RedisTransport {
    /// Connects and checks the server answers (`PING`).
    ///
    /// An unreachable server, a wrong password or a missing ACL permission fails here with an
    /// error naming the server (never the password). Also reads the server version (when the
    /// ACL user may run `INFO`), and warns (`tracing`) when the eviction policy is
    /// `allkeys-*` (when it may run `CONFIG GET`), under which Redis may evict whole streams
    /// together with their consumer groups.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        if config.is_tls() {
            install_crypto_provider();
        }
        let server = Server::new(config.redacted_url(), config.password());
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout_duration()))
            .set_response_timeout(Some(config.response_timeout_duration()));
        let mut probe = config
            .client()
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(|e| server.transport(&e, "connect"))?;
        redis::cmd("PING")
            .query_async::<Value>(&mut probe)
            .await
            .map_err(|e| server.transport(&e, "PING"))?;

        let server_version = match redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut probe)
            .await
        {
            Ok(info) => info
                .lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default(),
            // A least-privilege ACL user may not run INFO: the version is only informative.
            Err(e) if kind_of(&e) == TransportErrorKind::Permission => {
                tracing::debug!(server = %server.redacted_url, "no permission for INFO: server version unknown");
                String::new()
            }
            Err(e) => return Err(server.transport(&e, "INFO server").into()),
        };
        tracing::info!(server = %server.redacted_url, redis_version = %server_version, "connected to Redis");
        check_eviction_policy(&mut probe, &server).await;
        drop(probe);

        let conn = manager(&config, Some(config.response_timeout_duration()))
            .await
            .map_err(|e| server.transport(&e, "connect"))?;
        let keys = config.keys();
        Ok(RedisTransport {
            inner: Arc::new(Inner {
                config,
                keys,
                server,
                conn,
                server_version,
            }),
        })
    }

    /// Connects to `REDIS_URL` (default `redis://127.0.0.1:6379`) with default settings.
    pub async fn from_env() -> Result<Self> {
        RedisTransport::connect(RedisConfig::from_env()?).await
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn shared(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The server's `redis_version`, as reported by `INFO server` when connecting; empty when
    /// the ACL user may not run `INFO`.
    pub fn server_version(&self) -> &str {
        &self.inner.server_version
    }

    /// Opens a consumer with its own connection for blocking reads (the trait's
    /// [`consumer`](StreamTransport::consumer), without the box).
    pub async fn open_consumer(&self, spec: ConsumerSpec) -> CoreResult<RedisConsumer> {
        if spec.group.is_empty() || spec.consumer.is_empty() || spec.topics.is_empty() {
            return Err(CoreError::Config(format!(
                "a consumer needs a group, a name and at least one topic (got {spec:?})"
            )));
        }
        let reader = manager(&self.inner.config, None)
            .await
            .map_err(|e| CoreError::Transport(self.inner.server.transport(&e, "connect")))?;
        Ok(RedisConsumer::new(self.inner.clone(), reader, spec))
    }

    fn stream_maxlen(&self, topic: &Topic) -> u64 {
        match topic {
            Topic::Type(event_type) => self.inner.config.stream_maxlen(event_type),
            Topic::All => self.inner.config.global_stream_maxlen(),
            Topic::Replies(_) => REPLY_STREAM_MAXLEN,
            // A command stream is bounded like an event type's: by the default per-type limit.
            _ => self.inner.config.stream_maxlen(""),
        }
    }

    async fn query(&self, cmd: &Cmd, operation: &str) -> CoreResult<Value> {
        cmd.query_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, operation, None))
    }

    async fn group_lag(
        &self,
        key: &str,
        topic: &Topic,
        only: Option<&str>,
    ) -> CoreResult<Vec<GroupLag>> {
        let server = &self.inner.server;
        let groups = match self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(key), "XINFO GROUPS")
            .await
        {
            Ok(groups) => groups,
            // The stream vanished between SCAN and XINFO.
            Err(CoreError::Transport(e)) if e.to_string().contains("no such key") => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        let groups =
            reply::items(&groups).ok_or_else(|| server.protocol("XINFO GROUPS", "not an array"))?;
        let mut out = Vec::new();
        for group in groups {
            let info =
                reply::map(group).ok_or_else(|| server.protocol("XINFO GROUPS", "not a map"))?;
            let Some(name) = reply::field(&info, "name").and_then(reply::text) else {
                return Err(server.protocol("XINFO GROUPS", "group without a name"));
            };
            if only.is_some_and(|g| g != name) {
                continue;
            }
            let pending = reply::field(&info, "pending")
                .and_then(reply::int)
                .unwrap_or(0);
            let lag = reply::field(&info, "lag")
                .and_then(reply::int)
                .and_then(|l| u64::try_from(l).ok());

            let mut pipe = redis::pipe();
            pipe.cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .arg("-")
                .arg("+")
                .arg(1);
            pipe.cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name);
            let (oldest, consumers): (Value, Value) = pipe
                .query_async(&mut self.inner.conn.clone())
                .await
                .map_err(|e| server.error(&e, "XPENDING", Some((&topic.to_string(), &name))))?;
            let oldest_pending_idle = reply::pending_rows(&oldest)
                .and_then(|rows| rows.first().map(|r| Duration::from_millis(r.idle_ms)));
            let consumers = parse_consumers(&consumers)
                .ok_or_else(|| server.protocol("XINFO CONSUMERS", "unexpected reply"))?;
            out.push(GroupLag {
                topic: topic.clone(),
                group: name,
                lag,
                pending: u64::try_from(pending).unwrap_or(0),
                oldest_pending_idle,
                consumers,
            });
        }
        Ok(out)
    }

    fn parse_dead_letter(&self, entry: &RawEntry) -> DeadLetter {
        let fields = entry.text_fields();
        let get = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let origin_stream = get("origin_stream");
        let original: Vec<(String, String)> =
            serde_json::from_str(get("entry")).unwrap_or_default();
        DeadLetter {
            id: entry.id.clone(),
            origin_topic: self
                .inner
                .keys
                .topic_of(origin_stream)
                .unwrap_or_else(|| Topic::of_type(origin_stream)),
            origin_id: get("origin_id").to_owned(),
            group: get("group").to_owned(),
            reason: DeadLetterReason {
                error: get("error").to_owned(),
                delivery_count: get("delivery_count").parse().unwrap_or(0),
                consumer: get("consumer").to_owned(),
            },
            dead_lettered_at: get("dead_lettered_at").parse().unwrap_or(0.0),
            event: codec::decode(&original).ok(),
            fields: original,
        }
    }

    async fn read_dead_letters(
        &self,
        key: &str,
        start: &str,
        count: usize,
    ) -> CoreResult<Vec<RawEntry>> {
        let value = self
            .query(
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
                "XRANGE",
            )
            .await?;
        reply::entries(&value)
            .ok_or_else(|| self.inner.server.protocol("XRANGE", "unexpected reply"))
    }

    /// Replays one dead letter; `false` when it is gone or has no fields to replay.
    ///
    /// The original fields are copied inside Redis ([`scripts::REPLAY`]), never through Rust
    /// strings, so an entry whose fields are not UTF-8 comes back byte for byte. The origin
    /// stream must be one of this namespace's streams.
    async fn replay_one(&self, dlq: &str, letter: &RawEntry) -> CoreResult<bool> {
        let server = &self.inner.server;
        let origin = letter
            .fields
            .iter()
            .flatten()
            .rev()
            .find(|(k, _)| k.as_slice() == b"origin_stream")
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default();
        let topic = std::str::from_utf8(origin)
            .ok()
            .and_then(|key| self.inner.keys.topic_of(key))
            .ok_or_else(|| {
                CoreError::Config(format!(
                    "dead letter {} names origin stream `{}`, which is not a stream of \
                     namespace `{}`: not replayed",
                    letter.id,
                    String::from_utf8_lossy(origin),
                    self.inner.keys.namespace()
                ))
            })?;
        let replayed: Value = scripts::REPLAY
            .key(dlq)
            .key(origin)
            .arg(&letter.id)
            .arg(self.stream_maxlen(&topic))
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| server.error(&e, "replay dead letter", None))?;
        match replayed {
            Value::Nil | Value::Boolean(false) => Ok(false),
            Value::Int(_) => {
                tracing::warn!(
                    dead_letter = %letter.id,
                    origin = %topic,
                    "dead letter has no original fields (trimmed before it was dead-lettered): not replayed"
                );
                Ok(false)
            }
            other if reply::bytes(&other).is_some() => Ok(true),
            other => {
                Err(server.protocol("replay dead letter", format!("unexpected reply {other:?}")))
            }
        }
    }
}

#[async_trait]
impl StreamTransport for RedisTransport {
    async fn publish(&self, events: &[Envelope<Json>]) -> CoreResult<Vec<EntryId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let config = &self.inner.config;
        let global = keys.stream(&Topic::All);
        let global_maxlen = config.global_stream_maxlen();
        let mut pipe = redis::Pipeline::with_capacity(events.len() * 2);
        pipe.atomic();
        // (event type, its stream, its MAXLEN) of the previous event: batches are usually
        // of one type.
        let mut current: Option<(&str, String, u64)> = None;
        for event in events {
            let encoded = codec::Encoded::new(event)?;
            let (_, stream, maxlen) = match current {
                Some(ref c) if c.0 == event.event_type => c,
                _ => current.insert((
                    event.event_type.as_str(),
                    keys.type_stream(&event.event_type),
                    config.stream_maxlen(&event.event_type),
                )),
            };
            let fields = encoded.fields();
            let size = encoded.size() + stream.len() + 64;
            pipe.add_command(xadd(stream, *maxlen, &fields, None, size));
            pipe.add_command(xadd(
                &global,
                global_maxlen,
                &fields,
                Some(stream),
                size + global.len() + stream.len(),
            ));
        }
        let ids: Vec<String> = pipe
            .query_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| {
                self.inner
                    .server
                    .error(&e, "publish (MULTI XADD … EXEC)", None)
            })?;
        if ids.len() != events.len() * 2 {
            return Err(self.inner.server.protocol(
                "publish",
                format!("{} ids for {} XADDs", ids.len(), events.len() * 2),
            ));
        }
        Ok(ids.into_iter().step_by(2).collect())
    }

    /// Appends to `topic`'s stream. A reply stream ([`Topic::Replies`]) is never created
    /// here (`XADD … NOMKSTREAM`): a reply to a client whose stream is gone (shut down, or
    /// expired after its process died) is dropped, and only the ids of appended entries are
    /// returned.
    async fn append(&self, topic: &Topic, entries: &[Envelope<Json>]) -> CoreResult<Vec<EntryId>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.inner.keys.stream(topic);
        let maxlen = self.stream_maxlen(topic);
        let existing_only = matches!(topic, Topic::Replies(_));
        let mut pipe = redis::Pipeline::with_capacity(entries.len());
        for entry in entries {
            let encoded = codec::Encoded::new(entry)?;
            let size = encoded.size() + key.len() + 64;
            pipe.add_command(if existing_only {
                xadd_existing(&key, maxlen, &encoded.fields(), size)
            } else {
                xadd(&key, maxlen, &encoded.fields(), None, size)
            });
        }
        let ids: Vec<Option<String>> = pipe
            .query_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "append (XADD)", None))?;
        if ids.iter().any(Option::is_none) {
            tracing::debug!(topic = %topic, "stream is gone: entries dropped");
        }
        Ok(ids.into_iter().flatten().collect())
    }

    async fn ensure_group(&self, topic: &Topic, group: &str, start: StartFrom) -> CoreResult<()> {
        let key = self.inner.keys.stream(topic);
        let id = match start {
            StartFrom::New => "$",
            StartFrom::Beginning => "0",
        };
        let result = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(group)
            .arg(id)
            .arg("MKSTREAM")
            .query_async::<Value>(&mut self.inner.conn.clone())
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(self.inner.server.error(&e, "XGROUP CREATE", None)),
        }
    }

    async fn consumer(&self, spec: ConsumerSpec) -> CoreResult<Box<dyn StreamConsumer>> {
        Ok(Box::new(self.open_consumer(spec).await?))
    }

    async fn settled(&self, topic: &Topic, group: &str, ids: &[EntryId]) -> CoreResult<bool> {
        let (Some(first), Some(last)) = (
            ids.iter().min_by_key(|id| stream_id(id)),
            ids.iter().max_by_key(|id| stream_id(id)),
        ) else {
            return Ok(true);
        };
        let key = self.inner.keys.stream(topic);
        let mut pipe = redis::pipe();
        pipe.cmd("XINFO").arg("GROUPS").arg(&key);
        pipe.cmd("XPENDING")
            .arg(&key)
            .arg(group)
            .arg(first)
            .arg(last)
            .arg(ids.len());
        let (groups, pending): (Value, Value) =
            match pipe.query_async(&mut self.inner.conn.clone()).await {
                Ok(replies) => replies,
                // No stream or no group yet: nothing was delivered to the group.
                Err(e) if matches!(e.code(), Some("NOGROUP") | Some("ERR")) => return Ok(false),
                Err(e) => {
                    return Err(self.inner.server.error(
                        &e,
                        "XPENDING",
                        Some((&topic.to_string(), group)),
                    ))
                }
            };
        let server = &self.inner.server;
        let delivered = reply::items(&groups)
            .ok_or_else(|| server.protocol("XINFO GROUPS", "not an array"))?
            .iter()
            .filter_map(reply::map)
            .find(|info| reply::field(info, "name").and_then(reply::text).as_deref() == Some(group))
            .and_then(|info| reply::field(&info, "last-delivered-id").and_then(reply::text));
        let Some(delivered) = delivered else {
            return Ok(false);
        };
        if stream_id(&delivered) < stream_id(last) {
            return Ok(false);
        }
        let pending = reply::pending_rows(&pending)
            .ok_or_else(|| server.protocol("XPENDING", "unexpected reply"))?;
        Ok(!pending.iter().any(|row| ids.contains(&row.id)))
    }

    async fn lag(&self, group: Option<&str>) -> CoreResult<Vec<GroupLag>> {
        let mut stream_keys = self
            .scan(&self.inner.keys.stream_pattern(), Some("stream"))
            .await?;
        stream_keys.sort();
        stream_keys.dedup();
        let mut out = Vec::new();
        for key in stream_keys {
            let Some(topic) = self.inner.keys.topic_of(&key) else {
                continue;
            };
            out.extend(self.group_lag(&key, &topic, group).await?);
        }
        out.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        Ok(out)
    }

    async fn dead_letters(&self, group: &str, count: usize) -> CoreResult<Vec<DeadLetter>> {
        let key = self.inner.keys.dead_letters(group);
        let entries = self.read_dead_letters(&key, "-", count.max(1)).await?;
        Ok(entries
            .iter()
            .take(count)
            .map(|e| self.parse_dead_letter(e))
            .collect())
    }

    async fn replay_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> CoreResult<usize> {
        let dlq = self.inner.keys.dead_letters(group);
        let mut replayed = 0;
        match ids {
            Some(ids) => {
                for id in ids {
                    let entries = self
                        .query(redis::cmd("XRANGE").arg(&dlq).arg(id).arg(id), "XRANGE")
                        .await?;
                    let entries = reply::entries(&entries)
                        .ok_or_else(|| self.inner.server.protocol("XRANGE", "unexpected reply"))?;
                    for entry in &entries {
                        if self.replay_one(&dlq, entry).await? {
                            replayed += 1;
                        }
                    }
                }
            }
            None => {
                let mut start = "-".to_owned();
                loop {
                    let page = self.read_dead_letters(&dlq, &start, REPLAY_PAGE).await?;
                    for entry in &page {
                        if self.replay_one(&dlq, entry).await? {
                            replayed += 1;
                        }
                    }
                    match page.last() {
                        Some(last) if page.len() == REPLAY_PAGE => start = format!("({}", last.id),
                        _ => break,
                    }
                }
            }
        }
        Ok(replayed)
    }

    async fn purge_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> CoreResult<usize> {
        let dlq = self.inner.keys.dead_letters(group);
        let deleted: i64 = match ids {
            Some([]) => 0,
            Some(ids) => {
                let value = self
                    .query(redis::cmd("XDEL").arg(&dlq).arg(ids), "XDEL")
                    .await?;
                reply::int(&value).unwrap_or(0)
            }
            None => {
                let (len, _): (i64, i64) = redis::pipe()
                    .atomic()
                    .cmd("XLEN")
                    .arg(&dlq)
                    .cmd("DEL")
                    .arg(&dlq)
                    .query_async(&mut self.inner.conn.clone())
                    .await
                    .map_err(|e| self.inner.server.error(&e, "XLEN+DEL", None))?;
                len
            }
        };
        Ok(usize::try_from(deleted).unwrap_or(0))
    }

    fn describe(&self) -> String {
        self.inner.server.redacted_url.clone()
    }

    fn reply_streams(&self) -> Option<std::sync::Arc<dyn ReplyStreams>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

/// Appends `[MAXLEN ~ n] * field value …` to an `XADD`.
/// `XADD key [MAXLEN ~ maxlen] * fields… [original_stream S]`, its buffer sized up front
/// (`size`: about the bytes of its arguments).
fn xadd(
    key: &str,
    maxlen: u64,
    fields: &[(&str, &str)],
    original_stream: Option<&str>,
    size: usize,
) -> Cmd {
    let mut cmd = Cmd::with_capacity(8 + 2 * fields.len(), size);
    cmd.arg("XADD").arg(key);
    if maxlen > 0 {
        cmd.arg("MAXLEN").arg("~").arg(maxlen);
    }
    cmd.arg("*");
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    if let Some(stream) = original_stream {
        cmd.arg(codec::ORIGINAL_STREAM).arg(stream);
    }
    cmd
}

/// `XADD key NOMKSTREAM [MAXLEN ~ maxlen] * fields…`: appends only to an existing stream.
fn xadd_existing(key: &str, maxlen: u64, fields: &[(&str, &str)], size: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(9 + 2 * fields.len(), size);
    cmd.arg("XADD").arg(key).arg("NOMKSTREAM");
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
/// group) when it shuts down; appends to it never create it (see `append`).
#[async_trait]
impl ReplyStreams for RedisTransport {
    async fn keep_alive(&self, topic: &Topic, ttl: Duration) -> CoreResult<()> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.query(
            redis::cmd("PEXPIRE")
                .arg(self.inner.keys.stream(topic))
                .arg(ms),
            "PEXPIRE",
        )
        .await?;
        Ok(())
    }

    async fn remove(&self, topic: &Topic) -> CoreResult<()> {
        self.query(redis::cmd("DEL").arg(self.inner.keys.stream(topic)), "DEL")
            .await?;
        Ok(())
    }
}

fn parse_consumers(value: &Value) -> Option<Vec<ConsumerInfo>> {
    reply::items(value)?
        .iter()
        .map(|c| {
            let info = reply::map(c)?;
            Some(ConsumerInfo {
                name: reply::field(&info, "name").and_then(reply::text)?,
                pending: reply::field(&info, "pending")
                    .and_then(reply::int)
                    .and_then(|p| u64::try_from(p).ok())?,
                idle: Duration::from_millis(
                    reply::field(&info, "idle")
                        .and_then(reply::int)
                        .and_then(|i| u64::try_from(i).ok())?,
                ),
            })
        })
        .collect()
}

/// A `ConnectionManager` with this configuration's timeouts and reconnect backoff.
pub(crate) async fn manager(
    config: &RedisConfig,
    response_timeout: Option<Duration>,
) -> redis::RedisResult<ConnectionManager> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout_duration()))
        .set_response_timeout(response_timeout)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(5))
        .set_number_of_retries(6);
    ConnectionManager::new_with_config(config.client().clone(), manager_config).await
}

async fn check_eviction_policy(conn: &mut redis::aio::MultiplexedConnection, server: &Server) {
    let reply = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Value>(conn)
        .await;
    let policy = match reply {
        Ok(value) => reply::map(&value)
            .and_then(|pairs| reply::field(&pairs, "maxmemory-policy").and_then(reply::text)),
        Err(e) => {
            tracing::debug!(server = %server.redacted_url, error = %e, "cannot read maxmemory-policy");
            None
        }
    };
    if let Some(policy) = policy.filter(|p| p.starts_with("allkeys-")) {
        tracing::warn!(
            server = %server.redacted_url,
            maxmemory_policy = %policy,
            "Redis may evict whole streams together with their consumer groups under this \
             eviction policy; use noeviction or a volatile-* policy for the event bus"
        );
    }
}

/// Installs rustls' ring provider as the process default, once (an already installed
/// provider is kept).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl RedisTransport {
    /// Deletes every key of this transport's namespace (streams with their groups, dead
    /// letters): for demos and tests that clean up after themselves. Returns how many keys
    /// were deleted. Pub/Sub channels and other namespaces are untouched.
    pub async fn delete_namespace(&self) -> CoreResult<u64> {
        let keys = self
            .scan(&format!("{}:*", self.inner.keys.namespace()), None)
            .await?;
        let mut deleted = 0u64;
        for batch in keys.chunks(500) {
            let n: u64 = redis::cmd("UNLINK")
                .arg(batch)
                .query_async(&mut self.inner.conn.clone())
                .await
                .map_err(|e| self.inner.server.error(&e, "UNLINK", None))?;
            deleted += n;
        }
        Ok(deleted)
    }

    /// Every key matching `pattern` (of `key_type`, when given), by `SCAN` (never `KEYS`).
    async fn scan(&self, pattern: &str, key_type: Option<&str>) -> CoreResult<Vec<String>> {
        let mut conn = self.inner.conn.clone();
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500);
            if let Some(t) = key_type {
                cmd.arg("TYPE").arg(t);
            }
            let (next, batch): (u64, Vec<String>) = cmd
                .query_async(&mut conn)
                .await
                .map_err(|e| self.inner.server.error(&e, "SCAN", None))?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// A stream entry id as a number pair, for ordering (`None`, below every id, when malformed).
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
