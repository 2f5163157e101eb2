//! The consumer loop: batched reads, bounded concurrency with per-key ordering, batched
//! acknowledgements, retries, dead letters, reclaiming, ownership and graceful shutdown.
//!
//! One concern per module:
//! - [`reader`]: reads new entries, recovers this consumer's own pending entries, reclaims
//!   idle ones of other consumers, and survives transport errors;
//! - [`lanes`]: hands each entry to its ordering lane, bounded by `concurrency`;
//! - [`attempt`]: one entry to its end: counting the delivery, poison and malformed checks,
//!   the handlers (timeout, panic, retry);
//! - [`dead_letter`]: moving an entry to the dead-letter stream;
//! - [`acker`]: batched acknowledgements of what this consumer still holds;
//! - [`holdings`]: what this consumer holds, and the heartbeat that keeps it.

mod acker;
mod attempt;
mod dead_letter;
mod holdings;
mod lanes;
mod reader;

use crate::telemetry::metrics::ConsumerMetrics;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, RwLock, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::handler::ErasedHandler;
use crate::bus::options::SubscriptionOptions;
use crate::bus::stats::{ShutdownReport, SubscriptionStats};
use crate::bus::EventBus;
use crate::envelope::EntryId;
use crate::transport::{ConsumerSpec, Delivery, StreamConsumer, Topic};

use acker::AckItem;
use holdings::Holdings;

/// How long shutdown waits for cancelled handlers to let go, after `shutdown_timeout`.
const ABANDON_GRACE: Duration = Duration::from_secs(5);

/// Everything the loop and its tasks share.
pub(crate) struct Runner {
    bus: EventBus,
    consumer: Arc<dyn StreamConsumer>,
    spec: ConsumerSpec,
    options: SubscriptionOptions,
    handlers: HashMap<Topic, Arc<[ErasedHandler]>>,
    stats: Arc<SubscriptionStats>,
    /// Stops intake: no new reads, no new handler starts.
    cancel: CancellationToken,
    /// Cancels running handlers (after `shutdown_timeout`); their entries stay pending.
    abandon: CancellationToken,
    running: Arc<Semaphore>,
    /// Attempts share it; the first attempt on a recovered or claimed entry (which may be
    /// what took its last consumer down) holds it alone.
    gate: RwLock<()>,
    lanes: Mutex<HashMap<String, VecDeque<Job>>>,
    tracker: TaskTracker,
    ack_tx: mpsc::UnboundedSender<AckItem>,
    ack_rx: Mutex<Option<mpsc::UnboundedReceiver<AckItem>>>,
    /// Cancelled once the handlers drained: the acker flushes what is left and stops, and
    /// so does the heartbeat.
    ack_stop: CancellationToken,
    /// Entries read and not settled, with their holds.
    holdings: Mutex<Holdings>,
    /// Entries settled without a handler succeeding (dead-lettered, skipped, lost or given
    /// back): they don't count against `limit`.
    uncounted: AtomicU64,
    /// Signalled when `uncounted` grows, so that a reader at its limit reads again.
    uncounted_changed: Notify,
    /// Handlers ack what they handled themselves (atomically with their own writes).
    handler_acks: bool,
    /// The messaging system and each topic's destination name, for telemetry.
    system: &'static str,
    destinations: HashMap<Topic, Destination>,
}

/// Where a topic's entries come from, for telemetry: the destination's name and this
/// consumer's metrics there, registered once.
#[derive(Clone)]
struct Destination {
    name: String,
    metrics: ConsumerMetrics,
}

/// A delivery on its way through the loop.
struct Job {
    delivery: Delivery,
    /// Whether `delivery.delivery_count` already counts this attempt (a fresh read) or the
    /// attempt must be counted before a handler starts (a recovered or claimed entry).
    counted: bool,
    /// Its key in the holdings, and which dispatch it is.
    key: InflightKey,
    generation: u64,
    /// The prefetch permit it holds until it is finished.
    _permit: OwnedSemaphorePermit,
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        bus: EventBus,
        consumer: Box<dyn StreamConsumer>,
        spec: ConsumerSpec,
        options: SubscriptionOptions,
        handlers: HashMap<Topic, Vec<ErasedHandler>>,
        stats: Arc<SubscriptionStats>,
        cancel: CancellationToken,
        handler_acks: bool,
    ) -> Arc<Self> {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let transport = bus.transport();
        let system = transport.system();
        let destinations = spec
            .topics
            .iter()
            .map(|t| {
                let name = transport.destination(t);
                let metrics = ConsumerMetrics::new(system, &name, &spec.group);
                (t.clone(), Destination { name, metrics })
            })
            .collect();
        Arc::new(Runner {
            system,
            destinations,
            bus,
            consumer: Arc::from(consumer),
            running: Arc::new(Semaphore::new(options.concurrency)),
            gate: RwLock::new(()),
            spec,
            options,
            handlers: handlers
                .into_iter()
                .map(|(t, h)| (t, Arc::from(h)))
                .collect(),
            stats,
            cancel,
            abandon: CancellationToken::new(),
            lanes: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            ack_tx,
            ack_rx: Mutex::new(Some(ack_rx)),
            ack_stop: CancellationToken::new(),
            holdings: Mutex::new(Holdings::default()),
            uncounted: AtomicU64::new(0),
            uncounted_changed: Notify::new(),
            handler_acks,
        })
    }

    fn count_unhandled(&self) {
        self.uncounted.fetch_add(1, AtomicOrdering::SeqCst);
        self.uncounted_changed.notify_one();
    }

    fn holdings(&self) -> MutexGuard<'_, Holdings> {
        self.holdings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Job>>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topic and id of a held entry (rare paths: renewals, give-backs).
    fn entry_of(&self, key: &InflightKey) -> (Topic, EntryId) {
        match key {
            InflightKey::Parsed { topic, ms, seq } => (
                self.spec.topics.get(*topic).cloned().unwrap_or(Topic::All),
                format!("{ms}-{seq}"),
            ),
            InflightKey::Other(topic, id) => (topic.clone(), id.clone()),
        }
    }

    /// The in-flight key of an entry: without allocating for the usual `{ms}-{seq}` ids of
    /// this consumer's topics.
    fn inflight_key(&self, topic: &Topic, id: &str) -> InflightKey {
        let topic_index = self.spec.topics.iter().position(|t| t == topic);
        match (topic_index, parse_entry_id(id)) {
            (Some(topic), Some((ms, seq))) => InflightKey::Parsed { topic, ms, seq },
            _ => InflightKey::Other(topic.clone(), id.to_owned()),
        }
    }
}

