//! [`RedisTransport`]: the Streams bus on Redis.

use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::transport::{
    ConsumerInfo, ConsumerSpec, DeadLetter, DeadLetterReason, GroupLag, StartFrom, StreamConsumer,
    StreamTransport, Topic,
};
use eventbus_core::{EntryId, Envelope, Error as CoreError, ReplyStreams, Result as CoreResult};
use redis::{Cmd, Value};
use serde_json::Value as Json;

use crate::client::{Inner, RedisClient};
use crate::codec;
use crate::config::RedisConfig;
use crate::consumer::RedisConsumer;
use crate::error::{has_code, Result};
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
        let reader = self.client.dedicated_connection().await?;
        Ok(RedisConsumer::new(self.client.clone(), reader, spec))
    }

    fn stream_maxlen(&self, topic: &Topic) -> u64 {
        match topic {
            Topic::Type(event_type) => self.inner().config.stream_maxlen(event_type),
            Topic::All => self.inner().config.global_stream_maxlen(),
            Topic::Replies(_) => REPLY_STREAM_MAXLEN,
            // A command stream is bounded like an event type's: by the default per-type limit.
            _ => self.inner().config.stream_maxlen(""),
        }
    }

    async fn query(&self, cmd: &Cmd, operation: &str) -> CoreResult<Value> {
        cmd.query_async(&mut self.inner().conn.clone())
            .await
            .map_err(|e| self.inner().server.error(&e, operation, None))
    }

    async fn group_lag(
        &self,
        key: &str,
        topic: &Topic,
        only: Option<&str>,
    ) -> CoreResult<Vec<GroupLag>> {
        let server = &self.inner().server;
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
                .query_async(&mut self.inner().conn.clone())
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
                .inner()
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
            .ok_or_else(|| self.inner().server.protocol("XRANGE", "unexpected reply"))
    }

    /// Replays one dead letter; `false` when it is gone or has no fields to replay.
    ///
    /// The original fields are copied inside Redis ([`scripts::REPLAY`]), never through Rust
    /// strings, so an entry whose fields are not UTF-8 comes back byte for byte. The origin
    /// stream must be one of this namespace's streams.
    async fn replay_one(&self, dlq: &str, letter: &RawEntry) -> CoreResult<bool> {
        let server = &self.inner().server;
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
            .and_then(|key| self.inner().keys.topic_of(key))
            .ok_or_else(|| {
                CoreError::Config(format!(
                    "dead letter {} names origin stream `{}`, which is not a stream of \
                     namespace `{}`: not replayed",
                    letter.id,
                    String::from_utf8_lossy(origin),
                    self.inner().keys.namespace()
                ))
            })?;
        let replayed: Value = scripts::REPLAY
            .key(dlq)
            .key(origin)
            .arg(&letter.id)
            .arg(self.stream_maxlen(&topic))
            .invoke_async(&mut self.inner().conn.clone())
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
        let keys = &self.inner().keys;
        let config = &self.inner().config;
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
            .query_async(&mut self.inner().conn.clone())
            .await
            .map_err(|e| {
                self.inner()
                    .server
                    .error(&e, "publish (MULTI XADD … EXEC)", None)
            })?;
        if ids.len() != events.len() * 2 {
            return Err(self.inner().server.protocol(
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
        let key = self.inner().keys.stream(topic);
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
            .query_async(&mut self.inner().conn.clone())
            .await
            .map_err(|e| self.inner().server.error(&e, "append (XADD)", None))?;
        if ids.iter().any(Option::is_none) {
            tracing::debug!(topic = %topic, "stream is gone: entries dropped");
        }
        Ok(ids.into_iter().flatten().collect())
    }

    async fn ensure_group(&self, topic: &Topic, group: &str, start: StartFrom) -> CoreResult<()> {
        let key = self.inner().keys.stream(topic);
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
            .query_async::<Value>(&mut self.inner().conn.clone())
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(self.inner().server.error(&e, "XGROUP CREATE", None)),
        }
    }

    async fn consumer(&self, spec: ConsumerSpec) -> CoreResult<Box<dyn StreamConsumer>> {
        Ok(Box::new(self.open_consumer(spec).await?))
    }

    async fn lag(&self, group: Option<&str>) -> CoreResult<Vec<GroupLag>> {
        let mut stream_keys = self
            .scan(&self.inner().keys.stream_pattern(), Some("stream"))
            .await?;
        stream_keys.sort();
        stream_keys.dedup();
        let mut out = Vec::new();
        for key in stream_keys {
            let Some(topic) = self.inner().keys.topic_of(&key) else {
                continue;
            };
            out.extend(self.group_lag(&key, &topic, group).await?);
        }
        out.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        Ok(out)
    }

    async fn dead_letters(&self, group: &str, count: usize) -> CoreResult<Vec<DeadLetter>> {
        let key = self.inner().keys.dead_letters(group);
        let entries = self.read_dead_letters(&key, "-", count.max(1)).await?;
        Ok(entries
            .iter()
            .take(count)
            .map(|e| self.parse_dead_letter(e))
            .collect())
    }

    async fn replay_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> CoreResult<usize> {
        let dlq = self.inner().keys.dead_letters(group);
        let mut replayed = 0;
        match ids {
            Some(ids) => {
                for id in ids {
                    let entries = self
                        .query(redis::cmd("XRANGE").arg(&dlq).arg(id).arg(id), "XRANGE")
                        .await?;
                    let entries = reply::entries(&entries).ok_or_else(|| {
                        self.inner().server.protocol("XRANGE", "unexpected reply")
                    })?;
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
        let dlq = self.inner().keys.dead_letters(group);
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
                    .query_async(&mut self.inner().conn.clone())
                    .await
                    .map_err(|e| self.inner().server.error(&e, "XLEN+DEL", None))?;
                len
            }
        };
        Ok(usize::try_from(deleted).unwrap_or(0))
    }

    fn describe(&self) -> String {
        self.inner().server.redacted_url.clone()
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
                .arg(self.inner().keys.stream(topic))
                .arg(ms),
            "PEXPIRE",
        )
        .await?;
        Ok(())
    }

    async fn remove(&self, topic: &Topic) -> CoreResult<()> {
        self.query(
            redis::cmd("DEL").arg(self.inner().keys.stream(topic)),
            "DEL",
        )
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

impl RedisTransport {
    /// Deletes every key of this transport's namespace (streams with their groups, dead
    /// letters): for demos and tests that clean up after themselves. Returns how many keys
    /// were deleted. Pub/Sub channels and other namespaces are untouched.
    pub async fn delete_namespace(&self) -> CoreResult<u64> {
        let keys = self
            .scan(&format!("{}:*", self.inner().keys.namespace()), None)
            .await?;
        let mut deleted = 0u64;
        for batch in keys.chunks(500) {
            let n: u64 = redis::cmd("UNLINK")
                .arg(batch)
                .query_async(&mut self.inner().conn.clone())
                .await
                .map_err(|e| self.inner().server.error(&e, "UNLINK", None))?;
            deleted += n;
        }
        Ok(deleted)
    }

    /// Every key matching `pattern` (of `key_type`, when given), by `SCAN` (never `KEYS`).
    async fn scan(&self, pattern: &str, key_type: Option<&str>) -> CoreResult<Vec<String>> {
        let mut conn = self.inner().conn.clone();
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
                .map_err(|e| self.inner().server.error(&e, "SCAN", None))?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}
