//! The seam between the runtime and a backend.
//!
//! A backend (Redis in `eventbus-redis`, or [`memory::MemoryTransport`]) offers the stream
//! primitives below; the runtime in [`crate::bus`] builds the consumer loop (batching, bounded
//! concurrency, retries, dead letters, reclaiming, shutdown) on top of them once, so every
//! backend has the same delivery semantics.
//!
//! The model is that of Redis Streams: every event type has a stream, and every event is
//! also appended to one global stream ([`Topic::All`]); consumer groups track what they have
//! read and keep a pending entries list (PEL) of what they have read but not acknowledged.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{EntryId, Envelope};
use crate::error::Result;

pub mod memory;

/// A stream a subscription reads: one event type's stream, the global stream, or a stream
/// named by whoever uses it (remote commands name theirs; see
/// [`CommandClient`](crate::CommandClient)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Topic {
    /// The stream of one event type.
    Type(String),
    /// The global stream every event is also appended to.
    All,
    /// A stream that is no event type's, by name. A name holds a `:`, which an event type
    /// never does, so it can't meet a type's stream.
    Named(String),
}

impl Topic {
    /// The topic of one event type.
    pub fn of_type(event_type: impl Into<String>) -> Self {
        Topic::Type(event_type.into())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Type(t) => f.write_str(t),
            Topic::All => f.write_str("all"),
            Topic::Named(name) => f.write_str(name),
        }
    }
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Only events appended after the group was created (`$`).
    #[default]
    New,
    /// Every event still in the stream (`0`).
    Beginning,
}

/// One entry handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream it was read from.
    pub topic: Topic,
    /// Its id in that stream.
    pub entry_id: EntryId,
    /// How many times it has been delivered to the group, this delivery included.
    pub delivery_count: u32,
    /// The decoded event, or why the entry could not be decoded.
    pub event: std::result::Result<Envelope<Value>, Malformed>,
}

/// Why an entry could not be decoded into an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Human-readable reason, stored with the dead letter.
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What a consumer is: its group, its stable name and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The consumer group, `{service}-consumers` by convention.
    pub group: String,
    /// The consumer's name within the group; stable across restarts.
    pub consumer: String,
    /// The streams it reads.
    pub topics: Vec<Topic>,
}

/// The result of reclaiming idle entries from other consumers.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// Entries now owned by this consumer, with their delivery counts.
    pub deliveries: Vec<Delivery>,
    /// Ids that were pending but whose entries no longer exist (trimmed or deleted); the
    /// backend has already acknowledged them.
    pub deleted: Vec<EntryId>,
    /// Cursor for the next call; `0-0` when the scan wrapped around.
    pub next_cursor: EntryId,
}

/// Why and how an entry was dead-lettered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterReason {
    /// The error of the last attempt, or why the entry is malformed.
    pub error: String,
    /// Deliveries made before giving up.
    pub delivery_count: u32,
    /// The consumer that gave up.
    pub consumer: String,
}

/// An entry in a group's dead-letter stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id in the dead-letter stream.
    pub id: EntryId,
    /// The stream the entry came from.
    pub origin_topic: Topic,
    /// Its id there.
    pub origin_id: EntryId,
    /// The group that failed to handle it.
    pub group: String,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// When it was dead-lettered (seconds since the Unix epoch).
    pub dead_lettered_at: f64,
    /// The event, when the entry could be decoded.
    pub event: Option<Envelope<Value>>,
    /// The entry's original fields as text (bytes that are not UTF-8 shown as U+FFFD), for
    /// inspection; a replay copies the stored entry itself, not these.
    pub fields: Vec<(String, String)>,
}

/// Consumer-group health of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLag {
    /// The stream.
    pub topic: Topic,
    /// The partition of the topic this row is about; `None` for an unpartitioned stream (or a
    /// total over every partition of a topic).
    #[serde(default)]
    pub partition: Option<u32>,
    /// The group.
    pub group: String,
    /// Entries not yet delivered to the group; `None` when the server cannot tell (after
    /// trimming or an arbitrary `SETID`): show it as unknown, never as 0.
    pub lag: Option<u64>,
    /// Entries delivered but not acknowledged.
    pub pending: u64,
    /// Idle time of the oldest pending entry.
    pub oldest_pending_idle: Option<Duration>,
    /// Consumers with their pending counts and idle times.
    pub consumers: Vec<ConsumerInfo>,
}

