//! Wiring an [`App`](eventbus_core::App) to Redis.

use std::sync::Arc;

use eventbus_core::{AppBuilder, ReadModels};

use crate::read_models::RedisReadModels;
use crate::transport::RedisTransport;

/// Adds `.redis(&transport)` to [`AppBuilder`]: events on that Redis, read models in it.
pub trait AppBuilderExt {
    /// Uses `transport` for streams and [`RedisReadModels`] on the same server for read
    /// models (keys exactly as the projections' templates say, like the reference article).
    fn redis(self, transport: &RedisTransport) -> Self;
}

impl AppBuilderExt for AppBuilder {
    fn redis(self, transport: &RedisTransport) -> Self {
        self.backend(
            Arc::new(transport.clone()),
            ReadModels::new(RedisReadModels::new(transport)),
        )
    }
}
