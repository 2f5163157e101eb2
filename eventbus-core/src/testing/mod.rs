//! Test harnesses for users' domain code, running on the in-memory backend without Redis.
//!
//! - [`ProjectionTest`]: given events, then the expected read model.

mod projection;

pub use projection::{Projected, ProjectionTest};
