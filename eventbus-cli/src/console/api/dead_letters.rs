//! Dead letters: the groups that have some, a group's (filtered by type or error text), and
//! the writes — replay or purge one, a selection, or all of a group's.

use axum::extract::{Path, Query, State};
use axum::Json;
use eventbus_core::transport::{DeadLetter, StreamAdmin};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{limit, ApiError, ApiResult};
use crate::console::state::AppState;
use crate::dlq::{dead_letter_json, payload};

/// `GET /api/dead-letters`: every group with dead letters, and how many.
pub(crate) async fn groups(State(state): State<AppState>) -> ApiResult {
    let counts = state.transport.dead_letter_counts().await?;
    let groups: Vec<Value> = counts
        .iter()
        .map(|(group, count)| json!({ "group": group, "count": count }))
        .collect();
    Ok(Json(json!({ "groups": groups })))
}

/// The filters of a group's list.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    /// Only letters whose event type contains this (case-insensitive).
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only letters whose error contains this (case-insensitive).
    error: Option<String>,
    /// At most this many, oldest first (read before filtering).
    limit: Option<usize>,
}

/// `GET /api/dead-letters/{group}`: the group's oldest `limit` dead letters, filtered.
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(group): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult {
    let total = state
        .transport
        .dead_letter_counts()
        .await?
        .get(&group)
        .copied()
        .unwrap_or(0);
    let limit = limit(query.limit, 200);
    let letters = state.transport.dead_letters(&group, limit).await?;
    let read = letters.len();
    let wanted = |d: &DeadLetter| {
        contains(event_type(d), query.event_type.as_deref())
            && contains(&d.reason.error, query.error.as_deref())
    };
    let shown: Vec<Value> = letters
        .iter()
        .filter(|d| wanted(d))
        .map(letter_json)
        .collect();
    Ok(Json(json!({
        "group": group,
        "total": total,
        "read": read,
        "more": (read as u64) < total,
        "letters": shown,
    })))
}

fn event_type(d: &DeadLetter) -> &str {
    d.event.as_ref().map_or("", |e| e.event_type.as_str())
}

fn contains(text: &str, needle: Option<&str>) -> bool {
    needle.is_none_or(|n| text.to_lowercase().contains(&n.trim().to_lowercase()))
}

/// [`dead_letter_json`] plus what the page shows without digging: type and payload.
fn letter_json(d: &DeadLetter) -> Value {
    let mut row = dead_letter_json(d);
    if let Value::Object(map) = &mut row {
        map.insert("event_type".into(), json!(event_type(d)));
        map.insert("payload".into(), payload(d));
    }
    row
}

/// The body of a write: the ids to act on, or all of the group's.
#[derive(Deserialize)]
pub(crate) struct Selection {
    /// The dead letters' ids; absent or `null`: all of the group's.
    ids: Option<Vec<String>>,
}

impl Selection {
    fn ids(&self) -> Result<Option<&[String]>, ApiError> {
        match self.ids.as_deref() {
            Some([]) => Err(ApiError::bad_request(
                "`ids` is empty: name dead letters, or leave `ids` out for all",
            )),
            ids => Ok(ids),
        }
    }
}

/// `POST /api/dead-letters/{group}/replay`: re-publishes the selection to their origin
/// streams, byte for byte, and removes them.
pub(crate) async fn replay(
    state: State<AppState>,
    group: Path<String>,
    selection: Json<Selection>,
) -> ApiResult {
    write(Write::Replay, state, group, selection).await
}

/// `POST /api/dead-letters/{group}/purge`: deletes the selection.
pub(crate) async fn purge(
    state: State<AppState>,
    group: Path<String>,
    selection: Json<Selection>,
) -> ApiResult {
    write(Write::Purge, state, group, selection).await
}

/// What a write does.
#[derive(Clone, Copy)]
enum Write {
    Replay,
    Purge,
}

async fn write(
    what: Write,
    State(state): State<AppState>,
    Path(group): Path<String>,
    Json(selection): Json<Selection>,
) -> ApiResult {
    let (ids, transport) = (selection.ids()?, &state.transport);
    let (verb, n) = match what {
        Write::Replay => (
            "replayed",
            transport.replay_dead_letters(&group, ids).await?,
        ),
        Write::Purge => ("purged", transport.purge_dead_letters(&group, ids).await?),
    };
    Ok(Json(json!({ "group": group, verb: n })))
}
