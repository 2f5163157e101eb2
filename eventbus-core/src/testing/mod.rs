//! Test harnesses for users' domain code, on the in-memory backend (no Redis needed):
//! given/when/then for command handlers, in the style of cqrs-es's `TestFramework`.

mod commands;

pub use commands::{CommandTest, CommandTestOutcome};
