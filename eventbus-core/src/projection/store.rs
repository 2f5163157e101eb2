//! [`ReadModelStore`]: the seam between the projection runner and where read models live.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;

use crate::envelope::EntryId;
use crate::error::Result;
use crate::projection::ReadModelOp;
use crate::transport::{ConsumerSpec, StreamConsumer, Topic};

/// Which keys a commit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitTarget {
    /// The read model readers see.
    Live,
    /// The shadow copy a rebuild fills, swapped in by
    /// [`ReadModelStore::finish_rebuild`].
    Rebuild,
}

/// One event's writes, to commit atomically with the entry's acknowledgement.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The projection's name (its checkpoint and key registry are named after it).
    pub projection: String,
    /// The consumer group that read the entry.
    pub group: String,
    /// The consumer holding the entry.
    pub consumer: String,
    /// The stream it came from.
    pub topic: Topic,
    /// Its id there.
    pub entry_id: EntryId,
    /// The writes (possibly none: the entry is still acknowledged and checkpointed).
    pub ops: Vec<ReadModelOp>,
    /// Live keys, or a rebuild's shadow keys.
    pub target: CommitTarget,
    /// The token of the projection's lease (see [`ReadModelStore::lease`]) the committing
    /// instance holds: the commit writes nothing unless the lease is held with it. `None`
    /// commits without that check (rebuilds, tools).
    pub lease: Option<String>,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The writes, the checkpoint and the acknowledgement were committed.
    Applied,
    /// Nothing was written: the entry is no longer pending for this consumer — acknowledged
    /// already (applied earlier), or reclaimed by another consumer, which will apply it.
    NotPending,
    /// The entry is older than what a rebuild already put in the read model: acknowledged
    /// without writing.
    Superseded,
    /// Nothing was written: the projection's lease is not held with the commit's token (it
    /// lapsed and another instance may have taken over). The committing instance must stop.
    LeaseLost,
}

/// Whether [`ReadModelStore::finish_rebuild`] switched readers over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildStep {
    /// The rebuilt keys replaced the live ones, in one atomic step.
    Swapped,
    /// Not yet: the rebuild has entries pending, or the live projection applied entries the
    /// rebuild has not reached. Try again once it caught up.
    Behind,
}

/// Where read models live: commits writes atomically with acknowledgements, and reads them.
///
/// Implemented in memory by [`memory::MemoryReadModels`](crate::projection::memory) and on
/// Redis by `eventbus_redis::RedisReadModels`. A store belongs to one transport: it
/// acknowledges entries of that transport's streams.
///
/// Keys passed to reads and found in [`ReadModelOp`]s are the read model's own keys; a store
/// may put a configured prefix in front of them.
#[async_trait]
pub trait ReadModelStore: Send + Sync + 'static {
    /// In one atomic step, and only if the entry is pending for `commit.consumer` in
    /// `commit.group` (and the lease, if given, is held with `commit.lease`): applies the
    /// writes, advances the projection's checkpoint for the topic, records the keys written,
    /// and acknowledges the entry.
    ///
    /// All or nothing: a write the stored data refuses (a key of another type, an increment
    /// of a field that is not an integer) fails the commit with
    /// [`Error::ReadModelWrite`](crate::Error::ReadModelWrite) and changes nothing, the
    /// entry staying pending.
    async fn commit(&self, commit: Commit) -> Result<Committed>;

    /// Takes the lease of `projection` for `token`, or renews it if `token` holds it already,
    /// for `ttl`. Returns `false` while another token holds it. The lease makes one instance
    /// of a projection's group the active one; commits carrying the token are fenced by it.
    async fn lease(&self, projection: &str, token: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease of `projection` up, if `token` still holds it.
    async fn release_lease(&self, projection: &str, token: &str) -> Result<()>;

    /// Fences `consumer` (of `spec`) by the lease of `projection` held with `token`: the
    /// returned consumer takes entries from the group (new ones, or idle ones of other
    /// consumers) only in the same atomic step that checks the lease, so an instance whose
    /// lease lapsed — paused, cut off — takes nothing its successor should apply. Reads find
    /// nothing once the lease is lost. The default returns `consumer` unfenced (a store whose
    /// instances can't outlive their lease unnoticed, such as one in process memory).
    async fn fence(
        &self,
        consumer: Box<dyn StreamConsumer>,
        spec: &ConsumerSpec,
        projection: &str,
        token: &str,
    ) -> Result<Box<dyn StreamConsumer>> {
        let _ = (spec, projection, token);
        Ok(consumer)
    }

    /// Moves every entry pending in `group` on `topics` to `consumer` (without counting a
    /// delivery), so that the new lease holder applies what earlier holders left unfinished
    /// before anything newer. Returns how many entries moved.
    async fn adopt_pending(&self, group: &str, consumer: &str, topics: &[Topic]) -> Result<u64>;

    /// Every field of a hash; `None` when the key doesn't exist.
    async fn hash(&self, key: &str) -> Result<Option<BTreeMap<String, String>>>;

    /// Elements `start..=stop` of a list (`LRANGE` indexes: negative counts from the end).
    async fn list(&self, key: &str, start: i64, stop: i64) -> Result<Vec<String>>;

    /// Members of a set.
    async fn members(&self, key: &str) -> Result<BTreeSet<String>>;

    /// A counter's value; `None` when the key doesn't exist.
    async fn counter(&self, key: &str) -> Result<Option<i64>>;

    /// Prepares a rebuild of `projection`: drops shadow keys and state of an earlier,
    /// unfinished rebuild, and the rebuild's consumer group on every topic.
    async fn begin_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> Result<()>;

    /// In one atomic step, if the rebuild group has nothing pending and the live projection
    /// applied nothing the rebuild hasn't: replaces the live keys with the rebuilt ones
    /// (deleting live keys the rebuild didn't write), records what the rebuild covered so the
    /// live projection skips those entries, and drops the rebuild group.
    async fn finish_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> Result<RebuildStep>;

    /// Takes an operator's request to rebuild `projection` (made with a tool such as
    /// `eventbus console`), if there is one: `true` once per request. The active instance of
    /// a running projection asks every third of its lease time and then
    /// [rebuilds](crate::projection::ProjectionRunner::rebuild). The default: no requests.
    async fn take_rebuild_request(&self, projection: &str) -> Result<bool> {
        let _ = projection;
        Ok(false)
    }

    /// A short description of the store (no password).
    fn describe(&self) -> String;
}