impl GroupLag {
    /// The health of a group on a whole topic from its rows on the topic's partitions (all
    /// of one topic and group): lag summed, unknown if any partition's is; pending summed;
    /// the oldest pending idle time the longest; consumers merged by name (pending summed,
    /// idle the shortest). `partition` is `None`. `None` when there are no rows.
    ///
    /// ```
    /// use eventbus_core::transport::{GroupLag, Topic};
    /// let row = |partition, lag| GroupLag {
    ///     topic: Topic::of_type("OrderCreated"),
    ///     partition: Some(partition),
    ///     group: "billing-consumers".into(),
    ///     lag,
    ///     pending: 2,
    ///     oldest_pending_idle: None,
    ///     consumers: vec![],
    /// };
    /// let total = GroupLag::total([row(0, Some(3)), row(1, Some(4))]).unwrap();
    /// assert_eq!((total.partition, total.lag, total.pending), (None, Some(7), 4));
    /// assert_eq!(GroupLag::total([row(0, Some(3)), row(1, None)]).unwrap().lag, None);
    /// ```
    pub fn total(rows: impl IntoIterator<Item = GroupLag>) -> Option<GroupLag> {
        let mut rows = rows.into_iter();
        let mut total = rows.next()?;
        total.partition = None;
        for row in rows {
            total.lag = total.lag.zip(row.lag).map(|(a, b)| a + b);
            total.pending += row.pending;
            total.oldest_pending_idle = total.oldest_pending_idle.max(row.oldest_pending_idle);
            for consumer in row.consumers {
                match total.consumers.iter_mut().find(|c| c.name == consumer.name) {
                    Some(known) => {
                        known.pending += consumer.pending;
                        known.idle = known.idle.min(consumer.idle);
                    }
                    None => total.consumers.push(consumer),
                }
            }
        }
        Some(total)
    }
}

/// One consumer of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Entries it holds pending.
    pub pending: u64,
    /// Time since it last read or claimed.
    pub idle: Duration,
}

/// A backend for the Streams event bus: the hot path — publishing, and opening the
/// consumers that read, acknowledge and claim. Looking after the streams (lag, dead letters)
/// is its [`StreamAdmin`] side.
///
/// Implementations must be wire-faithful: [`publish`](Self::publish) appends each event to
/// its type's stream and to the global stream in one atomic step — unless the backend lets
/// a deployment turn the global stream off, in which case subscriptions to [`Topic::All`]
/// must refuse to start ([`ensure_group`](Self::ensure_group) and
/// [`consumer`](Self::consumer) fail with [`Error::Config`](crate::Error::Config)).
#[async_trait]
pub trait StreamTransport: StreamAdmin + Send + Sync + 'static {
    /// Appends events, each to its type's stream and to the global stream (when written)
    /// atomically, in one batch. Returns each event's id in its type's stream, in order.
    async fn publish(&self, events: &[Envelope<Value>]) -> Result<Vec<EntryId>>;

    /// Appends entries to one topic's stream only (no global stream): the command and reply
    /// streams of remote commands. Returns their entry ids, in order.
    async fn append(&self, topic: &Topic, entries: &[Envelope<Value>]) -> Result<Vec<EntryId>>;

    /// Creates the group on the topic's stream (creating the stream if needed) unless it
    /// exists; an existing group keeps its position.
    async fn ensure_group(&self, topic: &Topic, group: &str, start: StartFrom) -> Result<()>;

    /// Opens a consumer. Redis backends give it its own connection for blocking reads.
    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn StreamConsumer>>;

    /// A short human-readable name of the backend and server (no password).
    fn describe(&self) -> String;

    /// The messaging system, as telemetry names it (`messaging.system`: `redis`, `memory`).
    fn system(&self) -> &'static str {
        "other"
    }

    /// The name of a topic's destination, as telemetry names it
    /// (`messaging.destination.name`: on Redis the stream key). The topic itself by default.
    fn destination(&self, topic: &Topic) -> String {
        topic.to_string()
    }

    /// The life cycle of remote commands' reply streams on this backend, when it stores
    /// streams that would otherwise outlive their client (see [`ReplyStreams`]). `None`
    /// (the default): nothing to clean up.
    fn reply_streams(&self) -> Option<std::sync::Arc<dyn ReplyStreams>> {
        None
    }
}

/// The admin path of a backend: what operators and tools (`eventbus lag`, `eventbus dlq`)
/// and the projection rebuild look at — the groups' lag, and the dead letters (browse,
/// replay, purge). Nothing here runs per delivery.
#[async_trait]
pub trait StreamAdmin: Send + Sync + 'static {
    /// Health of every group (or of one) on every stream.
    async fn lag(&self, group: Option<&str>) -> Result<Vec<GroupLag>>;

    /// Health of `group` on `topic`'s stream alone, without looking at any other stream
    /// (`None`: no such stream, or no such group on it).
    async fn lag_of(&self, topic: &Topic, group: &str) -> Result<Option<GroupLag>>;

    /// Dead letters of a group, oldest first.
    async fn dead_letters(&self, group: &str, count: usize) -> Result<Vec<DeadLetter>>;

    /// Re-publishes dead letters to their origin streams (with their original fields and a
    /// new entry id) and removes them from the dead-letter stream. `ids` `None` replays all.
    /// Returns how many were replayed. Note that every group reading the origin stream sees
    /// a replayed entry again; the event id is unchanged, so idempotent consumers skip it.
    async fn replay_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> Result<usize>;

    /// Deletes dead letters (`None`: all). Returns how many were deleted.
    async fn purge_dead_letters(&self, group: &str, ids: Option<&[EntryId]>) -> Result<usize>;

    /// Whether `group` is done with every entry of `ids` in `topic`: each was delivered to
    /// the group and is no longer pending (handled and acknowledged, or dead-lettered). A
    /// group that doesn't exist has settled nothing. Read-your-writes waits on this.
    async fn settled(&self, topic: &Topic, group: &str, ids: &[EntryId]) -> Result<bool>;
}

