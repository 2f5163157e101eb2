//! How the consumers of a group share the partitions of their topics, Kafka style.
//!
//! Every consumer keeps its membership in the group's member set (`{ns}:members:{group}`,
//! renewed every [`TICK`]) and computes the same assignment from it: partition `i` of a
//! topic goes to the live member at `(i + offset) % members`, members sorted by name.
//! A consumer reads a partition only while it holds the partition's lease. A partition
//! that moves to another member is handed over without a duplicate: its old holder stops
//! reading it at once, keeps renewing its lease until every entry it read from there is
//! settled, and only then releases it; the new holder takes the lease, takes over what is
//! still pending there from consumers that are gone, in stream order, and then reads on.
//! A consumer that dies stops renewing: its leases expire after their time to live
//! ([`RedisConfig::partition_lease`](crate::RedisConfig::partition_lease), 10 s) and its
//! partitions, with their pending entries, are taken over.
//!
//! Topics with one partition on a single node keep the unpartitioned behaviour: every
//! consumer of the group reads the one stream, competing for entries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventbus_core::transport::Topic;
use eventbus_core::Result as CoreResult;
use redis::Value;
use tokio_util::sync::CancellationToken;

use crate::client::Inner;
use crate::partition::{self, create_group, scripts, Directory, Part};

/// How often a consumer renews its membership and leases and looks at the assignment, at
/// most: a tenth of the lease's time to live
/// ([`RedisConfig::partition_lease`](crate::RedisConfig::partition_lease)), at most a second.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// The renewal period for a lease time to live.
pub(crate) fn tick_for(ttl: Duration) -> Duration {
    (ttl / 10).min(TICK)
}

/// Pending entries of a live member idle this long are taken over with its partition (it
/// stopped renewing them, so it is not working on them).
pub(crate) const TAKEOVER_MIN_IDLE: Duration = Duration::from_secs(30);

/// One topic as this consumer sees it.
#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) topic: Topic,
    /// Its partition streams.
    pub(crate) parts: Vec<Part>,
    /// Whether partitions are leased (and ids qualified); otherwise every consumer reads
    /// every partition.
    pub(crate) partitioned: bool,
    /// Partitions whose lease this consumer holds.
    pub(crate) held: BTreeMap<u32, Holding>,
    /// Ids (unqualified) read from each partition and not yet settled here.
    pub(crate) outstanding: HashMap<u32, HashSet<String>>,
}

/// A partition whose lease this consumer holds.
#[derive(Debug, Clone)]
pub(crate) struct Holding {
    /// Still assigned here (otherwise it is being drained and handed over).
    pub(crate) assigned: bool,
    /// Where the takeover of its pending entries stands; `None` when done.
    pub(crate) takeover: Option<String>,
    /// When its lease was last taken or renewed (`None`: not leased, read by every consumer).
    pub(crate) renewed: Option<Instant>,
}

impl Holding {
    /// A partition every consumer of the group reads (no lease).
    fn shared() -> Self {
        Holding {
            assigned: true,
            takeover: None,
            renewed: None,
        }
    }

    /// Whether its lease is surely still this consumer's: renewed within two thirds of its
    /// time to live. A consumer that could not renew (Redis unreachable) stops reading the
    /// partition before the lease can lapse and pass to another consumer.
    fn fresh(&self, ttl: Duration) -> bool {
        self.renewed.is_none_or(|at| at.elapsed() < ttl * 2 / 3)
    }
}

/// A partition stream this consumer reads now.
#[derive(Debug, Clone)]
pub(crate) struct Readable {
    pub(crate) topic: usize,
    pub(crate) part: Part,
    pub(crate) partitioned: bool,
}

/// The sharing state of one consumer.
#[derive(Debug)]
pub(crate) struct Sharing {
    state: Mutex<State>,
    /// Stops the background renewal.
    pub(crate) stop: CancellationToken,
    /// The background renewal.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One round at a time (the background one, or the first read's).
    round: tokio::sync::Mutex<()>,
    /// The leases' time to live.
    ttl: Duration,
}

#[derive(Debug)]
struct State {
    topics: Vec<TopicState>,
    live: Vec<String>,
    /// Whether the assignment has been looked at once.
    ready: bool,
}

impl Sharing {
    pub(crate) fn new(inner: &Inner, topics: &[Topic]) -> Self {
        let topics = topics
            .iter()
            .map(|topic| TopicState {
                topic: topic.clone(),
                parts: vec![Part {
                    index: 0,
                    key: inner.keys.stream(topic),
                    tag: None,
                }],
                partitioned: false,
                held: BTreeMap::from([(0, Holding::shared())]),
                outstanding: HashMap::new(),
            })
            .collect();
        Sharing {
            state: Mutex::new(State {
                topics,
                live: Vec::new(),
                ready: false,
            }),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
            round: tokio::sync::Mutex::new(()),
            ttl: inner.config.partition_lease_ttl(),
        }
    }

