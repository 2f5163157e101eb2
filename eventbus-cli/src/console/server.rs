//! The console's router: which handler serves which route, and the guard in front of all
//! of them.

use axum::http::Method;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use super::state::AppState;
use super::{api, assets, guard};

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
