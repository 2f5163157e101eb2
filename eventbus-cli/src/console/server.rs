//! The console's router and shared state: which handler serves which route, and the guard
//! in front of all of them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::Method;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use eventbus_redis::{RedisSagaStore, RedisTransport};

use super::health::Health;
use super::{api, assets, guard};

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
        }))
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

/// The API's routes: method, path (in OpenAPI's `{param}` syntax, which axum shares) and
/// handler. The OpenAPI document must list exactly these (tested).
pub(crate) fn api_routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    use api::{dead_letters, events, overview, projections, sagas};
    vec![
        (Method::GET, "/api/info", get(api::info)),
        (Method::GET, "/api/overview", get(overview::overview)),
        (Method::GET, "/api/dead-letters", get(dead_letters::groups)),
        (
            Method::GET,
            "/api/dead-letters/{group}",
            get(dead_letters::list),
        ),
        (
            Method::POST,
            "/api/dead-letters/{group}/replay",
            post(dead_letters::replay),
        ),
        (
            Method::POST,
            "/api/dead-letters/{group}/purge",
            post(dead_letters::purge),
        ),
        (Method::GET, "/api/sagas", get(sagas::list)),
        (Method::GET, "/api/sagas/{id}", get(sagas::show)),
        (Method::GET, "/api/projections", get(projections::list)),
        (
            Method::POST,
            "/api/projections/{name}/rebuild",
            post(projections::rebuild),
        ),
        (Method::GET, "/api/streams", get(events::streams)),
        (Method::GET, "/api/events/tail", get(events::tail)),
        (Method::GET, "/api/events/find", get(events::find)),
    ]
}

/// Every route the console serves: the page, its assets, the OpenAPI document and the API,
/// all behind the [guard](guard::check).
pub(crate) fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .route("/api/openapi.json", get(assets::openapi));
    for (_, path, handler) in api_routes() {
        router = router.route(path, handler);
    }
    router
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .with_state(state)
}
