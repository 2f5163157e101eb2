//! [`CustomProjection`]: the escape hatch for what `#[projection]` can't say.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::event::Event;
use crate::projection::{Projection, ReadModelOp};

type ApplyFn =
    Arc<dyn Fn(&Envelope<Value>) -> Result<Vec<ReadModelOp>, HandlerError> + Send + Sync>;

/// A projection made of functions that return writes, one per event type.
///
/// ```
/// use eventbus_core::{event, Envelope};
/// use eventbus_core::projection::{CustomProjection, ReadModelOp};
///
/// #[event]
/// pub struct OrderCreated { pub order_id: String, pub total: f64 }
///
/// let big_orders = CustomProjection::new("BigOrders").on(|e: &Envelope<OrderCreated>| {
///     Ok(if e.data.total >= 1000.0 {
///         vec![ReadModelOp::SetAdd { key: "orders:big".into(), members: vec![e.data.order_id.clone()] }]
///     } else {
///         vec![]
///     })
/// });
/// # let _ = big_orders;
/// ```
#[derive(Clone)]
pub struct CustomProjection {
    name: String,
    handlers: BTreeMap<String, ApplyFn>,
}

impl fmt::Debug for CustomProjection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomProjection")
            .field("name", &self.name)
            .field("event_types", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CustomProjection {
    /// An empty projection named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        CustomProjection {
            name: name.into(),
            handlers: BTreeMap::new(),
        }
    }

    /// Applies events of type `E` with `f`. An event that doesn't decode as `E` is a
    /// permanent failure (dead-lettered). A second function for one type replaces the first.
    pub fn on<E, F>(mut self, f: F) -> Self
    where
        E: Event,
        F: Fn(&Envelope<E>) -> Result<Vec<ReadModelOp>, HandlerError> + Send + Sync + 'static,
    {
        let apply: ApplyFn = Arc::new(move |raw: &Envelope<Value>| {
            let event = raw
                .decode::<E>()
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
            f(&event)
        });
        self.handlers.insert(E::EVENT_TYPE.to_owned(), apply);
        self
    }

    /// Applies events of a type known by name only, as JSON.
    pub fn on_raw<F>(mut self, event_type: impl Into<String>, f: F) -> Self
    where
        F: Fn(&Envelope<Value>) -> Result<Vec<ReadModelOp>, HandlerError> + Send + Sync + 'static,
    {
        self.handlers.insert(event_type.into(), Arc::new(f));
        self
    }
}

impl Projection for CustomProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    fn apply(&self, event: &Envelope<Value>) -> Result<Vec<ReadModelOp>, HandlerError> {
        match self.handlers.get(&event.event_type) {
            Some(f) => f(event),
            None => Ok(Vec::new()),
        }
    }
}