    /// Makes sure the assignment has been looked at once (the first read waits for it).
    pub(crate) async fn ensure_ready(
        &self,
        inner: &Inner,
        group: &str,
        me: &str,
    ) -> CoreResult<()> {
        if self.ready() {
            return Ok(());
        }
        let _round = self.round.lock().await;
        if self.ready() {
            return Ok(());
        }
        tick(inner, self, group, me).await
    }

    /// Starts renewing membership and leases in the background.
    pub(crate) fn start(self: &Arc<Self>, inner: Arc<Inner>, group: String, me: String) {
        let task = tokio::spawn(run(inner, self.clone(), group, me));
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stops renewing and leaves the group: out of the member set, every lease released.
    pub(crate) async fn close(&self, inner: &Inner, group: &str, me: &str) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        leave(inner, self, group, me).await;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the first look at the assignment is done.
    pub(crate) fn ready(&self) -> bool {
        self.state().ready
    }

    /// The partition streams to read now: held and still assigned here, their takeover
    /// done.
    pub(crate) fn readable(&self) -> Vec<Readable> {
        let state = self.state();
        let mut out = Vec::new();
        for (i, topic) in state.topics.iter().enumerate() {
            for (index, holding) in &topic.held {
                if holding.assigned && holding.takeover.is_none() && holding.fresh(self.ttl) {
                    if let Some(part) = topic.parts.get(*index as usize) {
                        out.push(Readable {
                            topic: i,
                            part: part.clone(),
                            partitioned: topic.partitioned,
                        });
                    }
                }
            }
        }
        out
    }

    /// The first partition with a takeover to do: `(topic index, partition, cursor)`.
    pub(crate) fn next_takeover(&self) -> Option<(usize, Part, String)> {
        let state = self.state();
        state.topics.iter().enumerate().find_map(|(i, topic)| {
            topic.held.iter().find_map(|(index, holding)| {
                let cursor = holding.takeover.clone()?;
                Some((i, topic.parts.get(*index as usize)?.clone(), cursor))
            })
        })
    }

    /// Records where a partition's takeover stands (`0-0`: done).
    pub(crate) fn takeover_done_to(&self, topic: usize, index: u32, cursor: String) {
        let mut state = self.state();
        if let Some(holding) = state
            .topics
            .get_mut(topic)
            .and_then(|t| t.held.get_mut(&index))
        {
            holding.takeover = (cursor != "0-0").then_some(cursor);
        }
    }

    /// The live members, as last seen.
    pub(crate) fn live(&self) -> Vec<String> {
        self.state().live.clone()
    }

    /// The topic index of a topic.
    pub(crate) fn topic_index(&self, topic: &Topic) -> Option<usize> {
        self.state().topics.iter().position(|t| &t.topic == topic)
    }

    /// The partition stream of an entry id (qualified or not) of a topic, the unqualified
    /// id, and whether the topic is partitioned.
    pub(crate) fn locate(&self, topic: &Topic, id: &str) -> Option<(Part, String, bool)> {
        let state = self.state();
        let t = state.topics.iter().find(|t| &t.topic == topic)?;
        let (index, raw) = partition::split_id(id);
        Some((
            t.parts.get(index as usize)?.clone(),
            raw.to_owned(),
            t.partitioned,
        ))
    }

    /// Every partition stream of a topic.
    pub(crate) fn parts(&self, topic: &Topic) -> Vec<Part> {
        let state = self.state();
        state
            .topics
            .iter()
            .find(|t| &t.topic == topic)
            .map(|t| t.parts.clone())
            .unwrap_or_default()
    }

    /// Held partition streams of a topic (all of them when it is not partitioned).
    pub(crate) fn held_parts(&self, topic: &Topic) -> (Vec<Part>, bool) {
        let state = self.state();
        let Some(t) = state.topics.iter().find(|t| &t.topic == topic) else {
            return (Vec::new(), false);
        };
        let parts = t
            .held
            .keys()
            .filter_map(|i| t.parts.get(*i as usize).cloned())
            .collect();
        (parts, t.partitioned)
    }

    /// Records ids read from a partition (unqualified).
    pub(crate) fn taken(&self, topic: usize, index: u32, ids: impl IntoIterator<Item = String>) {
        let mut state = self.state();
        if let Some(t) = state.topics.get_mut(topic).filter(|t| t.partitioned) {
            t.outstanding.entry(index).or_default().extend(ids);
        }
    }

    /// Records ids settled here (acknowledged, dead-lettered, given back, or lost).
    pub(crate) fn settled(&self, topic: &Topic, index: u32, ids: &[String]) {
        let mut state = self.state();
        if let Some(t) = state.topics.iter_mut().find(|t| &t.topic == topic) {
            if let Some(set) = t.outstanding.get_mut(&index) {
                for id in ids {
                    set.remove(id);
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Renews membership and leases every [`TICK`] until stopped.
async fn run(inner: Arc<Inner>, sharing: Arc<Sharing>, group: String, me: String) {
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
async fn leave(inner: &Inner, sharing: &Sharing, group: &str, me: &str) {
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
        let Round {
            inner,
            sharing,
            group,
            me,
            live,
        } = *self;
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
