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

mod round;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eventbus_core::transport::{Delivery, Topic};
use eventbus_core::Result as CoreResult;
use tokio_util::sync::CancellationToken;

use crate::client::Inner;
use crate::partition::{self, Directory, Part};
use round::{leave, run, tick};

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
                parts: vec![Directory::single(inner, topic)],
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

    /// Takes deliveries read from a partition of a partitioned topic: records them as
    /// unsettled here, and qualifies their ids with the partition.
    pub(crate) fn take(&self, topic: usize, index: u32, deliveries: &mut [Delivery]) {
        {
            let mut state = self.state();
            if let Some(t) = state.topics.get_mut(topic).filter(|t| t.partitioned) {
                let set = t.outstanding.entry(index).or_default();
                set.extend(deliveries.iter().map(|d| d.entry_id.clone()));
            }
        }
        for d in deliveries {
            d.entry_id = partition::qualify(index, &d.entry_id, true);
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
