//! Shared resources handed to command and query handlers (like axum's `State`).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A type map of shared resources (read-model handles, clients, configuration) that handlers
/// reach by type.
#[derive(Clone, Default)]
pub struct Resources {
    map: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("count", &self.map.len())
            .finish()
    }
}

impl Resources {
    /// Adds a resource (replacing one of the same type).
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        Arc::make_mut(&mut self.map).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The resource of type `T`, if registered.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_type() {
        let mut r = Resources::default();
        r.insert(5u32);
        r.insert(String::from("x"));
        assert_eq!(r.get::<u32>(), Some(&5));
        assert_eq!(r.get::<String>().map(String::as_str), Some("x"));
        assert_eq!(r.get::<u64>(), None);
    }
}
