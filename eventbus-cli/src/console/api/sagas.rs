//! Sagas: counts by state, a list by state or a search by id, and one saga with its data,
//! current step and history.

use axum::extract::{Path, Query, State};
use axum::Json;
use eventbus_core::saga::{SagaState, SagaStatus, SagaStore};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{limit, ApiError, ApiResult};
use crate::console::state::AppState;
use crate::saga::{step_name, summary};

/// The filters of the list.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    /// Only this state (`started`, `pending`, `completed`, `compensating`, `failed`).
    state: Option<String>,
    /// Only sagas whose id starts with this (an exact id is loaded directly).
    id: Option<String>,
    /// At most this many of each state.
    limit: Option<usize>,
}

/// `GET /api/sagas`: how many sagas are in each state, and the newest ones by state, or
/// the one with an id.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult {
    let store = &state.sagas;
    let mut counts = Map::new();
    for status in SagaStatus::ALL {
        counts.insert(status.as_str().into(), json!(store.count(status).await?));
    }
    let statuses = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => SagaStatus::ALL.to_vec(),
        Some(name) => vec![status(name)?],
    };
    let limit = limit(query.limit, 100);
    let mut sagas: Vec<SagaState> = Vec::new();
    match query.id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => {
            if let Some(saga) = store.load(id).await? {
                sagas.push(saga);
            } else {
                // A prefix: among the listed ones.
                for status in &statuses {
                    let listed = store.list(*status, limit).await?;
                    sagas.extend(listed.into_iter().filter(|s| s.saga_id.starts_with(id)));
                }
            }
            sagas.retain(|s| statuses.contains(&s.state));
        }
        None => {
            for status in &statuses {
                sagas.extend(store.list(*status, limit).await?);
            }
        }
    }
    sagas.sort_by(|a, b| b.started_at.total_cmp(&a.started_at));
    let rows: Vec<Value> = sagas.iter().map(row).collect();
    Ok(Json(json!({ "counts": counts, "sagas": rows })))
}

fn status(name: &str) -> Result<SagaStatus, ApiError> {
    SagaStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| ApiError::bad_request(format!("no saga state `{name}`")))
}

/// [`summary`] plus the current step's name.
fn row(s: &SagaState) -> Value {
    let mut row = summary(s);
    if let Value::Object(map) = &mut row {
        map.insert("step".into(), json!(step_name(s)));
    }
    row
}

/// `GET /api/sagas/{id}`: the saga as stored, with the current step's name.
pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let saga = state
        .sagas
        .load(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no saga `{id}`")))?;
    let mut value =
        serde_json::to_value(&saga).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.insert("step".into(), json!(step_name(&saga)));
        // What the coordinator would re-publish is internal: not shown.
        map.remove("outbox");
    }
    Ok(Json(value))
}
