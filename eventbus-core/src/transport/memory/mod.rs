//! In-memory transport with the semantics of Redis Streams consumer groups (Redis 7.0).
//!
//! [`MemoryTransport`] keeps one stream per event type plus the global stream
//! ([`Topic::All`]), consumer groups with their pending entries lists, and a dead-letter
//! stream per group, all in process memory. It behaves like the Redis backend, so the
//! runtime, and tests written against it, behave the same on both:
//!
//! - entry ids are `{ms}-{seq}`, strictly increasing per stream, compared numerically;
//! - streams are trimmed on every append to a maximum length, oldest first (exactly, where
//!   Redis' `MAXLEN ~` trims approximately), whether or not groups have read the entries;
//! - reads, claims and redeliveries follow `XREADGROUP`, `XCLAIM` and `XAUTOCLAIM`,
//!   including the Redis 7.0 handling of pending entries whose data was trimmed;
//! - an operation on a group that does not exist fails with [`Error::GroupMissing`]
//!   (`NOGROUP`), e.g. after [`MemoryTransport::flush`], except acknowledging (`XACK` on a
//!   missing group is a no-op).
//!
//! A dead letter's [`fields`](crate::transport::DeadLetter::fields) are a raw rendering of
//! the entry: one pair per envelope field (`event_id`, `event_type`, `version`, `source`,
//! `timestamp`, `correlation_id` and `causation_id` when set, then `metadata` and `data` as
//! JSON), or `("malformed", reason)` for an entry that could not be decoded, or nothing when
//! the entry no longer existed. Replaying re-appends the stored entry itself, unchanged.
//!
//! Nothing is persisted: the transport lives as long as its last clone.
//!
//! [`Error::GroupMissing`]: crate::Error::GroupMissing

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::envelope::{now_seconds, EntryId, Envelope};
use crate::error::{Error, Result};
use crate::transport::{
    ConsumerSpec, DeadLetter, DeadLetterReason, Malformed, ReplyStreams, StartFrom, StreamConsumer,
    StreamTransport, Topic,
};

mod admin;
mod consumer;
mod read_models;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use consumer::MemoryConsumer;

use crate::memory::streams::{DeadRecord, Entry, Limits, State, StreamId};
use crate::memory::MemoryServer;

/// Default maximum length of each event type's stream.
pub const DEFAULT_MAX_LEN: usize = 100_000;

/// Default maximum length of the global stream.
pub const DEFAULT_MAX_LEN_ALL: usize = 500_000;

/// An in-process [`StreamTransport`] with the semantics of Redis Streams consumer groups.
///
/// Cheap to clone: clones share the same streams.
///
/// ```
/// use eventbus_core::transport::memory::MemoryTransport;
///
/// let transport = MemoryTransport::builder().max_len(1_000).max_len_all(5_000).build();
/// # let _ = transport;
/// ```
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    shared: Arc<MemoryServer>,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        MemoryTransport::new()
    }
}

impl MemoryTransport {
    /// A transport with the default stream lengths ([`DEFAULT_MAX_LEN`] per type stream,
    /// [`DEFAULT_MAX_LEN_ALL`] for the global stream).
    pub fn new() -> Self {
        MemoryTransport::builder().build()
    }

    /// A builder to configure stream lengths.
    pub fn builder() -> MemoryTransportBuilder {
        MemoryTransportBuilder {
            limits: Limits {
                per_type: DEFAULT_MAX_LEN,
                overrides: HashMap::new(),
                all: DEFAULT_MAX_LEN_ALL,
            },
        }
    }

    /// Drops every stream, group and dead letter, like `FLUSHALL`: consumers then fail with
    /// [`Error::GroupMissing`] until their groups are created again. Blocked reads wake up
    /// and report the missing group.
    pub fn flush(&self) {
        *self.shared.lock() = State::default();
        self.shared.appended.notify_waiters();
    }

