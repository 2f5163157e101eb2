//! [`EventStore`]: the seam between aggregates and a backend that stores their streams.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{EntryId, Envelope};
use crate::error::Result;

/// One event of an aggregate's stream, with its position in it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The aggregate version this event produced (1 for the first event).
    pub version: u64,
    /// The event as stored (not upcast: decoding upcasts).
    pub event: Envelope<Value>,
}

/// A snapshot of an aggregate's state at a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate version the state includes (events after it are applied on load).
    pub version: u64,
    /// The schema version of `state` ([`Aggregate::STATE_VERSION`](crate::es::Aggregate)).
    pub state_version: u32,
    /// The serialized state.
    pub state: Value,
    /// When it was taken, in seconds since the Unix epoch.
    pub taken_at: f64,
}

/// Stores aggregates' event streams with optimistic concurrency, and their snapshots.
///
/// Every aggregate instance (`aggregate_type`, `aggregate_id`) has its own stream and an
/// explicitly stored version (never derived from the stream's length).
///
/// The contract every implementation keeps:
/// - [`append`](Self::append) is atomic: it checks that the stored version equals
///   `expected`, appends the events as versions `expected + 1 ..`, bumps the version, and
///   publishes each event to its type's stream and to the global stream — all or nothing.
///   No event is stored without being published, and none published without being stored.
/// - A version mismatch writes nothing and fails with
///   [`Error::Conflict`](crate::Error::Conflict).
///
/// Implementations: [`MemoryEventStore`](crate::es::MemoryEventStore) (on the in-memory
/// transport) and `eventbus_redis::RedisEventStore` (one Lua script).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// The instance's current version: 0 when it has no events.
    async fn version(&self, aggregate_type: &str, aggregate_id: &str) -> Result<u64>;

    /// Up to `limit` events with versions above `after`, in order. Loading a long stream
    /// calls it page by page.
    async fn read(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>>;

    /// Appends `events` if the stream is at version `expected`, and publishes them, in one
    /// atomic step. Returns each event's entry id in its type's stream.
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected: u64,
        events: &[Envelope<Value>],
    ) -> Result<Vec<EntryId>>;

    /// The instance's latest snapshot, if any (of whatever state version).
    async fn snapshot(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Option<Snapshot>>;

    /// Stores a snapshot, unless the stored one is of the same state version and newer
    /// (concurrent writers may snapshot out of order).
    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        snapshot: &Snapshot,
    ) -> Result<()>;

    /// A short human-readable name of the backend.
    fn describe(&self) -> String;
}
