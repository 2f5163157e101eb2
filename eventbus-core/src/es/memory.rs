//! [`MemoryEventStore`]: the event store on the in-memory transport.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::envelope::{EntryId, Envelope};
use crate::error::{Error, Result};
use crate::es::store::{EventStore, Snapshot, StoredEvent};
use crate::transport::memory::MemoryTransport;
use crate::transport::StreamTransport;

/// An event store in memory, publishing through a [`MemoryTransport`], with the semantics of
/// the Redis one: an explicit version per instance, atomic check-append-publish, typed
/// conflicts, snapshots that keep the newest of a state version.
///
/// Appends are serialized by one lock held across the check, the publish and the append:
/// an append either stores and publishes its events, or does neither.
///
/// ```
/// use eventbus_core::es::{EventStore, MemoryEventStore};
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::Envelope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
/// let store = MemoryEventStore::new(MemoryTransport::new());
/// let opened = Envelope::new("AccountOpened", 1, "bank", serde_json::json!({"owner": "ada"}));
/// store.append("Account", "a1", 0, &[opened.clone()]).await?;
/// assert_eq!(store.version("Account", "a1").await?, 1);
/// let stale = store.append("Account", "a1", 0, &[opened]).await.unwrap_err();
/// assert!(stale.is_conflict());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryEventStore {
    transport: MemoryTransport,
    streams: Mutex<HashMap<(String, String), Instance>>,
}

#[derive(Debug, Default)]
struct Instance {
    version: u64,
    events: Vec<StoredEvent>,
    snapshot: Option<Snapshot>,
}

impl MemoryEventStore {
    /// A store publishing appended events through `transport` (share it with the
    /// `EventBus` whose subscribers should see them).
    pub fn new(transport: MemoryTransport) -> Self {
        MemoryEventStore {
            transport,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// The transport events are published through.
    pub fn transport(&self) -> &MemoryTransport {
        &self.transport
    }
}

fn key(aggregate_type: &str, aggregate_id: &str) -> (String, String) {
    (aggregate_type.to_owned(), aggregate_id.to_owned())
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn version(&self, aggregate_type: &str, aggregate_id: &str) -> Result<u64> {
        let streams = self.streams.lock().await;
        Ok(streams
            .get(&key(aggregate_type, aggregate_id))
            .map_or(0, |i| i.version))
    }

    async fn read(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let streams = self.streams.lock().await;
        Ok(streams
            .get(&key(aggregate_type, aggregate_id))
            .map(|i| {
                i.events
                    .iter()
                    .filter(|e| e.version > after)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected: u64,
        events: &[Envelope<Value>],
    ) -> Result<Vec<EntryId>> {
        let mut streams = self.streams.lock().await;
        let instance = streams
            .entry(key(aggregate_type, aggregate_id))
            .or_default();
        if instance.version != expected {
            return Err(Error::Conflict {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                expected,
                actual: instance.version,
            });
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Publish first, still under the lock: if it fails nothing is stored.
        let ids = self.transport.publish(events).await?;
        for (offset, event) in (1u64..).zip(events) {
            instance.events.push(StoredEvent {
                version: expected + offset,
                event: event.clone(),
            });
        }
        instance.version = expected + events.len() as u64;
        Ok(ids)
    }

    async fn snapshot(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Option<Snapshot>> {
        let streams = self.streams.lock().await;
        Ok(streams
            .get(&key(aggregate_type, aggregate_id))
            .and_then(|i| i.snapshot.clone()))
    }

    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        snapshot: &Snapshot,
    ) -> Result<()> {
        let mut streams = self.streams.lock().await;
        let instance = streams
            .entry(key(aggregate_type, aggregate_id))
            .or_default();
        let keep = instance.snapshot.as_ref().is_some_and(|s| {
            s.state_version == snapshot.state_version && s.version >= snapshot.version
        });
        if !keep {
            instance.snapshot = Some(snapshot.clone());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory event store".to_owned()
    }
}
