//! Test harnesses for users' domain code, on the in-memory backend (no Redis needed):
//! given/when/then in the style of cqrs-es's `TestFramework`:
//!
//! - [`CommandTest`]: given events, when a command, then the expected events or rejection;
//! - [`ProjectionTest`]: given events, then the expected read model;
//! - [`AggregateTest`]: given an aggregate's past events, when a command, then the new
//!   events or the rejection;
//! - [`SagaTest`]: given a saga definition and participants' replies, then its state.

mod aggregate;
mod commands;
mod projection;
mod sagas;

pub use aggregate::AggregateTest;
pub use commands::{CommandTest, CommandTestOutcome};
pub use projection::{Projected, ProjectionTest};
pub use sagas::{SagaTest, SagaTestOutcome};
