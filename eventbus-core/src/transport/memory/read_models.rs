//! The read models that share a [`MemoryTransport`]'s server.

use crate::projection::memory::MemoryReadModels;

use super::MemoryTransport;

impl MemoryTransport {
    /// A read-model store sharing this transport's streams and groups (the store
    /// acknowledges entries atomically with its writes). Every call returns a handle on the
    /// same read models.
    pub fn read_models(&self) -> MemoryReadModels {
        MemoryReadModels::new(self.shared.clone())
    }
}
