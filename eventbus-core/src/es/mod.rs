//! Event sourcing: aggregates rebuilt from their own event streams, optimistic concurrency,
//! snapshots.
//!
//! - An [`Aggregate`] is a state folded from its past events ([`Aggregate::apply`]).
//! - Commands for it ([`AggregateCommand`], naming the instance) are decided by
//!   [`AggregateHandler`]s from the current state.
//! - A [`Repository`] loads an instance (newest snapshot of the current state schema, plus the
//!   events after it, page by page), and appends the decided events with the version it
//!   loaded as the expected one; on [`Error::Conflict`](crate::Error::Conflict) the command
//!   bus reloads and decides again, up to [`Repository::max_retries`] times.
//! - The [`EventStore`] appends and publishes in one atomic step: no event is stored without
//!   being published to its type's stream and the global stream, and none is published without
//!   being stored. [`MemoryEventStore`] here; `eventbus_redis::RedisEventStore` on Redis.
//!
//! ```
//! use std::sync::Arc;
//! use eventbus_core::es::{MemoryEventStore, Repository};
//! use eventbus_core::transport::memory::MemoryTransport;
//! use eventbus_core::{aggregate, command, command_handler, event, CommandBus, EventBus};
//!
//! #[event]
//! pub struct Deposited { pub amount: i64 }
//!
//! #[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
//! pub enum AccountError { #[error("amount must be positive")] NotPositive }
//!
//! #[command(output = Deposited, error = AccountError)]
//! pub struct Deposit { #[aggregate_id] pub account: String, pub amount: i64 }
//!
//! #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
//! pub struct Account { balance: i64 }
//!
//! #[aggregate(name = "Account", snapshot_every = 100)]
//! impl Account {
//!     #[apply]
//!     fn deposited(&mut self, e: Deposited) { self.balance += e.amount; }
//! }
//!
//! #[command_handler(aggregate)]
//! impl Account {
//!     async fn deposit(&self, cmd: Deposit) -> Result<Deposited, AccountError> {
//!         if cmd.amount <= 0 { return Err(AccountError::NotPositive); }
//!         Ok(Deposited { amount: cmd.amount })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = MemoryTransport::new();
//! let accounts = Repository::<Account>::new(Arc::new(MemoryEventStore::new(transport.clone())));
//! let bus = CommandBus::new(EventBus::new(transport, "bank")).aggregate(accounts.clone());
//! bus.dispatch(Deposit { account: "a1".into(), amount: 5 }).await?;
//! bus.dispatch(Deposit { account: "a1".into(), amount: 7 }).await?;
//! let loaded = accounts.load("a1").await?;
//! assert_eq!((loaded.state.balance, loaded.version), (12, 2));
//! # Ok(()) }
//! ```

mod aggregate;
mod memory;
mod repository;
mod store;

pub use aggregate::{Aggregate, AggregateCommand, AggregateHandler, AggregateHandlers, Applier};
pub use memory::MemoryEventStore;
pub use repository::{
    Loaded, Repository, DEFAULT_MAX_RETRIES, DEFAULT_PAGE_SIZE, META_AGGREGATE_ID,
    META_AGGREGATE_TYPE, META_AGGREGATE_VERSION,
};
// Next to the aggregate id it takes precedence over when picking a partition.
pub use crate::envelope::META_PARTITION_KEY;
pub use store::{EventStore, Snapshot, StoredEvent};

#[cfg(test)]
mod tests;
