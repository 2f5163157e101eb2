//! Test harnesses for users' domain code, on the in-memory backend (no Redis needed):
//! given/when/then for command handlers, in the style of cqrs-es's `TestFramework`, and for
//! sagas.

mod commands;
mod sagas;

pub use commands::{CommandTest, CommandTestOutcome};
pub use sagas::{SagaTest, SagaTestOutcome};
