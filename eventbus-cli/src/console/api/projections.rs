//! `GET /api/projections`: each projection's position against its streams' heads (its
//! group's lag per stream), its lease holder, and how its rebuild stands. One reply is
//! shared by the requests of about a second ([`Sampled`](crate::console::cache::Sampled)).
//!
//! Projections are found by their consumer groups (`{service}-projection-{name}`; a
//! rebuild's is `…-rebuild`), so a projection shows once its group exists.
//!
//! `POST /api/projections/{name}/rebuild` asks the projection's active instance to rebuild
//! it (the console can't: it lacks the projection's code); the instance takes the request
//! within a third of its lease time.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use eventbus_core::projection::projection_of_group;
use eventbus_core::transport::{GroupLag, StreamAdmin};
use eventbus_redis::inspect::ProjectionKeys;
use serde_json::{json, Value};

use super::{ApiError, ApiResult};
use crate::console::state::AppState;
use crate::lag::lag_json;

/// The suffix of a rebuild's group.
const REBUILD: &str = "-rebuild";

/// A projection's groups' rows: the live ones and a running rebuild's.
#[derive(Default)]
struct Rows<'a> {
    live: Vec<&'a GroupLag>,
    rebuild: Vec<&'a GroupLag>,
}

pub(crate) async fn list(State(state): State<AppState>) -> ApiResult {
    Ok(Json(state.projections.get(|| read(&state)).await?))
}

/// The projections, read from Redis.
async fn read(state: &AppState) -> Result<Value, ApiError> {
    let transport = &state.transport;
    let lags = transport.lag(None).await?;
    let heads = transport.stream_infos().await?;
    let mut projections: BTreeMap<&str, Rows> = BTreeMap::new();
    for row in &lags {
        let Some(name) = projection_of_group(&row.group) else {
            continue;
        };
        match name.strip_suffix(REBUILD) {
            Some(base) => projections.entry(base).or_default().rebuild.push(row),
            None => projections.entry(name).or_default().live.push(row),
        }
    }
    let mut out = Vec::with_capacity(projections.len());
    for (name, rows) in projections {
        let keys = transport.projection_keys(name).await?;
        let position = |l: &GroupLag| {
            let head = heads
                .iter()
                .find(|h| h.topic == l.topic && h.partition == l.partition);
            let mut row = lag_json(l);
            if let Value::Object(map) = &mut row {
                map.remove("consumers");
                map.remove("oldest_pending_idle_ms");
                map.insert("head".into(), json!(head.map(|h| h.last_id.clone())));
                map.insert("length".into(), json!(head.map(|h| h.length)));
            }
            row
        };
        out.push(json!({
            "name": name,
            "groups": rows.live.iter().map(|l| l.group.clone()).collect::<std::collections::BTreeSet<_>>(),
            "lease_holder": keys.lease_holder,
            "checkpoint": keys.checkpoint,
            "positions": rows.live.iter().map(|l| position(l)).collect::<Vec<_>>(),
            "rebuild": rebuild_json(&rows, &keys, position),
        }));
    }
    Ok(json!({ "projections": out }))
}

/// `POST /api/projections/{name}/rebuild`: asks for a rebuild.
pub(crate) async fn rebuild(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    state.transport.request_rebuild(&name).await?;
    Ok(Json(json!({ "name": name, "requested": true })))
}

/// How a projection's rebuild stands (and whether one was asked for and not taken yet):
/// `running` (its group exists: lag and pending per stream), `unfinished` (a rebuild checkpoint without a group: a rebuild stopped before
/// switching over), `done` (what the last one covered), or `never`.
fn rebuild_json(
    rows: &Rows,
    keys: &ProjectionKeys,
    position: impl Fn(&GroupLag) -> Value,
) -> Value {
    let status = if !rows.rebuild.is_empty() {
        "running"
    } else if !keys.rebuild_checkpoint.is_empty() {
        "unfinished"
    } else if !keys.rebuilt.is_empty() {
        "done"
    } else {
        "never"
    };
    let remaining: Option<u64> = rows.rebuild.iter().map(|l| l.lag).sum();
    json!({
        "status": status,
        "requested_at": keys.rebuild_requested_at,
        "remaining": (!rows.rebuild.is_empty()).then_some(remaining).flatten(),
        "positions": rows.rebuild.iter().map(|l| position(l)).collect::<Vec<_>>(),
        "covered": keys.rebuilt,
    })
}
