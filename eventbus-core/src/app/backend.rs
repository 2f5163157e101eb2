//! What an app runs on: the transport, read models, event store and saga store of one
//! backend, connected when the app starts.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::es::{EventStore, MemoryEventStore};
use crate::projection::ReadModelStore;
use crate::saga::{MemorySagaStore, SagaStore};
use crate::transport::memory::MemoryTransport;
use crate::transport::StreamTransport;

/// A backend's parts, connected.
#[derive(Clone)]
pub struct Connected {
    /// Streams: publish, consume, admin.
    pub transport: Arc<dyn StreamTransport>,
    /// Where projections write and queries read.
    pub read_models: Arc<dyn ReadModelStore>,
    /// Where event-sourced aggregates live.
    pub event_store: Arc<dyn EventStore>,
    /// Where saga state lives.
    pub saga_store: Arc<dyn SagaStore>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("transport", &self.transport.describe())
            .finish()
    }
}

/// What an [`App`](crate::App) runs on: connected when the app starts. eventbus-redis
/// implements it for a Redis URL or transport (`.redis(...)`); [`InMemory`] is the
/// in-memory backend.
#[async_trait]
pub trait Backend: Send + 'static {
    /// Connects, with read-model keys under `read_model_prefix`.
    async fn connect(self: Box<Self>, read_model_prefix: &str) -> Result<Connected>;
}

/// The in-memory backend: tests and demos, with the Redis backend's semantics.
#[derive(Debug, Clone, Default)]
pub struct InMemory {
    transport: MemoryTransport,
}

impl InMemory {
    /// A fresh in-memory backend.
    pub fn new() -> Self {
        InMemory::default()
    }

    /// On an existing in-memory transport (shared with other apps or buses).
    pub fn on(transport: MemoryTransport) -> Self {
        InMemory { transport }
    }
}

#[async_trait]
impl Backend for InMemory {
    async fn connect(self: Box<Self>, read_model_prefix: &str) -> Result<Connected> {
        let transport = self.transport;
        Ok(Connected {
            read_models: Arc::new(transport.read_models().with_prefix(read_model_prefix)),
            event_store: Arc::new(MemoryEventStore::new(transport.clone())),
            saga_store: Arc::new(MemorySagaStore::new()),
            transport: Arc::new(transport),
        })
    }
}

/// A backend already connected.
#[async_trait]
impl Backend for Connected {
    async fn connect(self: Box<Self>, _read_model_prefix: &str) -> Result<Connected> {
        Ok(*self)
    }
}