    /// Appends an entry that cannot be decoded, as a broken producer might write one: it is
    /// delivered as `Delivery { event: Err(Malformed { reason }), .. }`. Only `topic`'s
    /// stream gets it (creating the stream if needed). For tests of the dead-letter path.
    pub fn append_malformed(&self, topic: &Topic, reason: impl Into<String>) -> EntryId {
        let entry = Err(Malformed {
            reason: reason.into(),
        });
        let id = self.append(&mut self.shared.lock(), topic, entry);
        self.shared.appended.notify_waiters();
        id.to_string()
    }

    /// Appends to one stream (creating it), trimming it to its maximum length.
    fn append(&self, state: &mut State, topic: &Topic, entry: Entry) -> StreamId {
        let max_len = self.shared.limits.max_len(topic);
        state
            .streams
            .entry(topic.clone())
            .or_default()
            .append(entry, max_len)
    }
}

/// Configures a [`MemoryTransport`]: maximum stream lengths.
#[derive(Debug, Clone)]
pub struct MemoryTransportBuilder {
    limits: Limits,
}

impl MemoryTransportBuilder {
    /// Maximum length of every event type's stream (default [`DEFAULT_MAX_LEN`]).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.limits.per_type = max_len;
        self
    }

    /// Maximum length of one event type's stream, overriding [`max_len`](Self::max_len).
    pub fn max_len_for(mut self, event_type: impl Into<String>, max_len: usize) -> Self {
        self.limits.overrides.insert(event_type.into(), max_len);
        self
    }

    /// Maximum length of the global stream (default [`DEFAULT_MAX_LEN_ALL`]).
    pub fn max_len_all(mut self, max_len: usize) -> Self {
        self.limits.all = max_len;
        self
    }

    /// Builds the transport.
    pub fn build(self) -> MemoryTransport {
        MemoryTransport {
            shared: Arc::new(MemoryServer::new(self.limits)),
        }
    }
}

/// The raw fields stored with a dead letter (see the module docs).
fn render_fields(entry: Option<&Entry>) -> Vec<(String, String)> {
    let envelope = match entry {
        None => return Vec::new(),
        Some(Err(m)) => return vec![("malformed".to_owned(), m.reason.clone())],
        Some(Ok(e)) => e,
    };
    let mut fields = vec![
        ("event_id".to_owned(), envelope.event_id.clone()),
        ("event_type".to_owned(), envelope.event_type.clone()),
        ("version".to_owned(), envelope.version.to_string()),
        ("source".to_owned(), envelope.source.clone()),
        ("timestamp".to_owned(), envelope.timestamp.to_string()),
    ];
    if let Some(c) = &envelope.correlation_id {
        fields.push(("correlation_id".to_owned(), c.clone()));
    }
    if let Some(c) = &envelope.causation_id {
        fields.push(("causation_id".to_owned(), c.clone()));
    }
    fields.push((
        "metadata".to_owned(),
        Value::Object(envelope.metadata.clone()).to_string(),
    ));
    fields.push(("data".to_owned(), envelope.data.to_string()));
    fields
}

