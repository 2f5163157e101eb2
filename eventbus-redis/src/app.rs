//! Running an [`App`](eventbus_core::App) on Redis: `.redis(url or transport)`.

use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::app::{Backend, Connected};
use eventbus_core::AppBuilder;

use crate::config::RedisConfig;
use crate::event_store::RedisEventStore;
use crate::read_models::RedisReadModels;
use crate::sagas::RedisSagaStore;
use crate::transport::RedisTransport;

/// A Redis backend for an app: a URL or configuration to connect to when the app starts,
/// or a transport already connected. Streams, read models (keys exactly as the
/// projections' templates say, like the reference article, unless the app sets a
/// read-model prefix), the event store and saga state all live on that Redis.
#[derive(Debug)]
pub enum RedisBackend {
    /// Connect with this configuration when the app starts.
    Config(Box<RedisConfig>),
    /// Use this connected transport.
    Transport(RedisTransport),
    /// A URL that did not parse: the app's start fails with this error.
    Invalid(crate::Error),
}

impl From<&str> for RedisBackend {
    fn from(url: &str) -> Self {
        match RedisConfig::new(url) {
            Ok(config) => RedisBackend::Config(Box::new(config)),
            Err(e) => RedisBackend::Invalid(e),
        }
    }
}

impl From<String> for RedisBackend {
    fn from(url: String) -> Self {
        RedisBackend::from(url.as_str())
    }
}

impl From<RedisConfig> for RedisBackend {
    fn from(config: RedisConfig) -> Self {
        RedisBackend::Config(Box::new(config))
    }
}

impl From<RedisTransport> for RedisBackend {
    fn from(transport: RedisTransport) -> Self {
        RedisBackend::Transport(transport)
    }
}

impl From<&RedisTransport> for RedisBackend {
    fn from(transport: &RedisTransport) -> Self {
        RedisBackend::Transport(transport.clone())
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn connect(self: Box<Self>, read_model_prefix: &str) -> eventbus_core::Result<Connected> {
        let transport = match *self {
            RedisBackend::Config(config) => RedisTransport::connect(*config).await?,
            RedisBackend::Transport(transport) => transport,
            RedisBackend::Invalid(e) => return Err(e.into()),
        };
        Ok(Connected {
            read_models: Arc::new(RedisReadModels::new(&transport).with_prefix(read_model_prefix)),
            event_store: Arc::new(RedisEventStore::new(&transport)),
            saga_store: Arc::new(RedisSagaStore::new(&transport)),
            transport: Arc::new(transport),
        })
    }
}

/// Adds `.redis(...)` to [`AppBuilder`] (in [`prelude`](crate::prelude)).
pub trait AppBuilderExt {
    /// Runs the app on Redis: a URL (`"redis://127.0.0.1:6379"`), a [`RedisConfig`]
    /// (`RedisConfig::from_env()?`) or a connected [`RedisTransport`].
    fn redis(self, backend: impl Into<RedisBackend>) -> Self;
}

impl AppBuilderExt for AppBuilder {
    fn redis(self, backend: impl Into<RedisBackend>) -> Self {
        self.backend(backend.into())
    }
}
