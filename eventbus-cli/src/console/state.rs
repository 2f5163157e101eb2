//! What the console's handlers share: the Redis handles, the settings it was started with,
//! the address it serves, the samples of earlier polls and the polled pages' last replies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use eventbus_redis::{RedisSagaStore, RedisTransport};

use super::cache::Sampled;
use super::health::Health;

/// What the console was started with.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The token writes must carry; `None`: read-only.
    pub(crate) token: Option<String>,
    /// Prefix of saga state keys.
    pub(crate) saga_prefix: String,
    /// Oldest pending idle time from which a group is highlighted.
    pub(crate) pending_alert: Duration,
}

/// State shared by the handlers (cheap to clone).
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) transport: RedisTransport,
    pub(crate) sagas: RedisSagaStore,
    pub(crate) settings: Settings,
    /// The address served, for the same-origin and host checks.
    pub(crate) addr: SocketAddr,
    health: Mutex<Health>,
    /// The overview's last reply, shared by the tabs polling it.
    pub(crate) overview: Sampled,
    /// The projections page's last reply, shared likewise.
    pub(crate) projections: Sampled,
}

impl AppState {
    pub(crate) fn new(transport: RedisTransport, settings: Settings, addr: SocketAddr) -> Self {
        let sagas = RedisSagaStore::new(&transport).with_state_prefix(settings.saga_prefix.clone());
        AppState(Arc::new(Shared {
            transport,
            sagas,
            settings,
            addr,
            health: Mutex::new(Health::default()),
            overview: Sampled::default(),
            projections: Sampled::default(),
        }))
    }

    /// After a write (the [guard](super::guard) calls it): the polled pages read afresh.
    pub(crate) fn written(&self) {
        self.overview.expire();
        self.projections.expire();
    }

    /// The samples of earlier polls (a poisoned lock is taken over: samples stay valid).
    pub(crate) fn health(&self) -> MutexGuard<'_, Health> {
        self.0
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