impl MemoryTransport {
    /// Moves entry `id` of `topic` to `group`'s dead letters and acknowledges it, under one
    /// lock. A missing group or entry is not an error: the dead letter is recorded with what
    /// is left (no event, no fields when the entry is gone), like `XADD` + `XACK` would.
    /// Dead-letters an entry pending for `consumer`; does nothing when it is not (it was
    /// acknowledged, or reclaimed by another consumer, meanwhile), as the Redis script does.
    fn dead_letter(
        &self,
        topic: &Topic,
        group: &str,
        consumer: &str,
        id: StreamId,
        reason: &DeadLetterReason,
    ) {
        let mut state = self.shared.lock();
        let Some(stream) = state.streams.get_mut(topic) else {
            return;
        };
        let entry = stream.entries.get(&id).map(|s| s.entry.clone());
        let Some(g) = stream.groups.get_mut(group) else {
            return;
        };
        if g.pel.get(&id).is_none_or(|p| p.consumer != consumer) {
            return;
        }
        g.pel.remove(&id);
        let dead = state.dead.entry(group.to_owned()).or_default();
        let dead_id = dead.next_id();
        let letter = DeadLetter {
            id: dead_id.to_string(),
            origin_topic: topic.clone(),
            origin_id: id.to_string(),
            group: group.to_owned(),
            reason: reason.clone(),
            dead_lettered_at: now_seconds(),
            event: entry
                .as_ref()
                .and_then(|e| e.as_ref().ok())
                .map(|e| Envelope::clone(e)),
            fields: render_fields(entry.as_ref()),
        };
        dead.records.insert(dead_id, DeadRecord { letter, entry });
    }
}

#[async_trait]
impl StreamTransport for MemoryTransport {
    async fn publish(&self, events: &[Envelope<Value>]) -> Result<Vec<EntryId>> {
        let ids = {
            let mut state = self.shared.lock();
            events
                .iter()
                .map(|event| {
                    let entry: Entry = Ok(Arc::new(event.clone()));
                    let id = self.append(
                        &mut state,
                        &Topic::of_type(&event.event_type),
                        entry.clone(),
                    );
                    self.append(&mut state, &Topic::All, entry);
                    id.to_string()
                })
                .collect()
        };
        self.shared.appended.notify_waiters();
        Ok(ids)
    }

    async fn append(&self, topic: &Topic, entries: &[Envelope<Value>]) -> Result<Vec<EntryId>> {
        let ids = {
            let mut state = self.shared.lock();
            entries
                .iter()
                .map(|e| {
                    self.append(&mut state, topic, Ok(Arc::new(e.clone())))
                        .to_string()
                })
                .collect()
        };
        self.shared.appended.notify_waiters();
        Ok(ids)
    }

    async fn ensure_group(&self, topic: &Topic, group: &str, start: StartFrom) -> Result<()> {
        let mut state = self.shared.lock();
        let stream = state.streams.entry(topic.clone()).or_default();
        if !stream.groups.contains_key(group) {
            let new = stream.new_group(start == StartFrom::Beginning);
            stream.groups.insert(group.to_owned(), new);
        }
        Ok(())
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn StreamConsumer>> {
        Ok(Box::new(MemoryConsumer::new(self.clone(), spec)?))
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn system(&self) -> &'static str {
        "memory"
    }

    fn reply_streams(&self) -> Option<std::sync::Arc<dyn ReplyStreams>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

/// Checks a consumer spec the way the Redis commands would reject it.
fn check_spec(spec: &ConsumerSpec) -> Result<()> {
    if spec.group.is_empty() {
        return Err(Error::Config("consumer group name is empty".to_owned()));
    }
    if spec.consumer.is_empty() {
        return Err(Error::Config("consumer name is empty".to_owned()));
    }
    if spec.topics.is_empty() {
        return Err(Error::Config(format!(
            "consumer `{}` reads no topic",
            spec.consumer
        )));
    }
    Ok(())
}

/// Reply streams live in memory as long as the transport, unless removed: `keep_alive` has
/// nothing to do, `remove` drops the stream with its groups.
#[async_trait]
impl ReplyStreams for MemoryTransport {
    async fn keep_alive(&self, _topic: &Topic, _ttl: std::time::Duration) -> Result<()> {
        Ok(())
    }

    async fn remove(&self, topic: &Topic) -> Result<()> {
        self.shared.lock().streams.remove(topic);
        Ok(())
    }

    async fn reply(&self, topic: &Topic, entries: &[Envelope<Value>]) -> Result<Vec<EntryId>> {
        if !self.shared.lock().streams.contains_key(topic) {
            return Ok(Vec::new());
        }
        StreamTransport::append(self, topic, entries).await
    }
}
