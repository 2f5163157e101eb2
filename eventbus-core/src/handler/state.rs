//! Extractors: what a handler takes besides its message, resolved once when it is bound.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::panic::Location;
use std::sync::Arc;

/// A type map of shared resources (read-model handles, clients, configuration) that
/// handlers reach by type, as [`State<T>`].
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
        self.insert_arc(Arc::new(value));
    }

    /// Adds a shared resource (replacing one of the same type).
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        Arc::make_mut(&mut self.map).insert(TypeId::of::<T>(), value);
    }

    /// The resource of type `T`, if registered.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }

    /// The resource of type `T`, shared, if registered.
    pub fn get_arc<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }
}

/// A shared resource, registered once (`.state(value)` on the app, the subscription or the
/// bus) and handed to every handler that takes it: like axum's `State`.
///
/// It derefs to `T`; [`arc`](Self::arc) gives the shared `Arc<T>`.
#[derive(Debug)]
pub struct State<T>(Arc<T>);

impl<T> State<T> {
    /// The shared resource.
    pub fn arc(&self) -> &Arc<T> {
        &self.0
    }

    /// The shared resource, owned.
    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        State(self.0.clone())
    }
}

impl<T> std::ops::Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A handler takes a [`State<T>`] whose `T` was never registered: a wiring mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a handler takes `State<{type_name}>`, but no `{type_name}` was registered: add `.state(...)` with one")]
pub struct MissingState {
    /// The resource's type.
    pub type_name: &'static str,
}

impl MissingState {
    /// The error, naming where the handler was registered.
    pub(crate) fn at(&self, at: &Location<'_>) -> String {
        format!("{self} (the handler registered at {at})")
    }
}

/// What a handler can take besides its message, in context `Ctx`.
///
/// [`prepare`](FromContext::prepare) runs once, when the handler is bound (a missing
/// resource is found then); [`extract`](FromContext::extract) runs per call and cannot fail.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument here",
    note = "after its first argument, a handler takes extractors by value: `Context` (events), `CommandContext` (commands), `QueryContext` (queries) or `State<T>`"
)]
pub trait FromContext<Ctx>: Sized + Send + 'static {
    /// What `prepare` resolved.
    type Prepared: Send + Sync + 'static;

    /// Resolves what the extractor needs from the registered resources.
    fn prepare(resources: &Resources) -> Result<Self::Prepared, MissingState>;

    /// The extractor's value for one call.
    fn extract(prepared: &Self::Prepared, ctx: &Ctx) -> Self;
}

impl<Ctx, T: Send + Sync + 'static> FromContext<Ctx> for State<T> {
    type Prepared = Arc<T>;

    fn prepare(resources: &Resources) -> Result<Arc<T>, MissingState> {
        resources.get_arc::<T>().ok_or(MissingState {
            type_name: std::any::type_name::<T>(),
        })
    }

    fn extract(prepared: &Arc<T>, _ctx: &Ctx) -> Self {
        State(prepared.clone())
    }
}

/// Implements [`FromContext`] for a context type that handlers take as it is.
macro_rules! context_extractor {
    ($ty:ty) => {
        impl $crate::handler::FromContext<$ty> for $ty {
            type Prepared = ();

            fn prepare(
                _resources: &$crate::handler::Resources,
            ) -> ::std::result::Result<(), $crate::handler::MissingState> {
                Ok(())
            }

            fn extract(_prepared: &(), ctx: &$ty) -> Self {
                ctx.clone()
            }
        }
    };
}
pub(crate) use context_extractor;

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
        assert_eq!(r.get_arc::<u32>().as_deref(), Some(&5));
    }

    #[test]
    fn a_missing_state_names_its_type() {
        let err = <State<u64> as FromContext<()>>::prepare(&Resources::default()).unwrap_err();
        assert!(err.to_string().contains("State<u64>"), "{err}");
    }
}
