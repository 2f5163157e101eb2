//! # eventbus-core
//!
//! Event-driven microservices on Redis, in Rust: the event envelope, the traits, the runtime
//! and an in-memory backend with the same semantics as the Redis one (`eventbus-redis`).
//!
//! ```
//! use eventbus_core::{event, EventBus, Envelope, HandlerError};
//! use eventbus_core::transport::memory::MemoryTransport;
//!
//! #[event(name = "OrderCreated")]
//! #[derive(Debug, Clone)]
//! pub struct OrderCreated {
//!     pub order_id: String,
//!     pub total: f64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = EventBus::new(MemoryTransport::new(), "order-service");
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let subscription = bus
//!     .subscribe()
//!     .on(move |event: Envelope<OrderCreated>| {
//!         let tx = tx.clone();
//!         async move {
//!             tx.send(event.data.order_id).map_err(HandlerError::from)?;
//!             Ok(())
//!         }
//!     })
//!     .start()
//!     .await?;
//!
//! bus.publish(OrderCreated { order_id: "ord_1".into(), total: 99.5 }).await?;
//! assert_eq!(rx.recv().await.as_deref(), Some("ord_1"));
//! subscription.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Delivery guarantees
//!
//! Streams subscriptions are **at-least-once**: an entry is acknowledged only after every
//! handler succeeded; failures are retried with exponential backoff and, after
//! `max_deliveries`, moved to the group's dead-letter stream with the error; entries a
//! crashed consumer left pending are reclaimed by live consumers of the group.
//!
//! The Pub/Sub bus ([`PubSubBus`]) is **at-most-once**: nothing is stored, a subscriber that
//! is down misses what is published meanwhile, and failed handlers are not retried. Use it
//! for notifications that may be lost; use the Streams bus for anything that must be
//! processed.
//!
//! Sagas ([`saga`]) coordinate a distributed transaction as steps with compensations: every
//! transition is a compare-and-set on the saga's version, a failure or timeout compensates
//! the completed steps in reverse order, and any coordinator instance resumes any saga.
//!
//! The [`Router`] routes events to rules by pattern over event types (`Order.*`,
//! `**.Failed`), content filter and priority, in process, on a Streams subscription (with
//! the Streams guarantees) or on a Pub/Sub subscription.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(rustdoc::broken_intra_doc_links)]

// Lets unit tests use the macros, whose code names `::eventbus_core`.
#[cfg(test)]
extern crate self as eventbus_core;

pub mod app;
pub mod bus;
pub mod cqrs;
pub mod dispatch;
pub mod envelope;
pub mod error;
pub mod es;
pub mod event;
pub mod handler;
mod memory;
mod panic;
pub mod pattern;
pub mod prelude;
pub mod projection;
pub mod pubsub;
pub mod router;
pub mod saga;
pub mod telemetry;
pub mod testing;
pub mod transport;

pub use app::{App, AppBuilder, Backend, Connected, InMemory};
pub use bus::{
    Backoff, Context, EventBus, OrderBy, ShutdownReport, Subscription, SubscriptionBuilder,
    SubscriptionOptions, SubscriptionStats,
};
pub use cqrs::{
    Command, CommandBus, CommandClient, CommandContext, CommandError, CommandHandlers,
    CommandServer, DispatchOptions, Dispatched, Emit, Emitted, NoRejection, Position, Query,
    QueryBus, QueryContext, QueryError, QueryHandlers, Receipt, ReplyStreams, DEFAULT_REPLY_TTL,
};
pub use dispatch::Payload;
pub use envelope::{EntryId, Envelope, Metadata, META_PARTITION_KEY};
pub use error::{BoxError, Error, HandlerError, Result, TransportError, TransportErrorKind};
pub use event::{Event, Upcaster};
pub use eventbus_derive::{
    aggregate, command, command_handler, event, projection, query, query_handler, route,
};
pub use handler::{Bound, FromContext, Handler, MissingState, Resources, State};
pub use pattern::Pattern;
pub use projection::{Projection, ReadModel, ReadModels};
pub use pubsub::{
    PubSubBus, PubSubStats, PubSubSubscription, PubSubSubscriptionBuilder, PubSubTransport,
};
pub use router::{CompiledRule, Dispatch, IntoRule, Router, RouterStats, Rule, RuleFailure};
pub use transport::{StartFrom, StreamAdmin, StreamConsumer, StreamTransport, Topic};

/// Items used by code the macros generate. Not public API: no stability guarantees.
#[doc(hidden)]
pub mod __private {
    pub use crate::projection::__support::*;
    pub use crate::projection::{
        field_string, Declared, FieldValue, ListEnd, ReadModel, ReadModelOp, ReadModels,
    };
    pub use futures_util::future::BoxFuture;
    pub use serde;
    pub use serde_json;
}
