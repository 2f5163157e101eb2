//! Reading new entries: the takeover of newly leased partitions first, then the held
//! partitions — in one blocking `XREADGROUP` on a single node, per partition (one slot
//! each) on a cluster.

use std::sync::atomic::Ordering;
use std::time::Duration;

use eventbus_core::transport::{Delivery, Topic};
use eventbus_core::Result as CoreResult;
use redis::{Cmd, Value};

use super::share::{Readable, TAKEOVER_MIN_IDLE};
use super::{delivery, parse_claimed, RedisConsumer, MAX_PAGE};
use crate::conn::Conn;
use crate::partition::scripts;
use crate::reply;

/// Longest a cluster consumer blocks on one partition before looking at the others.
const CLUSTER_BLOCK: Duration = Duration::from_millis(100);

/// How long a consumer with nothing to read waits before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub(super) async fn read(
    c: &RedisConsumer,
    count: usize,
    block: Duration,
) -> CoreResult<Vec<Delivery>> {
    c.sharing
        .ensure_ready(&c.inner, c.group(), c.name())
        .await?;
    if let Some(taken) = takeover(c, count).await? {
        return Ok(taken);
    }
    let readable = c.sharing.readable();
    if readable.is_empty() {
        tokio::time::sleep(block.min(IDLE_WAIT)).await;
        return Ok(Vec::new());
    }
    if !c.inner.config.is_cluster() {
        // One node: every stream in one blocking read.
        let keys: Vec<&str> = readable.iter().map(|r| r.part.key.as_str()).collect();
        let cmd = xreadgroup(c, &keys, count, block.min(super::share::TICK));
        let value = query(c, cmd, block, c.reader.clone(), &readable).await?;
        return deliveries(c, value, &readable);
    }
    // A cluster: each partition is its own slot. Look at all of them at once, then block
    // on one of them (in turn) for a short while.
    let share = count.div_ceil(readable.len()).max(1);
    let replies = futures_util::future::join_all(readable.iter().map(|r| {
        let cmd = xreadgroup(c, &[r.part.key.as_str()], share, Duration::ZERO);
        query(
            c,
            cmd,
            Duration::ZERO,
            c.inner.conn.clone(),
            std::slice::from_ref(r),
        )
    }))
    .await;
    let mut out = Vec::new();
    for (r, value) in readable.iter().zip(replies) {
        out.extend(deliveries(c, value?, std::slice::from_ref(r))?);
    }
    if !out.is_empty() || block.is_zero() {
        return Ok(out);
    }
    let turn = c.rotation.fetch_add(1, Ordering::Relaxed) % readable.len();
    let r = &readable[turn];
    let wait = block.min(CLUSTER_BLOCK);
    let cmd = xreadgroup(c, &[r.part.key.as_str()], count, wait);
    let value = query(c, cmd, wait, c.reader.clone(), std::slice::from_ref(r)).await?;
    deliveries(c, value, std::slice::from_ref(r))
}

/// A page of the takeover of a newly leased partition, if one is under way and found
/// entries.
async fn takeover(c: &RedisConsumer, count: usize) -> CoreResult<Option<Vec<Delivery>>> {
    let Some((t, part, cursor)) = c.sharing.next_takeover() else {
        return Ok(None);
    };
    let Some(topic) = c.spec.topics.get(t) else {
        return Ok(None);
    };
    let live = c.sharing.live();
    let value: Value = c
        .retry_once(
            "take over a partition (XPENDING+XCLAIM)",
            topic,
            |mut conn| {
                let mut invocation = scripts::TAKEOVER.key(&part.key);
                invocation
                    .arg(c.group())
                    .arg(c.name())
                    .arg(&cursor)
                    .arg(count.clamp(1, MAX_PAGE))
                    .arg(TAKEOVER_MIN_IDLE.as_millis() as u64)
                    .arg(&live);
                async move { invocation.invoke_async(&mut conn).await }
            },
        )
        .await?;
    let claimed = parse_claimed(topic, &value).ok_or_else(|| c.protocol("take over"))?;
    c.sharing
        .takeover_done_to(t, part.index, claimed.next_cursor.clone());
    if claimed.deliveries.is_empty() {
        return Ok(None);
    }
    tracing::info!(
        topic = %topic,
        partition = part.index,
        group = c.group(),
        consumer = c.name(),
        count = claimed.deliveries.len(),
        "took over pending entries of a partition"
    );
    let mut deliveries = claimed.deliveries;
    c.sharing.take(t, part.index, &mut deliveries);
    Ok(Some(deliveries))
}

fn xreadgroup(c: &RedisConsumer, keys: &[&str], count: usize, block: Duration) -> Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(c.group())
        .arg(c.name())
        .arg("COUNT")
        .arg(count.max(1));
    if !block.is_zero() {
        cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
    }
    cmd.arg("STREAMS");
    for key in keys {
        cmd.arg(*key);
    }
    for _ in keys {
        cmd.arg(">");
    }
    cmd
}

async fn query(
    c: &RedisConsumer,
    cmd: Cmd,
    block: Duration,
    mut conn: Conn,
    readable: &[Readable],
) -> CoreResult<Value> {
    let limit = block + c.inner.config.response_timeout_duration();
    match tokio::time::timeout(limit, cmd.query_async(&mut conn)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(c.error(&e, "XREADGROUP", &topic_in_error(c, &e, readable))),
        Err(_) => Err(c.server().timeout(
            "XREADGROUP",
            format!("no reply within {} ms", limit.as_millis()),
        )),
    }
}

/// The topic named in a `NOGROUP` reply to a multi-stream read, or the first one read.
fn topic_in_error(c: &RedisConsumer, error: &redis::RedisError, readable: &[Readable]) -> Topic {
    let text = error.to_string();
    readable
        .iter()
        .find(|r| text.contains(&format!("'{}'", r.part.key)))
        .or(readable.first())
        .and_then(|r| c.spec.topics.get(r.topic).cloned())
        .unwrap_or(Topic::All)
}

/// The deliveries of a read reply, their ids qualified, recorded as taken.
fn deliveries(c: &RedisConsumer, value: Value, readable: &[Readable]) -> CoreResult<Vec<Delivery>> {
    let streams = reply::into_streams(value).ok_or_else(|| c.protocol("XREADGROUP"))?;
    let mut out = Vec::new();
    for (key, entries) in streams {
        let Some(r) = readable.iter().find(|r| r.part.key == key) else {
            continue;
        };
        let Some(topic) = c.spec.topics.get(r.topic) else {
            continue;
        };
        let start = out.len();
        out.extend(entries.into_iter().filter_map(|e| delivery(topic, e, 1)));
        if r.partitioned {
            c.sharing.take(r.topic, r.part.index, &mut out[start..]);
        }
    }
    Ok(out)
}
