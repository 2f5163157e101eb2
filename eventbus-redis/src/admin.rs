//! The admin side of [`RedisTransport`]: groups' lag, dead letters (browse, replay, purge)
//! and scans of the namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::transport::{
    ConsumerInfo, DeadLetter, DeadLetterReason, GroupLag, StreamAdmin, Topic,
};
use eventbus_core::{EntryId, Error as CoreError, Result as CoreResult};
use redis::Value;

use crate::codec;
use crate::keys;
use crate::partition::{self, Directory};
use crate::reply::{self, RawEntry};
use crate::scripts;
use crate::transport::RedisTransport;

/// How many dead letters one `XRANGE` page reads when replaying all of them.
const REPLAY_PAGE: usize = 100;

#[async_trait]
impl StreamAdmin for RedisTransport {
    /// Ids may be qualified with their partition (`{partition}/{id}`, as a partitioned topic
    /// hands them out); each partition's stream is checked for its own.
    async fn settled(&self, topic: &Topic, group: &str, ids: &[EntryId]) -> CoreResult<bool> {
        let mut by_partition: BTreeMap<u32, Vec<EntryId>> = BTreeMap::new();
        for id in ids {
            let (index, id) = partition::split_id(id);
            by_partition.entry(index).or_default().push(id.to_owned());
        }
        let Some(last) = by_partition.keys().next_back().copied() else {
            return Ok(true);
        };
        let inner = self.inner();
        let count = Directory::topic_count(inner, topic).await?.max(last + 1);
        let parts = Directory::parts(inner, topic, count).await?;
        for (index, ids) in &by_partition {
            let Some(part) = parts.iter().find(|p| p.index == *index) else {
                return Ok(false);
            };
            if !self.settled_on(&part.key, topic, group, ids).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The group's health summed over every partition of the topic.
    async fn lag_of(&self, topic: &Topic, group: &str) -> CoreResult<Option<GroupLag>> {
        let inner = self.inner();
        let count = Directory::topic_count(inner, topic).await?;
        let mut rows = Vec::new();
        for part in Directory::parts(inner, topic, count).await? {
            rows.extend(self.group_lag(&part.key, topic, None, Some(group)).await?);
        }
        Ok(GroupLag::total(rows))
    }

    async fn lag(&self, group: Option<&str>) -> CoreResult<Vec<GroupLag>> {
        let mut stream_keys = self
            .scan(&self.inner().keys.stream_pattern(), Some("stream"))
            .await?;
        stream_keys.sort();
        stream_keys.dedup();
        let mut partitions = Partitions::default();
        let mut out = Vec::new();
        for key in stream_keys {
            let Some((topic, partition)) = self.stream_of_key(&key, &mut partitions).await? else {
                continue;
            };
            out.extend(self.group_lag(&key, &topic, partition, group).await?);
        }
        out.sort_by(|a, b| {
            (&a.topic, &a.group, a.partition).cmp(&(&b.topic, &b.group, b.partition))
        });
        Ok(out)
    }

    /// Dead letters of every partition, merged oldest first; the ids of those of a
    /// partition's own dead-letter stream are qualified with the partition.
    async fn dead_letters(&self, group: &str, count: usize) -> CoreResult<Vec<DeadLetter>> {
        let mut partitions = Partitions::default();
        let mut letters = Vec::new();
        for (index, key) in self.dead_letter_streams(group, &mut partitions).await? {
            for entry in self.read_dead_letters(&key, "-", count.max(1)).await? {
                let order = stream_id(&entry.id);
                let mut letter = self.parse_dead_letter(&entry, &mut partitions).await?;
                if let Some(index) = index {
                    letter.id = partition::qualify(index, &letter.id, true);
                }
                letters.push((order, letter));
            }
        }
        letters.sort_by_key(|(order, _)| *order);
        Ok(letters
            .into_iter()
            .take(count)
            .map(|(_, letter)| letter)
            .collect())
    }

    async fn replay_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> CoreResult<usize> {
        let mut replayed = 0;
        for (dlq, ids) in self.dead_letter_targets(group, ids).await? {
            match ids {
                Some(ids) => {
                    for id in ids {
                        let entries = self
                            .query(redis::cmd("XRANGE").arg(&dlq).arg(&id).arg(&id), "XRANGE")
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
                            Some(last) if page.len() == REPLAY_PAGE => {
                                start = format!("({}", last.id)
                            }
                            _ => break,
                        }
                    }
                }
            }
        }
        Ok(replayed)
    }

    async fn purge_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> CoreResult<usize> {
        let mut deleted = 0i64;
        for (dlq, ids) in self.dead_letter_targets(group, ids).await? {
            deleted += match ids {
                Some(ids) => {
                    let value = self
                        .query(redis::cmd("XDEL").arg(&dlq).arg(&ids), "XDEL")
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
        }
        Ok(usize::try_from(deleted).unwrap_or(0))
    }
}

/// The namespace's partition tags, loaded when first needed, to tell a tag's partition.
#[derive(Default)]
pub(crate) struct Partitions {
    tags: Option<Vec<String>>,
}

impl Partitions {
    /// The partition of a hash tag; `None` when the namespace has no such tag.
    async fn index_of(&mut self, transport: &RedisTransport, tag: &str) -> CoreResult<Option<u32>> {
        let find = |tags: &[String]| {
            tags.iter()
                .position(|t| t == tag)
                .and_then(|i| u32::try_from(i).ok())
        };
        if let Some(index) = self.tags.as_deref().and_then(find) {
            return Ok(Some(index));
        }
        // Not known yet (or created since): read the list again.
        let inner = transport.inner();
        let count = Directory::global_count(inner).await?;
        let tags = Directory::tags(inner, count).await?;
        let index = find(&tags);
        self.tags = Some(tags);
        Ok(index)
    }
}

impl RedisTransport {
    /// The topic of a stream key of the namespace and its partition (`None`: an
    /// unpartitioned stream, whose ids are plain), or `None` for a key that is no stream of
    /// the namespace.
    pub(crate) async fn stream_of_key(
        &self,
        key: &str,
        partitions: &mut Partitions,
    ) -> CoreResult<Option<(Topic, Option<u32>)>> {
        let Some((topic, tag)) = self.inner().keys.parse_stream(key) else {
            return Ok(None);
        };
        let partition = match tag {
            // A named stream's own tag (on a cluster): one stream, plain ids.
            Some(tag) if keys::is_named(&tag) => None,
            Some(tag) => partitions.index_of(self, &tag).await?,
            // Partition 0 of a partitioned topic on a single node is its plain stream.
            None if Directory::topic_count(self.inner(), &topic).await? > 1 => Some(0),
            None => None,
        };
        Ok(Some((topic, partition)))
    }

    /// Whether `group` is done with `ids` (plain stream ids) of the stream at `key`.
    async fn settled_on(
        &self,
        key: &str,
        topic: &Topic,
        group: &str,
        ids: &[EntryId],
    ) -> CoreResult<bool> {
        let (Some(first), Some(last)) = (
            ids.iter().min_by_key(|id| stream_id(id)),
            ids.iter().max_by_key(|id| stream_id(id)),
        ) else {
            return Ok(true);
        };
        let inner = self.inner();
        let mut pipe = redis::pipe();
        pipe.cmd("XINFO").arg("GROUPS").arg(key);
        pipe.cmd("XPENDING")
            .arg(key)
            .arg(group)
            .arg(first)
            .arg(last)
            .arg(ids.len());
        let (groups, pending): (Value, Value) = match pipe
            .query_async(&mut inner.conn.clone())
            .await
        {
            Ok(replies) => replies,
            // No stream or no group yet: nothing was delivered to the group.
            Err(e) if matches!(e.code(), Some("NOGROUP") | Some("ERR")) => return Ok(false),
            Err(e) => {
                return Err(inner
                    .server
                    .error(&e, "XPENDING", Some((&topic.to_string(), group))))
            }
        };
        let server = &inner.server;
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

    /// Every dead-letter stream of a group (the plain one, and one per partition hash tag),
    /// with the partition of a tagged one (`None`: the plain one, whose ids are plain).
    async fn dead_letter_streams(
        &self,
        group: &str,
        partitions: &mut Partitions,
    ) -> CoreResult<Vec<(Option<u32>, String)>> {
        let keys = &self.inner().keys;
        let plain = keys.dead_letters(group);
        let mut found = self
            .scan(&keys.dead_letters_pattern(group), Some("stream"))
            .await?;
        found.sort();
        found.dedup();
        let mut out = Vec::new();
        for key in found {
            if key == plain {
                out.push((None, key));
                continue;
            }
            // `{dlq}:{tag}`; any other key is another group's whose name starts alike.
            let Some(tag) = key
                .strip_prefix(&plain)
                .and_then(|rest| rest.strip_prefix(":{"))
                .and_then(|rest| rest.strip_suffix('}'))
            else {
                continue;
            };
            if keys::is_named(tag) {
                // A named stream's dead letters (on a cluster): plain ids.
                out.push((None, key));
                continue;
            }
            match partitions.index_of(self, tag).await? {
                Some(index) => out.push((Some(index), key)),
                None => tracing::warn!(key = %key, "dead-letter stream of an unknown partition"),
            }
        }
        Ok(out)
    }

    /// The dead-letter streams to act on, each with its plain ids (`None`: all of it): every
    /// stream of the group when `ids` is `None`, else those holding the (possibly qualified)
    /// ids.
    async fn dead_letter_targets(
        &self,
        group: &str,
        ids: Option<&[EntryId]>,
    ) -> CoreResult<Vec<(String, Option<Vec<EntryId>>)>> {
        let streams = self
            .dead_letter_streams(group, &mut Partitions::default())
            .await?;
        let Some(ids) = ids else {
            return Ok(streams.into_iter().map(|(_, key)| (key, None)).collect());
        };
        let mut targets: Vec<(String, Option<Vec<EntryId>>)> = Vec::new();
        for qualified in ids {
            let plain = !qualified.contains('/');
            let (index, id) = partition::split_id(qualified);
            // A plain id is partition 0's (the plain stream, or partition 0's tagged one) or
            // a named stream's on a cluster: every stream of plain ids is looked in.
            let mut matching = streams.iter().filter(|(i, _)| match i {
                None => plain,
                Some(i) => *i == index,
            });
            let found: Vec<&String> = if plain {
                matching.map(|(_, key)| key).collect()
            } else {
                matching.next().map(|(_, key)| key).into_iter().collect()
            };
            for key in found {
                match targets.iter_mut().find(|(k, _)| k == key) {
                    Some((_, Some(list))) => list.push(id.to_owned()),
                    _ => targets.push((key.clone(), Some(vec![id.to_owned()]))),
                }
            }
        }
        Ok(targets)
    }

    async fn group_lag(
        &self,
        key: &str,
        topic: &Topic,
        partition: Option<u32>,
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
                partition,
                group: name,
                lag,
                pending: u64::try_from(pending).unwrap_or(0),
                oldest_pending_idle,
                consumers,
            });
        }
        Ok(out)
    }

    /// A dead letter as stored; its origin id qualified with its partition when it comes
    /// from a partitioned topic (as the entry's id was handed out).
    async fn parse_dead_letter(
        &self,
        entry: &RawEntry,
        partitions: &mut Partitions,
    ) -> CoreResult<DeadLetter> {
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
        let (origin_topic, tag) = self
            .inner()
            .keys
            .parse_stream(origin_stream)
            .unwrap_or_else(|| (Topic::of_type(origin_stream), None));
        let mut origin_id = get("origin_id").to_owned();
        let index = match tag {
            Some(tag) if keys::is_named(&tag) => None,
            Some(tag) => partitions.index_of(self, &tag).await?,
            // Partition 0 of a partitioned topic on a single node is its plain stream.
            None if Directory::topic_count(self.inner(), &origin_topic).await? > 1 => Some(0),
            None => None,
        };
        if let Some(index) = index {
            origin_id = partition::qualify(index, &origin_id, true);
        }
        let original: Vec<(String, String)> =
            serde_json::from_str(get("entry")).unwrap_or_default();
        Ok(DeadLetter {
            id: entry.id.clone(),
            origin_topic,
            origin_id,
            group: get("group").to_owned(),
            reason: DeadLetterReason {
                error: get("error").to_owned(),
                delivery_count: get("delivery_count").parse().unwrap_or(0),
                consumer: get("consumer").to_owned(),
            },
            dead_lettered_at: get("dead_lettered_at").parse().unwrap_or(0.0),
            event: codec::decode(&original).ok(),
            fields: original,
        })
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
            .and_then(|key| self.inner().keys.parse_stream(key))
            .map(|(topic, _)| topic)
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

    /// Every key matching `pattern` (of `key_type`, when given), by `SCAN` (never `KEYS`),
    /// on every master of a cluster.
    pub(crate) async fn scan(
        &self,
        pattern: &str,
        key_type: Option<&str>,
    ) -> CoreResult<Vec<String>> {
        self.inner()
            .conn
            .clone()
            .scan(pattern, key_type)
            .await
            .map_err(|e| self.inner().server.error(&e, "SCAN", None))
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

/// A stream entry id as a number pair, for ordering (`None`, below every id, when malformed).
pub(crate) fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
