//! Publishing one partition's share of a batch: each event appended to its type's stream
//! and (unless the namespace turned it off) to the global stream, in one script call per
//! chunk of events, the chunks sent at once.
//!
//! One script call per chunk writes each event's fields once on the wire (the global copy
//! is made by the script) and keeps an event's two appends atomic. Chunks are sent without
//! waiting for each other, so Redis appends the first chunk while the client still encodes
//! the next; they go out on one connection in order, so the batch's entries stay in order.

use std::sync::LazyLock;

use eventbus_core::{EntryId, Envelope, Result as CoreResult};
use redis::{Cmd, Pipeline, Script};
use serde_json::Value as Json;

use crate::client::Inner;
use crate::codec;
use crate::replication::{self, Wait};

/// Events per script call. Smaller chunks overlap encoding with appending sooner; each
/// call costs Redis a little on its own.
const CHUNK: usize = 64;

/// Appends a chunk of events.
///
/// `KEYS`: the type streams `1..=k`, then the global stream when it is written.
/// `ARGV[1]` k; `ARGV[2..=k+1]` each type stream's MAXLEN (`0`: none); `ARGV[k+2]` the
/// global stream's MAXLEN; then 7 values per event: the index of its stream in `KEYS`, and
/// its six field values in wire order. Returns the ids in the type streams, in order.
static PUBLISH_CODE: LazyLock<String> = LazyLock::new(|| {
    let [f1, f2, f3, f4, f5, f6] = codec::FIELD_NAMES;
    format!(
        r#"
local k = tonumber(ARGV[1])
local global = KEYS[k + 1]
local gmax = ARGV[k + 2]
local ids = {{}}
for i = k + 3, #ARGV, 7 do
  local s = tonumber(ARGV[i])
  local key, max = KEYS[s], ARGV[1 + s]
  local id
  if max ~= '0' then
    id = redis.call('XADD', key, 'MAXLEN', '~', max, '*', '{f1}', ARGV[i + 1], '{f2}', ARGV[i + 2],
      '{f3}', ARGV[i + 3], '{f4}', ARGV[i + 4], '{f5}', ARGV[i + 5], '{f6}', ARGV[i + 6])
  else
    id = redis.call('XADD', key, '*', '{f1}', ARGV[i + 1], '{f2}', ARGV[i + 2],
      '{f3}', ARGV[i + 3], '{f4}', ARGV[i + 4], '{f5}', ARGV[i + 5], '{f6}', ARGV[i + 6])
  end
  if global then
    if gmax ~= '0' then
      redis.call('XADD', global, 'MAXLEN', '~', gmax, '*', '{f1}', ARGV[i + 1], '{f2}', ARGV[i + 2],
        '{f3}', ARGV[i + 3], '{f4}', ARGV[i + 4], '{f5}', ARGV[i + 5], '{f6}', ARGV[i + 6],
        '{original}', key)
    else
      redis.call('XADD', global, '*', '{f1}', ARGV[i + 1], '{f2}', ARGV[i + 2],
        '{f3}', ARGV[i + 3], '{f4}', ARGV[i + 4], '{f5}', ARGV[i + 5], '{f6}', ARGV[i + 6],
        '{original}', key)
    end
  end
  ids[#ids + 1] = id
end
return ids
"#,
        original = codec::ORIGINAL_STREAM,
    )
});

/// [`PUBLISH_CODE`], sent by its hash.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(&PUBLISH_CODE));

/// One partition's events with where they go.
pub(crate) struct Share<'a> {
    /// The events, in order.
    pub(crate) events: Vec<&'a Envelope<Json>>,
    /// The index in `streams` of each event's type stream, in the same order.
    pub(crate) stream_of: Vec<usize>,
    /// The type streams' keys and MAXLENs (`0`: none).
    pub(crate) streams: Vec<(String, u64)>,
    /// The global stream's key and MAXLEN, unless the namespace doesn't write it.
    pub(crate) global: Option<(String, u64)>,
}

