//! Events: the streams to tail, a page of a stream's entries (the live tail polls for what
//! came after its last one), and finding events by event id or correlation id.
//!
//! There is no index of correlation ids: finding is a bounded, paged scan of the global
//! stream (every published event is there; each partition's share on a partitioned
//! namespace), newest first. One request reads at most `budget` entries (default 5,000, at
//! most 50,000) and returns a `cursor` when there is more to scan; the page asks for more.

use axum::extract::{Query, State};
use axum::Json;
use eventbus_core::transport::Topic;
use eventbus_redis::inspect::{Page, StreamInfo, MAX_PAGE};
use eventbus_redis::TailEntry;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{limit, ApiError, ApiResult};
use crate::console::state::AppState;
use crate::output::event_line;

/// Entries a find request reads by default, and at most.
const BUDGET: usize = 5_000;
const MAX_BUDGET: usize = 50_000;

/// `GET /api/streams`: every stream of the namespace, by key.
pub(crate) async fn streams(State(state): State<AppState>) -> ApiResult {
    let streams: Vec<Value> = state
        .transport
        .stream_infos()
        .await?
        .iter()
        .map(stream_ref)
        .collect();
    Ok(Json(json!({ "streams": streams })))
}

/// A stream as lists name it: key, topic, partition, length and newest id.
pub(crate) fn stream_ref(s: &StreamInfo) -> Value {
    json!({
        "key": s.key,
        "stream": s.topic.to_string(),
        "partition": s.partition,
        "length": s.length,
        "last_id": s.last_id,
    })
}

#[derive(Deserialize)]
pub(crate) struct TailQuery {
    /// The stream's key (as `/api/streams` names it).
    stream: String,
    /// Only entries after this id; absent: the newest ones.
    after: Option<String>,
    /// At most this many (default 50).
    count: Option<usize>,
}

/// `GET /api/events/tail`: entries of a stream, oldest first, and the id to poll after.
pub(crate) async fn tail(
    State(state): State<AppState>,
    Query(query): Query<TailQuery>,
) -> ApiResult {
    let count = limit(query.count, 50).min(MAX_PAGE);
    let after = query.after.as_deref().filter(|a| !a.is_empty());
    let mut entries = match after {
        Some(id) => {
            state
                .transport
                .stream_page(&query.stream, Page::After(id), count)
                .await?
        }
        None => {
            let mut newest = state
                .transport
                .stream_page(&query.stream, Page::Newest, count)
                .await?;
            newest.reverse();
            newest
        }
    };
    let last = entries
        .last()
        .map(|(id, _)| id.clone())
        .or_else(|| after.map(str::to_owned));
    let rows: Vec<Value> = entries
        .drain(..)
        .map(|e| entry_json(&query.stream, e))
        .collect();
    Ok(Json(
        json!({ "stream": query.stream, "entries": rows, "last_id": last }),
    ))
}

/// An entry as the page shows it: the event (as `eventbus tail` prints it), or why it can't
/// be decoded.
fn entry_json(key: &str, (id, entry): TailEntry) -> Value {
    match entry {
        Ok(event) => {
            let mut line = event_line(&id, &event);
            if let Value::Object(map) = &mut line {
                map.insert("key".into(), json!(key));
            }
            line
        }
        Err(malformed) => {
            json!({ "stream_id": id, "key": key, "malformed": malformed.to_string() })
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct FindQuery {
    /// The event id to find.
    event_id: Option<String>,
    /// The correlation id whose events to find.
    correlation_id: Option<String>,
    /// Where an earlier request stopped.
    cursor: Option<String>,
    /// Entries to read at most (default 5,000, at most 50,000).
    budget: Option<usize>,
}

/// `GET /api/events/find`: events by event id or correlation id, oldest first, with the
/// cursor to scan on from (`null`: the whole global stream was scanned).
pub(crate) async fn find(
    State(state): State<AppState>,
    Query(query): Query<FindQuery>,
) -> ApiResult {
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (event_id, correlation_id) = (nonempty(&query.event_id), nonempty(&query.correlation_id));
    if event_id.is_none() == correlation_id.is_none() {
        return Err(ApiError::bad_request(
            "give one of `event_id` or `correlation_id`",
        ));
    }
    let matches = |e: &Value| match (&event_id, &correlation_id) {
        (Some(id), _) => e["event_id"] == json!(id),
        (_, Some(id)) => e["correlation_id"] == json!(id),
        _ => false,
    };
    let streams = state.transport.partition_streams(&Topic::All).await?;
    let mut cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(Cursor::parse(c)?),
        None => Some(Cursor {
            stream: 0,
            before: None,
        }),
    };
    let budget = query.budget.unwrap_or(BUDGET).clamp(1, MAX_BUDGET);
    let (mut scanned, mut found) = (0usize, Vec::new());
    while let Some(at) = cursor.take() {
        let Some(key) = streams.get(at.stream) else {
            break;
        };
        if scanned >= budget || (event_id.is_some() && !found.is_empty()) {
            cursor = Some(at);
            break;
        }
        let page = match &at.before {
            Some(id) => Page::Before(id),
            None => Page::Newest,
        };
        let count = MAX_PAGE.min(budget - scanned);
        let entries = state.transport.stream_page(key, page, count).await?;
        scanned += entries.len();
        let next = entries.last().map(|(id, _)| id.clone());
        let exhausted = entries.len() < count;
        found.extend(
            entries
                .into_iter()
                .map(|e| entry_json(key, e))
                .filter(|e| matches(e)),
        );
        cursor = match (exhausted, next) {
            (false, Some(id)) => Some(Cursor {
                stream: at.stream,
                before: Some(id),
            }),
            _ => Some(Cursor {
                stream: at.stream + 1,
                before: None,
            }),
        };
    }
    let cursor = cursor
        .filter(|c| c.stream < streams.len())
        .map(|c| c.to_string());
    found.sort_by(|a, b| {
        let time = |e: &Value| e["timestamp"].as_f64().unwrap_or(0.0);
        time(a).total_cmp(&time(b))
    });
    Ok(Json(
        json!({ "events": found, "scanned": scanned, "cursor": cursor }),
    ))
}

/// Where a scan stopped: the index of the global stream's partition, and the id before
/// which it goes on (`None`: from the newest).
struct Cursor {
    stream: usize,
    before: Option<String>,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, ApiError> {
        let bad = || ApiError::bad_request(format!("bad cursor `{text}`"));
        let (stream, before) = text.split_once('/').ok_or_else(bad)?;
        Ok(Cursor {
            stream: stream.parse().map_err(|_| bad())?,
            before: (!before.is_empty()).then(|| before.to_owned()),
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.stream,
            self.before.as_deref().unwrap_or("")
        )
    }
}