/// Identifies an entry held here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum InflightKey {
    /// A canonical `{ms}-{seq}` id in the stream of `spec.topics[topic]`.
    Parsed { topic: usize, ms: u64, seq: u64 },
    /// Any other id.
    Other(Topic, EntryId),
}

/// `(ms, seq)` of a canonical stream id (decimal, no sign, no leading zeros), so that two
/// ids map to the same pair only when they are the same text.
fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let number = |part: &str| {
        let canonical = !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part.len() == 1 || !part.starts_with('0'));
        canonical.then(|| part.parse::<u64>().ok()).flatten()
    };
    Some((number(ms)?, number(seq)?))
}

/// Runs the subscription until cancelled, then drains: running handlers get up to
/// `shutdown_timeout`, then are cancelled (their entries stay pending); finished work is
/// acknowledged.
pub(crate) async fn run(runner: Arc<Runner>) -> ShutdownReport {
    let ack_rx = runner
        .ack_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let acker = ack_rx.map(|rx| tokio::spawn(acker::ack_loop(runner.clone(), rx)));
    let heartbeat = tokio::spawn(holdings::heartbeat(runner.clone()));

    reader::read_loop(&runner).await;

    // Drain: no new work starts (lanes and retries watch the token); running handlers finish.
    runner.tracker.close();
    let drained =
        tokio::time::timeout(runner.options.shutdown_timeout, runner.tracker.wait()).await;
    if drained.is_err() {
        runner.abandon.cancel();
        if tokio::time::timeout(ABANDON_GRACE, runner.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!(
                group = %runner.spec.group,
                consumer = %runner.spec.consumer,
                "handlers ignore cancellation (blocking the thread?); shutting down without them"
            );
        }
        tracing::warn!(
            group = %runner.spec.group,
            consumer = %runner.spec.consumer,
            abandoned = runner.stats.abandoned(),
            "shutdown timeout: running handlers cancelled; their entries stay pending"
        );
    }
    runner.ack_stop.cancel();
    if let Some(acker) = acker {
        let _ = acker.await;
    }
    let _ = heartbeat.await;
    // What is left never finished here: give it back uncounted, claimable at once.
    let left = runner.holdings().take_all_back();
    let left_pending = left.len() as u64;
    give_back(&runner, left).await;
    if let Err(e) = runner.consumer.close().await {
        tracing::warn!(group = %runner.spec.group, consumer = %runner.spec.consumer, error = %e, "could not leave the group; its partitions move on when its membership expires");
    }
    ShutdownReport {
        abandoned: runner.stats.abandoned(),
        left_pending,
    }
}

/// Gives entries back without a verdict (see [`StreamConsumer::give_back`]). On failure they
/// stay pending as they are, as after a crash.
async fn give_back(runner: &Runner, entries: Vec<(InflightKey, u32)>) {
    let mut by_topic: Vec<(Topic, Vec<(EntryId, u32)>)> = Vec::new();
    for (key, count) in entries {
        let (topic, id) = runner.entry_of(&key);
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, list)) => list.push((id, count)),
            None => by_topic.push((topic, vec![(id, count)])),
        }
    }
    for (topic, list) in by_topic {
        if let Err(e) = runner
            .consumer
            .give_back(&topic, &list, runner.options.claim_idle)
            .await
        {
            SubscriptionStats::add(&runner.stats.transport_errors, 1);
            tracing::warn!(topic = %topic, error = %e, count = list.len(), "cannot give entries back; they stay pending and count as delivered");
        }
    }
}

impl Runner {
    /// A CLIENT span (debug level) of a broker operation on `topic` (`None`: every topic).
    fn client_span(&self, operation: &'static str, topic: Option<&Topic>) -> tracing::Span {
        match topic {
            Some(topic) => crate::telemetry::spans::client(
                self.system,
                operation,
                &self.destination(topic).name,
            ),
            None => crate::telemetry::spans::client(self.system, operation, "(subscribed streams)"),
        }
    }

    /// The destination of `topic` (telemetry): its name and this consumer's metrics there.
    fn destination(&self, topic: &Topic) -> std::borrow::Cow<'_, Destination> {
        match self.destinations.get(topic) {
            Some(d) => std::borrow::Cow::Borrowed(d),
            None => {
                let name = topic.to_string();
                let metrics = ConsumerMetrics::new(self.system, &name, &self.spec.group);
                std::borrow::Cow::Owned(Destination { name, metrics })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_only_when_canonical() {
        assert_eq!(
            parse_entry_id("1700000000000-0"),
            Some((1_700_000_000_000, 0))
        );
        assert_eq!(parse_entry_id("0-1"), Some((0, 1)));
        for other in [
            "01-1",
            "1-01",
            "1",
            "-1",
            "1-",
            "+1-1",
            "a-1",
            "1-2-3",
            "99999999999999999999-0",
        ] {
            assert_eq!(parse_entry_id(other), None, "{other}");
        }
    }
}