/// Appends a partition's share (then `WAIT`s, when publishes wait for replicas). Returns
/// the ids in the type streams, in order.
pub(crate) async fn append(inner: &Inner, share: Share<'_>) -> CoreResult<Vec<EntryId>> {
    let wait = inner.config.publish_replicas();
    let chunks = share.events.len().div_ceil(CHUNK);
    let calls: Vec<Cmd> = (0..chunks)
        .map(|c| {
            let range = c * CHUNK..((c + 1) * CHUNK).min(share.events.len());
            call(&share, range)
        })
        .collect::<CoreResult<_>>()?;
    let last = calls.len().saturating_sub(1);
    let replies = futures_util::future::join_all(
        calls
            .iter()
            .enumerate()
            .map(|(i, cmd)| send(inner, cmd, wait.filter(|_| i == last))),
    )
    .await;
    let mut ids = Vec::with_capacity(share.events.len());
    for reply in replies {
        ids.extend(reply?);
    }
    if ids.len() != share.events.len() {
        return Err(inner.server.protocol(
            "publish",
            format!("{} ids for {} events", ids.len(), share.events.len()),
        ));
    }
    Ok(ids)
}

/// The `EVALSHA` of one chunk.
fn call(share: &Share<'_>, range: std::ops::Range<usize>) -> CoreResult<Cmd> {
    // Every chunk names all the share's type streams (usually one): they share a slot.
    let keys = &share.streams;
    let encoded: Vec<codec::Encoded<'_>> = share.events[range.clone()]
        .iter()
        .map(|e| codec::Encoded::new(e))
        .collect::<Result<_, _>>()?;
    let size = encoded.iter().map(codec::Encoded::size).sum::<usize>()
        + keys.iter().map(|(k, _)| k.len() + 24).sum::<usize>()
        + 64;
    let mut cmd = Cmd::with_capacity(8 + 2 * keys.len() + 7 * encoded.len(), size);
    let numkeys = keys.len() + usize::from(share.global.is_some());
    cmd.arg("EVALSHA").arg(PUBLISH.get_hash()).arg(numkeys);
    for (key, _) in keys {
        cmd.arg(key);
    }
    if let Some((global, _)) = &share.global {
        cmd.arg(global);
    }
    cmd.arg(keys.len());
    for (_, maxlen) in keys {
        cmd.arg(*maxlen);
    }
    cmd.arg(share.global.as_ref().map_or(0, |(_, maxlen)| *maxlen));
    for (event, &s) in encoded.iter().zip(&share.stream_of[range]) {
        cmd.arg(s + 1);
        for (_, value) in event.fields() {
            cmd.arg(value);
        }
    }
    Ok(cmd)
}

/// Sends one chunk (with `WAIT` after it when given); on `NOSCRIPT` (a server that lost
/// its scripts: restarted, failed over, flushed) sends the script itself once.
async fn send(inner: &Inner, cmd: &Cmd, wait: Option<Wait>) -> CoreResult<Vec<EntryId>> {
    let sent = match attempt(inner, cmd, wait).await {
        Err(e) if e.code() == Some("NOSCRIPT") => {
            let mut eval = Cmd::new();
            eval.arg("EVAL").arg(PUBLISH_CODE.as_str());
            for arg in cmd.args_iter().skip(2) {
                if let redis::Arg::Simple(bytes) = arg {
                    eval.arg(bytes);
                }
            }
            attempt(inner, &eval, wait).await
        }
        other => other,
    };
    let (ids, acked) = sent.map_err(|e| inner.server.error(&e, "publish (EVALSHA)", None))?;
    if let (Some(acked), Some(wait)) = (acked, wait) {
        replication::check(
            inner,
            "publish (WAIT)",
            "appended (a retry appends the events again, with the same event ids)",
            acked,
            wait,
        )?;
    }
    Ok(ids)
}

/// The chunk's ids, and how many replicas acknowledged it (when it waited).
async fn attempt(
    inner: &Inner,
    cmd: &Cmd,
    wait: Option<Wait>,
) -> redis::RedisResult<(Vec<EntryId>, Option<i64>)> {
    let mut conn = inner.conn.clone();
    let Some(wait) = wait else {
        let ids: Vec<EntryId> = cmd.query_async(&mut conn).await?;
        return Ok((ids, None));
    };
    let mut pipe = Pipeline::with_capacity(2);
    pipe.add_command(cmd.clone());
    replication::add_wait(&mut pipe, wait);
    let (ids, acked): (Vec<EntryId>, i64) = pipe.query_async(&mut conn).await?;
    Ok((ids, Some(acked)))
}
