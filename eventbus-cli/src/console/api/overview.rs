//! `GET /api/overview`: every stream of the namespace (each partition on its own) with its
//! length, rate and groups; each group with its lag, pending entries, oldest pending age,
//! consumers, dead letters, and the problems that get it highlighted. One reply is shared by
//! the requests of about a second ([`Sampled`](crate::console::cache::Sampled)).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use eventbus_core::transport::{GroupLag, StreamAdmin};
use eventbus_redis::inspect::StreamInfo;
use serde_json::{json, Value};

use super::events::stream_ref;
use super::{ApiError, ApiResult};
use crate::console::health::Health;
use crate::console::state::AppState;
use crate::format::{count, duration};
use crate::lag::lag_json;

pub(crate) async fn overview(State(state): State<AppState>) -> ApiResult {
    Ok(Json(state.overview.get(|| read(&state)).await?))
}

/// A new overview, read from Redis.
async fn read(state: &AppState) -> Result<Value, ApiError> {
    let transport = &state.transport;
    let streams = transport.stream_infos().await?;
    let lags = transport.lag(None).await?;
    let dead = transport.dead_letter_counts().await?;
    let now = Instant::now();
    let mut health = state.health();
    let rows: Vec<Value> = streams
        .iter()
        .map(|s| {
            let groups = lags
                .iter()
                .filter(|l| l.topic == s.topic && l.partition == s.partition)
                .map(|l| group_json(l, s, &dead, state.settings.pending_alert, &mut health, now))
                .collect::<Vec<_>>();
            stream_json(s, groups, &mut health, now)
        })
        .collect();
    let problems = rows
        .iter()
        .flat_map(|s| s["groups"].as_array().into_iter().flatten())
        .filter(|g| g["problems"].as_array().is_some_and(|p| !p.is_empty()))
        .count();
    Ok(json!({
        "namespace": transport.keys().namespace(),
        "streams": rows,
        "problem_groups": problems,
        "dead_letters": dead,
    }))
}

/// [`stream_ref`] plus the stream's rate and groups.
fn stream_json(s: &StreamInfo, groups: Vec<Value>, health: &mut Health, now: Instant) -> Value {
    let mut row = stream_ref(s);
    if let Value::Object(map) = &mut row {
        let rate = s
            .entries_added
            .and_then(|added| health.rate(&s.key, added, now));
        map.insert("entries_added".into(), json!(s.entries_added));
        map.insert("rate_per_s".into(), json!(rate));
        map.insert("groups".into(), json!(groups));
    }
    row
}

/// A group on one stream: [`lag_json`] plus its dead letters, whether its lag grows, and
/// why it is highlighted.
fn group_json(
    l: &GroupLag,
    s: &StreamInfo,
    dead: &BTreeMap<String, u64>,
    pending_alert: Duration,
    health: &mut Health,
    now: Instant,
) -> Value {
    let dead_letters = dead.get(&l.group).copied().unwrap_or(0);
    let growing = l
        .lag
        .is_some_and(|lag| health.lag_growing(&s.key, &l.group, lag, now));
    let mut problems = Vec::new();
    if growing {
        problems.push("lag growing".to_owned());
    }
    if let Some(idle) = l.oldest_pending_idle.filter(|idle| *idle >= pending_alert) {
        problems.push(format!("oldest pending idle {}", duration(idle)));
    }
    if dead_letters > 0 {
        problems.push(count(dead_letters, "dead letter", "dead letters"));
    }
    let mut row = lag_json(l);
    if let Value::Object(map) = &mut row {
        map.insert("lag_growing".into(), json!(growing));
        map.insert("dead_letters".into(), json!(dead_letters));
        map.insert("problems".into(), json!(problems));
    }
    row
}
