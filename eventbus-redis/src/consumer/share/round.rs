//! The rounds of partition sharing: every tick a consumer renews its membership, looks at
//! the partition counts and the assignment, and takes, keeps, hands over or releases its
//! partitions' leases; at shutdown it leaves the group.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventbus_core::transport::Topic;
use eventbus_core::Result as CoreResult;
use redis::Value;

use super::{tick_for, Holding, Sharing};
use crate::client::Inner;
use crate::partition::{self, create_group, scripts, Directory, Part};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Renews membership and leases every [`TICK`] until stopped.
pub(super) async fn run(inner: Arc<Inner>, sharing: Arc<Sharing>, group: String, me: String) {
    loop {
        let result = {
            let _round = sharing.round.lock().await;
            tick(&inner, &sharing, &group, &me).await
        };
        if let Err(e) = result {
            tracing::warn!(group, consumer = me, error = %e, "could not renew partition leases; retrying");
        }
        tokio::select! {
            _ = sharing.stop.cancelled() => break,
            _ = tokio::time::sleep(tick_for(sharing.ttl)) => {}
        }
    }
}

/// Leaves the group: out of the member set, every lease released.
pub(super) async fn leave(inner: &Inner, sharing: &Sharing, group: &str, me: &str) {
    let mut conn = inner.conn.clone();
    let _: redis::RedisResult<Value> = redis::cmd("ZREM")
        .arg(inner.keys.members(group))
        .arg(me)
        .query_async(&mut conn)
        .await;
    let leases: Vec<String> = {
        let state = sharing.state();
        state
            .topics
            .iter()
            .filter(|t| t.partitioned)
            .flat_map(|t| {
                t.held
                    .keys()
                    .map(|i| inner.keys.lease(group, &t.topic, *i))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for lease in leases {
        let mut invocation = scripts::RELEASE.key(&lease);
        invocation.arg(me);
        let _: redis::RedisResult<Value> = invocation.invoke_async(&mut conn).await;
    }
}

/// One round: partition counts, then (when a topic is partitioned) membership, the
/// assignment and the leases.
pub(crate) async fn tick(
    inner: &Inner,
    sharing: &Sharing,
    group: &str,
    me: &str,
) -> CoreResult<()> {
    let topics: Vec<Topic> = sharing
        .state()
        .topics
        .iter()
        .map(|t| t.topic.clone())
        .collect();
    let mut counts = Vec::with_capacity(topics.len());
    for (i, topic) in topics.iter().enumerate() {
        if !matches!(topic, Topic::Type(_) | Topic::All) {
            counts.push(None);
            continue;
        }
        let count = Directory::topic_count(inner, topic).await?;
        refresh_parts(inner, sharing, group, i, topic, count).await?;
        counts.push(Some(count));
    }
    let any_partitioned = sharing.state().topics.iter().any(|t| t.partitioned);
    let live = if any_partitioned {
        renew_membership(inner, group, me, sharing.ttl).await?
    } else {
        Vec::new()
    };
    let round = Round {
        inner,
        sharing,
        group,
        me,
        live: &live,
    };
    for (i, (topic, count)) in topics.iter().zip(counts).enumerate() {
        let partitioned = sharing.state().topics[i].partitioned;
        if let (Some(count), true) = (count, partitioned) {
            round.leases(i, topic, count).await;
        }
    }
    let mut state = sharing.state();
    state.live = live;
    state.ready = true;
    Ok(())
}

/// Takes a topic's partition count (and layout) as it now stands: new partitions get the
/// group, read from their beginning.
async fn refresh_parts(
    inner: &Inner,
    sharing: &Sharing,
    group: &str,
    i: usize,
    topic: &Topic,
    count: u32,
) -> CoreResult<()> {
    let partitioned = Directory::partitioned(inner, count);
    let (known, layout_changed) = {
        let state = sharing.state();
        let t = &state.topics[i];
        (t.parts.len(), partitioned != t.partitioned)
    };
    if count as usize == known && !layout_changed {
        return Ok(());
    }
    let parts = Directory::parts(inner, topic, count).await?;
    // Whatever was published to a new partition before the group existed there is the
    // group's to read.
    let fresh = if layout_changed { 0 } else { known };
    for part in parts.iter().skip(fresh) {
        create_group(inner, &part.key, group, "0").await?;
    }
    let mut state = sharing.state();
    let t = &mut state.topics[i];
    t.parts = parts;
    t.partitioned = partitioned;
    if partitioned {
        if layout_changed {
            // From now on partitions are leased: hold none until leased.
            t.held.clear();
        }
    } else {
        t.held = (0..count).map(|index| (index, Holding::shared())).collect();
    }
    Ok(())
}

/// Renews this consumer's membership and returns the live members, sorted.
async fn renew_membership(
    inner: &Inner,
    group: &str,
    me: &str,
    ttl: Duration,
) -> CoreResult<Vec<String>> {
    let key = inner.keys.members(group);
    let now = now_ms();
    let ttl = millis(ttl);
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD").arg(&key).arg(now + ttl).arg(me).ignore();
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg("-inf")
        .arg(now)
        .ignore();
    pipe.cmd("ZRANGE").arg(&key).arg(0).arg(-1);
    pipe.cmd("PEXPIRE").arg(&key).arg(ttl * 6).ignore();
    let (mut live,): (Vec<String>,) = pipe
        .query_async(&mut inner.conn.clone())
        .await
        .map_err(|e| inner.server.error(&e, "renew membership", None))?;
    live.sort();
    if !live.iter().any(|m| m == me) {
        live.push(me.to_owned());
        live.sort();
    }
    Ok(live)
}

/// The member a partition is assigned to.
pub(crate) fn assignee<'a>(live: &'a [String], topic: &Topic, index: u32) -> Option<&'a str> {
    if live.is_empty() {
        return None;
    }
    let offset = partition::key_hash(&topic.to_string());
    let slot = (offset.wrapping_add(u64::from(index))) % live.len() as u64;
    live.get(slot as usize).map(String::as_str)
}

/// One round's view: who this consumer is and who is alive.
struct Round<'a> {
    inner: &'a Inner,
    sharing: &'a Sharing,
    group: &'a str,
    me: &'a str,
    live: &'a [String],
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Round<'_> {
    /// Takes, keeps, hands over and releases the leases of one topic's partitions (a lease
    /// that fails is tried again next round).
    async fn leases(&self, i: usize, topic: &Topic, count: u32) {
        let Round {
            inner,
            sharing,
            group,
            me,
            live,
        } = *self;
        let ttl = millis(sharing.ttl);
        self.forget_settled(i, topic).await;
        // What to do per partition: Some(true) take or keep, Some(false) release, None nothing.
        let plan: Vec<(u32, bool, bool)> = {
            let state = sharing.state();
            let t = &state.topics[i];
            (0..count)
                .filter_map(|index| {
                    let mine = assignee(live, topic, index) == Some(me);
                    let held = t.held.contains_key(&index);
                    let drained = t.outstanding.get(&index).is_none_or(HashSet::is_empty);
                    match (mine, held) {
                        (true, _) => Some((index, true, mine)),
                        (false, true) if drained => Some((index, false, mine)),
                        // Still draining: keep the lease, read nothing more from it.
                        (false, true) => Some((index, true, mine)),
                        (false, false) => None,
                    }
                })
                .collect()
        };
        let results = futures_util::future::join_all(plan.iter().map(|&(index, keep, _)| {
            let key = inner.keys.lease(group, topic, index);
            let mut conn = inner.conn.clone();
            async move {
                let script = if keep {
                    &*scripts::LEASE
                } else {
                    &*scripts::RELEASE
                };
                let mut invocation = script.key(&key);
                invocation.arg(me);
                if keep {
                    invocation.arg(ttl);
                }
                invocation.invoke_async::<i64>(&mut conn).await
            }
        }))
        .await;
        let mut state = sharing.state();
        let t = &mut state.topics[i];
        for (&(index, keep, mine), result) in plan.iter().zip(results) {
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(topic = %topic, partition = index, error = %e, "lease round failed");
                    continue;
                }
            };
            if !keep {
                t.held.remove(&index);
                tracing::info!(topic = %topic, partition = index, group, consumer = me, "partition handed over");
                continue;
            }
            match (outcome, t.held.get_mut(&index)) {
                (0, Some(_)) => {
                    // Someone else holds it now (ours expired): stop reading it.
                    t.held.remove(&index);
                    tracing::warn!(topic = %topic, partition = index, group, consumer = me, "partition lease lost");
                }
                (0, None) => {}
                (_, Some(holding)) => {
                    holding.assigned = mine;
                    holding.renewed = Some(Instant::now());
                }
                (_, None) => {
                    tracing::info!(topic = %topic, partition = index, group, consumer = me, "partition taken");
                    t.held.insert(
                        index,
                        Holding {
                            assigned: mine,
                            takeover: Some("0-0".to_owned()),
                            renewed: Some(Instant::now()),
                        },
                    );
                }
            }
        }
    }

    /// For partitions being handed over whose entries this consumer still counts as unsettled,
    /// asks Redis whether any is still pending for it: an entry can leave without passing
    /// through here (acknowledged or claimed elsewhere), and must not hold the hand-over up.
    async fn forget_settled(&self, i: usize, topic: &Topic) {
        let (inner, sharing, group, me) = (self.inner, self.sharing, self.group, self.me);
        let live = self.live;
        let draining: Vec<Part> = {
            let state = sharing.state();
            let t = &state.topics[i];
            t.held
                .keys()
                .filter(|index| assignee(live, topic, **index) != Some(me))
                .filter(|index| t.outstanding.get(index).is_some_and(|set| !set.is_empty()))
                .filter_map(|index| t.parts.get(*index as usize).cloned())
                .collect()
        };
        for part in draining {
            let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
                .arg(&part.key)
                .arg(group)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(me)
                .query_async(&mut inner.conn.clone())
                .await;
            if matches!(pending, Ok(Value::Array(ref rows)) if rows.is_empty()) {
                let mut state = sharing.state();
                state.topics[i].outstanding.remove(&part.index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_partition_has_one_assignee_and_shares_are_even() {
        let live: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let topic = Topic::of_type("OrderCreated");
        let mut per: HashMap<&str, u32> = HashMap::new();
        for index in 0..6 {
            *per.entry(assignee(&live, &topic, index).unwrap_or(""))
                .or_default() += 1;
        }
        assert_eq!(per.len(), 3);
        assert!(per.values().all(|n| *n == 2), "{per:?}");
        assert_eq!(assignee(&[], &topic, 0), None);
    }
}
