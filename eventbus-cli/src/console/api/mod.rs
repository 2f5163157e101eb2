//! The console's JSON API, one module per page; what they share: the error reply, the
//! console's own description (`/api/info`) and list bounds.

pub(crate) mod dead_letters;
pub(crate) mod events;
pub(crate) mod overview;
pub(crate) mod projections;
pub(crate) mod sagas;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::state::AppState;

/// The most items a list request returns, whatever `limit` it asks for.
pub(crate) const MAX_LIMIT: usize = 1_000;

/// A request's `limit`: `default` when absent, at least 1, at most [`MAX_LIMIT`].
pub(crate) fn limit(asked: Option<usize>, default: usize) -> usize {
    asked.unwrap_or(default).clamp(1, MAX_LIMIT)
}

/// A failed request: its status and `{"error": "…"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A request that makes no sense (400).
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Nothing there (404).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

/// Redis errors name the server with its password redacted (eventbus-redis's rule), so
/// their text can be shown.
impl From<eventbus_core::Error> for ApiError {
    fn from(error: eventbus_core::Error) -> Self {
        ApiError::new(StatusCode::BAD_GATEWAY, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// A handler's result.
pub(crate) type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// `GET /api/info`: what the console looks at and whether it may write.
pub(crate) async fn info(State(state): State<AppState>) -> ApiResult {
    let transport = &state.transport;
    Ok(Json(json!({
        "namespace": transport.keys().namespace(),
        "server": transport.config().redacted_url(),
        "cluster": transport.config().is_cluster(),
        "server_version": transport.server_version(),
        "writes_allowed": state.settings.token.is_some(),
        "saga_prefix": state.settings.saga_prefix,
        "pending_alert_ms": state.settings.pending_alert.as_millis() as u64,
    })))
}

/// Any other path: 404 with a JSON reason.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such page or API route (see /api/openapi.json)")
}
