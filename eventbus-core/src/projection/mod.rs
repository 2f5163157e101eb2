//! Projections: read models kept current from events, effectively once.
//!
//! A projection turns each event into [`ReadModelOp`]s (hash fields, list pushes, set
//! members, counters). The runner ([`ProjectionRunner`]) reads the projection's event types
//! as its own consumer group, `{service}-projection-{name}`, and hands each event's writes to
//! a [`ReadModelStore`], which commits them together with the projection's checkpoint and the
//! acknowledgement of the entry in one atomic step (one Lua script on Redis), and only while
//! the entry is still pending for the consumer committing it. The group's pending entries
//! list is the processed marker: an entry is pending until the step that applied it acked
//! it, so a redelivered entry (after a crash, a reclaim or a retry) is either not applied yet
//! or already acknowledged and skipped — it never applies twice. A commit is all or nothing:
//! a write the stored data refuses (a key of another type, an increment of text) fails it
//! with [`Error::ReadModelWrite`](crate::Error::ReadModelWrite) having written nothing.
//!
//! Of the instances running a projection, one is active: it holds the projection's lease in
//! the store and fences its commits with it; the others stand by and take over when it stops
//! or dies (see [`ProjectionRunner`]). So one entity's events are applied in the order a
//! single instance applies them.
//!
//! Declare read models with [`#[projection]`](macro@crate::projection) (which implements
//! [`ReadModel`]) or write one by hand with [`CustomProjection`] or an impl of
//! [`Projection`]:
//!
//! ```
//! use eventbus_core::{event, projection, EventBus, ReadModels};
//! use eventbus_core::projection::{ProjectionRunner, ReadModel};
//! use eventbus_core::transport::memory::MemoryTransport;
//!
//! #[event]
//! pub struct OrderCreated { pub order_id: String, pub customer_id: String, pub total: f64 }
//!
//! #[projection(hash = "orders:summary:{order_id}")]
//! #[derive(Debug, PartialEq)]
//! pub struct OrderSummary {
//!     #[set(from = OrderCreated)] pub order_id: String,
//!     #[set(from = OrderCreated)] pub total: f64,
//!     #[set(OrderCreated = "created")] pub status: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = MemoryTransport::new();
//! let models = ReadModels::new(transport.read_models());
//! let bus = EventBus::new(transport, "order-service");
//! let running = ProjectionRunner::new(&bus, &models, OrderSummary::projection()).start().await?;
//!
//! bus.publish(OrderCreated { order_id: "ord_1".into(), customer_id: "c1".into(), total: 99.5 }).await?;
//! # for _ in 0..500 { if OrderSummary::load(&models, "ord_1").await?.is_some() { break } tokio::time::sleep(std::time::Duration::from_millis(5)).await; }
//! let summary = OrderSummary::load(&models, "ord_1").await?;
//! assert_eq!(summary.map(|s| s.status), Some("created".to_string()));
//! running.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Events of different types come from different streams; a projection applies the events
//! of one stream in stream order, but does not order events across streams. Declare read
//! models whose writes commute across event types, or whose events are far apart in time
//! (an order is created long before it ships).

#[doc(hidden)]
#[path = "support.rs"]
pub mod __support;
mod custom;
pub mod memory;
mod op;
mod read;
mod runner;
mod store;

use std::marker::PhantomData;

use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::HandlerError;

pub use custom::CustomProjection;
pub use op::{field_string, format_f64, ListEnd, ReadModelOp};
pub use read::{FieldValue, ReadModels};
pub use runner::{ProjectionRunner, RunningProjection, DEFAULT_LEASE_TTL};
pub use store::{Commit, CommitTarget, Committed, ReadModelStore, RebuildStep};

/// The consumer group of a projection: `{service}-projection-{name}`, so that `eventbus lag`
/// shows it next to the service's `{service}-consumers` group.
pub fn projection_group(service: &str, name: &str) -> String {
    format!("{service}{PROJECTION_GROUP_INFIX}{name}")
}

/// The projection a consumer group belongs to, if it is a projection's (see
/// [`projection_group`]).
pub fn projection_of_group(group: &str) -> Option<&str> {
    group
        .split_once(PROJECTION_GROUP_INFIX)
        .map(|(_, name)| name)
}

/// What separates the service from the projection's name in its group's name.
const PROJECTION_GROUP_INFIX: &str = "-projection-";

/// A projection: how events change a read model.
///
/// Implemented by [`Declared`] for `#[projection]` types, by [`CustomProjection`], or by
/// hand. [`apply`](Self::apply) must be a pure function of the event: the runner commits its
/// writes atomically with the acknowledgement, so it is called again for an event only if
/// the earlier writes were not committed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a projection",
    note = "declare a read model with `#[eventbus_core::projection]` and run `Type::projection()`, or use `CustomProjection`"
)]
pub trait Projection: Send + Sync + 'static {
    /// The projection's name: part of its consumer group and of its checkpoint keys.
    fn name(&self) -> &str;

    /// The event types it reads (one stream each).
    fn event_types(&self) -> Vec<String>;

    /// The writes one event makes. A permanent error dead-letters the entry; a retryable
    /// one retries it.
    fn apply(&self, event: &Envelope<Value>) -> Result<Vec<ReadModelOp>, HandlerError>;
}

/// A read model declared as a Rust type; what `#[projection]` implements.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a declared read model",
    note = "add `#[eventbus_core::projection(hash = \"…\")]` (or `list`, `set`, `counter`) to the type"
)]
pub trait ReadModel: Send + Sync + Sized + 'static {
    /// The projection's name (default: the type's name).
    const NAME: &'static str;

    /// The event types it reads.
    fn event_types() -> Vec<&'static str>;

    /// The writes one event makes.
    fn apply(event: &Envelope<Value>) -> Result<Vec<ReadModelOp>, HandlerError>;

    /// The projection to run (see [`ProjectionRunner`]).
    fn projection() -> Declared<Self> {
        Declared(PhantomData)
    }
}

/// The [`Projection`] of a declared [`ReadModel`] type; made by [`ReadModel::projection`].
pub struct Declared<M>(PhantomData<fn() -> M>);

impl<M> std::fmt::Debug for Declared<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Declared")
            .field(&std::any::type_name::<M>())
            .finish()
    }
}

impl<M> Clone for Declared<M> {
    fn clone(&self) -> Self {
        Declared(PhantomData)
    }
}

impl<M: ReadModel> Projection for Declared<M> {
    fn name(&self) -> &str {
        M::NAME
    }

    fn event_types(&self) -> Vec<String> {
        M::event_types().into_iter().map(str::to_owned).collect()
    }

    fn apply(&self, event: &Envelope<Value>) -> Result<Vec<ReadModelOp>, HandlerError> {
        M::apply(event)
    }
}