/// The life of a [`CommandClient`](crate::CommandClient)'s reply stream on a backend that stores it (a Redis key):
/// kept while the client runs, removed when it shuts down, gone by itself some time after
/// its process died.
///
/// A backend implementing it also drops a reply to a stream that doesn't exist instead of
/// creating the stream (a late reply to a client that is gone must not leave a stream behind).
#[async_trait]
pub trait ReplyStreams: Send + Sync + 'static {
    /// Keeps `topic`'s stream (and its group) for at least `ttl` from now; after that, unless
    /// called again, the backend removes it. Called when the client starts and then every
    /// third of `ttl`.
    async fn keep_alive(&self, topic: &Topic, ttl: Duration) -> Result<()>;

    /// Removes `topic`'s stream with its group (the client shut down).
    async fn remove(&self, topic: &Topic) -> Result<()>;

    /// Appends replies to `topic`'s stream only if the stream exists, keeping it short: a
    /// reply to a client that is gone (shut down, or expired after its process died) is
    /// dropped, never recreating its stream. Returns the ids of what was appended.
    async fn reply(&self, topic: &Topic, entries: &[Envelope<Value>]) -> Result<Vec<EntryId>>;
}

/// One consumer of a group: the primitives the consumer loop is built from.
#[async_trait]
pub trait StreamConsumer: Send + Sync + 'static {
    /// Reads up to `count` new entries across the consumer's topics, waiting up to `block`
    /// when there are none (`XREADGROUP … >`).
    async fn read(&self, count: usize, block: Duration) -> Result<Vec<Delivery>>;

    /// Takes back, in stream order, up to `count` entries this consumer (by its name) holds
    /// pending with ids after `after` (`0-0`: from the start) — what an earlier run of it
    /// read and never settled. Ownership is checked and taken in one atomic step, and no
    /// delivery is counted (the loop counts one when it starts a handler on the entry), so
    /// each delivery's `delivery_count` is the entry's own count as it stands. Entries that no
    /// longer exist are acknowledged and reported in `deleted`. `next_cursor` is where the
    /// next page starts, `0-0` when there is none.
    async fn recover_own(&self, topic: &Topic, after: &str, count: usize) -> Result<Claimed>;

    /// Claims entries of other consumers idle for at least `min_idle` (`XAUTOCLAIM … JUSTID`)
    /// without counting a delivery, and returns them with their own delivery counts as they
    /// stand; deleted entries are acknowledged and reported.
    async fn claim_idle(
        &self,
        topic: &Topic,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<Claimed>;

    /// Delivers a pending entry of this consumer again, counting the delivery and resetting
    /// its idle time: before a retry, and before the first attempt on a recovered or claimed
    /// entry. `None` when it is no longer pending for this consumer (acknowledged, or claimed
    /// by another consumer) or no longer exists.
    async fn redeliver(&self, topic: &Topic, id: &str) -> Result<Option<Delivery>>;

    /// Renews this consumer's hold on entries it read and has not settled: resets their idle
    /// time without counting a delivery (`XCLAIM … JUSTID`), but only for entries still pending
    /// for this consumer, in one atomic step. Returns the ids it no longer holds
    /// (acknowledged, claimed by another consumer, or deleted): the loop neither starts nor
    /// acknowledges those.
    async fn renew(&self, topic: &Topic, ids: &[EntryId]) -> Result<Vec<EntryId>>;

    /// Gives entries back without a verdict (at shutdown, or when a handler gives one
    /// back): for each `(id, delivery count)` still pending for this consumer, sets its
    /// delivery count (the deliveries that ended here without a verdict are not counted)
    /// and makes it idle for `idle`, so that another consumer of the group can claim it at
    /// once (`XCLAIM … IDLE … RETRYCOUNT … JUSTID`). Entries not pending for this consumer
    /// are left alone.
    async fn give_back(
        &self,
        topic: &Topic,
        entries: &[(EntryId, u32)],
        idle: Duration,
    ) -> Result<()>;

    /// Acknowledges entries, many ids per topic in one batch.
    async fn ack(&self, acks: &[(Topic, Vec<EntryId>)]) -> Result<()>;

    /// Copies an entry to the group's dead-letter stream with the reason and acknowledges
    /// it, atomically — only while it is pending for this consumer: an entry acknowledged or
    /// reclaimed elsewhere meanwhile is left alone.
    async fn dead_letter(&self, topic: &Topic, id: &str, reason: &DeadLetterReason) -> Result<()>;

    /// Removes consumers of the group idle longer than `idle` that hold no pending entries
    /// (never one with pending entries: that would lose them). Returns their names.
    async fn remove_idle_consumers(&self, topic: &Topic, idle: Duration) -> Result<Vec<String>>;

    /// Leaves the group, after the consumer loop gave back what it held: a backend whose
    /// consumers share partitions hands this one's partitions to the others at once
    /// instead of when its membership expires. The default does nothing.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
