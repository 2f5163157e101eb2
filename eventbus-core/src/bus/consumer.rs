//! The consumer loop: batched reads, bounded concurrency with per-key ordering, batched
//! acknowledgements, retries, dead letters, reclaiming and graceful shutdown.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::context::{Context, DeliveryInfo};
use crate::bus::handler::ErasedHandler;
use crate::bus::subscription::{OrderBy, SubscriptionOptions, SubscriptionStats};
use crate::bus::EventBus;
use crate::envelope::{EntryId, Envelope};
use crate::error::{Error, HandlerError};
use crate::transport::{ConsumerSpec, DeadLetterReason, Delivery, StreamConsumer, Topic};

/// Acks buffered before a flush is forced.
const MAX_ACK_BATCH: usize = 1024;
/// Attempts at dead-lettering before leaving the entry pending for a later delivery.
const DEAD_LETTER_ATTEMPTS: u32 = 5;

/// Everything the loop and its tasks share.
pub(crate) struct Runner {
    bus: EventBus,
    consumer: Arc<dyn StreamConsumer>,
    spec: ConsumerSpec,
    options: SubscriptionOptions,
    handlers: HashMap<Topic, Arc<[ErasedHandler]>>,
    stats: Arc<SubscriptionStats>,
    cancel: CancellationToken,
    running: Arc<Semaphore>,
    lanes: Mutex<HashMap<String, VecDeque<Job>>>,
    tracker: TaskTracker,
    ack_tx: mpsc::UnboundedSender<(Topic, EntryId)>,
    ack_rx: Mutex<Option<mpsc::UnboundedReceiver<(Topic, EntryId)>>>,
    /// Cancelled once the handlers drained: the acker flushes what is left and stops.
    ack_stop: CancellationToken,
    /// Entries being handled here, so that a reclaim of one of our own slow entries doesn't
    /// run it twice at once.
    inflight: Mutex<HashSet<InflightKey>>,
    /// Entries settled without a handler succeeding (dead-lettered or skipped): they don't
    /// count against `limit`.
    uncounted: AtomicU64,
    /// Signalled when `uncounted` grows, so that a reader at its limit reads again.
    uncounted_changed: Notify,
    /// Handlers ack what they handled themselves (atomically with their own writes).
    handler_acks: bool,
}

/// A delivery with the prefetch permit it holds until it is finished.
struct Job {
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
}

impl Runner {
    fn count_unhandled(&self) {
        self.uncounted.fetch_add(1, AtomicOrdering::SeqCst);
        self.uncounted_changed.notify_one();
    }

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
        Arc::new(Runner {
            bus,
            consumer: Arc::from(consumer),
            running: Arc::new(Semaphore::new(options.concurrency)),
            spec,
            options,
            handlers: handlers
                .into_iter()
                .map(|(t, h)| (t, Arc::from(h)))
                .collect(),
            stats,
            cancel,
            lanes: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            ack_tx,
            ack_rx: Mutex::new(Some(ack_rx)),
            ack_stop: CancellationToken::new(),
            inflight: Mutex::new(HashSet::new()),
            uncounted: AtomicU64::new(0),
            uncounted_changed: Notify::new(),
            handler_acks,
        })
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashSet<InflightKey>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
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

/// Identifies an entry being handled here.
#[derive(Debug, PartialEq, Eq, Hash)]
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

impl Runner {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Job>>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the subscription until cancelled, then drains.
pub(crate) async fn run(runner: Arc<Runner>) {
    let ack_rx = runner
        .ack_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let acker = ack_rx.map(|rx| tokio::spawn(ack_loop(runner.clone(), rx)));

    read_loop(&runner).await;

    // Drain: no new work starts (lanes and retries watch the token); running handlers finish.
    runner.tracker.close();
    let drained =
        tokio::time::timeout(runner.options.shutdown_timeout, runner.tracker.wait()).await;
    if drained.is_err() {
        tracing::warn!(
            group = %runner.spec.group,
            consumer = %runner.spec.consumer,
            "shutdown timeout: in-flight handlers abandoned; their entries stay pending"
        );
    }
    runner.ack_stop.cancel();
    if let Some(acker) = acker {
        let _ = acker.await;
    }
}

/// Reads, recovers and reclaims until cancelled.
async fn read_loop(runner: &Arc<Runner>) {
    let opts = &runner.options;
    let prefetch = Arc::new(Semaphore::new(opts.prefetch.max(opts.batch_size)));
    let mut failures: u32 = 0;
    let mut recovered = false;
    let mut claim_cursors: HashMap<Topic, EntryId> = HashMap::new();
    let mut next_claim = Instant::now() + opts.claim_interval;
    let mut next_cleanup = Instant::now();

    let mut taken: u64 = 0;

    while !runner.cancel.is_cancelled() {
        let want = match opts.limit {
            Some(limit) => {
                let counted = taken.saturating_sub(runner.uncounted.load(AtomicOrdering::SeqCst));
                let left = usize::try_from(limit.saturating_sub(counted)).unwrap_or(usize::MAX);
                opts.batch_size.min(left)
            }
            None => opts.batch_size,
        };
        if want == 0 {
            // The limit is reached: read again only if some entry gets dead-lettered or
            // skipped instead of handled.
            tokio::select! {
                _ = runner.cancel.cancelled() => break,
                _ = runner.uncounted_changed.notified() => continue,
            }
        }
        // Wait for room for a whole batch before reading one.
        let permits = tokio::select! {
            _ = runner.cancel.cancelled() => break,
            p = prefetch.clone().acquire_many_owned(want as u32) => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };

        let step = async {
            if !recovered {
                // Take back what this consumer (by its stable name) left pending last run.
                let mut out = Vec::new();
                for topic in &runner.spec.topics {
                    out.extend(
                        runner
                            .consumer
                            .recover_own(topic, want - out.len().min(want))
                            .await?,
                    );
                    if out.len() >= want {
                        break;
                    }
                }
                // One pass suffices: a consumer never holds more than its prefetch, and
                // anything beyond is reclaimed by `claim_idle` once idle.
                recovered = true;
                SubscriptionStats::add(&runner.stats.claimed, out.len() as u64);
                return Ok(out);
            }
            if Instant::now() >= next_claim {
                next_claim = Instant::now() + opts.claim_interval;
                let mut out = Vec::new();
                for topic in &runner.spec.topics {
                    let cursor = claim_cursors
                        .get(topic)
                        .map(String::as_str)
                        .unwrap_or("0-0");
                    let claimed = runner
                        .consumer
                        .claim_idle(topic, opts.claim_idle, cursor, opts.batch_size)
                        .await?;
                    if !claimed.deliveries.is_empty() {
                        tracing::info!(
                            topic = %topic,
                            group = %runner.spec.group,
                            count = claimed.deliveries.len(),
                            "reclaimed entries from idle consumers"
                        );
                        // More may be waiting: look again right away.
                        next_claim = Instant::now();
                    }
                    SubscriptionStats::add(&runner.stats.claimed, claimed.deliveries.len() as u64);
                    claim_cursors.insert(topic.clone(), claimed.next_cursor);
                    out.extend(claimed.deliveries);
                    if out.len() >= want {
                        break;
                    }
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            if let Some(idle) = opts.remove_idle_consumers_after {
                if Instant::now() >= next_cleanup {
                    next_cleanup = Instant::now() + Duration::from_secs(300);
                    for topic in &runner.spec.topics {
                        let removed = runner.consumer.remove_idle_consumers(topic, idle).await?;
                        if !removed.is_empty() {
                            tracing::info!(topic = %topic, ?removed, "removed idle consumers with nothing pending");
                        }
                    }
                }
            }
            let block = opts.block.min(
                next_claim
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
            runner.consumer.read(want, block).await
        };

        let result = tokio::select! {
            _ = runner.cancel.cancelled() => break,
            r = step => r,
        };

        match result {
            Ok(deliveries) => {
                failures = 0;
                taken += deliveries.len() as u64;
                let mut permits = permits;
                for delivery in deliveries {
                    // A claim can return a little more than a batch; wait for room then.
                    let permit = match permits.split(1) {
                        Some(p) => p,
                        None => match prefetch.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    dispatch(
                        runner,
                        Job {
                            delivery,
                            _permit: permit,
                        },
                    );
                }
            }
            Err(err) => {
                drop(permits);
                failures = failures.saturating_add(1);
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                let delay = opts.reconnect_backoff.delay(failures);
                if let Error::GroupMissing { .. } = err {
                    tracing::warn!(group = %runner.spec.group, error = %err, ?delay, "consumer group missing; recreating");
                } else {
                    tracing::warn!(group = %runner.spec.group, error = %err, ?delay, "transport error in consumer loop; backing off");
                }
                tokio::select! {
                    _ = runner.cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                if let Error::GroupMissing { .. } = err {
                    recreate_groups(runner).await;
                    claim_cursors.clear();
                }
            }
        }
    }
}

async fn recreate_groups(runner: &Runner) {
    for topic in &runner.spec.topics {
        if let Err(e) = runner
            .bus
            .transport()
            .ensure_group(topic, &runner.spec.group, runner.options.start_from)
            .await
        {
            tracing::warn!(topic = %topic, error = %e, "could not recreate consumer group");
        }
    }
}

/// The lane key of a delivery, or `None` to run it without ordering. Borrowed where it can
/// be: a lane's key is copied only when the lane is created.
fn lane_key<'a>(order: &OrderBy, delivery: &'a Delivery) -> Option<Cow<'a, str>> {
    match order {
        OrderBy::Unordered => None,
        OrderBy::Stream => Some(match &delivery.topic {
            Topic::Type(t) => Cow::Borrowed(t.as_str()),
            other => Cow::Owned(other.to_string()),
        }),
        OrderBy::Correlation => delivery
            .event
            .as_ref()
            .ok()
            .map(|e| Cow::Borrowed(e.correlation_id.as_deref().unwrap_or(e.event_id.as_str()))),
        OrderBy::Key(f) => delivery
            .event
            .as_ref()
            .ok()
            .and_then(|e| f(e))
            .map(Cow::Owned),
    }
}

/// Hands a job to its lane (or straight to a task when unordered).
fn dispatch(runner: &Arc<Runner>, job: Job) {
    let inflight = runner.inflight_key(&job.delivery.topic, &job.delivery.entry_id);
    if !runner.inflight().insert(inflight) {
        // Already being handled here (a reclaim of our own slow entry): that run acks it.
        return;
    }
    let Some(key) = lane_key(&runner.options.order_by, &job.delivery) else {
        let r = runner.clone();
        runner.tracker.spawn(async move {
            if let Ok(_running) = r.running.clone().acquire_owned().await {
                process(&r, job).await;
            }
        });
        return;
    };
    let key = {
        let mut lanes = runner.lanes();
        if let Some(queue) = lanes.get_mut(key.as_ref()) {
            queue.push_back(job);
            return;
        }
        let key = key.into_owned();
        lanes.insert(key.clone(), VecDeque::from([job]));
        key
    };
    let r = runner.clone();
    runner.tracker.spawn(async move { run_lane(r, key).await });
}

/// Handles a lane's jobs in order until it is empty, then removes it.
async fn run_lane(runner: Arc<Runner>, key: String) {
    loop {
        let job = {
            let mut lanes = runner.lanes();
            let Some(queue) = lanes.get_mut(&key) else {
                return;
            };
            if runner.cancel.is_cancelled() {
                // Shutting down: what hasn't started stays pending for a later delivery.
                lanes.remove(&key);
                return;
            }
            match queue.pop_front() {
                Some(job) => job,
                None => {
                    lanes.remove(&key);
                    return;
                }
            }
        };
        let Ok(_running) = runner.running.clone().acquire_owned().await else {
            return;
        };
        process(&runner, job).await;
    }
}

/// Handles one delivery to the end: ack, dead letter, or left pending at shutdown.
async fn process(runner: &Arc<Runner>, job: Job) {
    let key = runner.inflight_key(&job.delivery.topic, &job.delivery.entry_id);
    handle(runner, job).await;
    runner.inflight().remove(&key);
}

async fn handle(runner: &Arc<Runner>, job: Job) {
    let Job { delivery, _permit } = job;
    let Delivery {
        topic,
        entry_id,
        mut delivery_count,
        event,
    } = delivery;

    let event = match event {
        Ok(event) => Arc::new(event),
        Err(malformed) => {
            tracing::warn!(topic = %topic, id = %entry_id, reason = %malformed, "malformed entry; dead-lettering");
            dead_letter(
                runner,
                &topic,
                &entry_id,
                format!("malformed entry: {malformed}"),
                delivery_count,
            )
            .await;
            return;
        }
    };
    let Some(handlers) = runner.handlers.get(&topic).cloned() else {
        SubscriptionStats::add(&runner.stats.skipped, 1);
        runner.count_unhandled();
        ack(runner, topic, entry_id);
        return;
    };

    let mut done = vec![false; handlers.len()];
    loop {
        let info = Arc::new(DeliveryInfo {
            topic: topic.clone(),
            entry_id: entry_id.clone(),
            delivery_count,
            group: runner.spec.group.clone(),
            consumer: runner.spec.consumer.clone(),
        });
        let ctx = Context::new(runner.bus.clone(), event.clone(), info);
        let mut failure: Option<HandlerError> = None;
        for (i, handler) in handlers.iter().enumerate() {
            if done[i] {
                continue;
            }
            match call(runner, handler, event.clone(), ctx.clone()).await {
                Ok(()) => done[i] = true,
                Err(e) if e.is_abandon() => {
                    failure = Some(e);
                    break;
                }
                Err(e) => {
                    SubscriptionStats::add(&runner.stats.failed_attempts, 1);
                    tracing::warn!(
                        topic = %topic, id = %entry_id, event_type = %event.event_type,
                        attempt = delivery_count, error = %e, "handler failed"
                    );
                    let permanent = failure.as_ref().is_some_and(HandlerError::is_permanent)
                        || e.is_permanent();
                    failure = Some(if permanent { e.into_permanent() } else { e });
                }
            }
        }
        let Some(failure) = failure else {
            SubscriptionStats::add(&runner.stats.handled, 1);
            if runner.handler_acks {
                SubscriptionStats::add(&runner.stats.acked, 1);
            } else {
                ack(runner, topic, entry_id);
            }
            return;
        };
        if failure.is_abandon() {
            // Given back: stays pending, delivered again after a restart or a reclaim.
            runner.count_unhandled();
            return;
        }
        if failure.is_permanent() || delivery_count >= runner.options.max_deliveries {
            dead_letter(runner, &topic, &entry_id, failure.message(), delivery_count).await;
            return;
        }
        let delay = runner.options.retry_backoff.delay(delivery_count);
        tokio::select! {
            _ = runner.cancel.cancelled() => return, // stays pending; redelivered later
            _ = tokio::time::sleep(delay) => {}
        }
        match runner.consumer.redeliver(&topic, &entry_id).await {
            Ok(Some(again)) => delivery_count = again.delivery_count,
            Ok(None) => return, // acknowledged or claimed elsewhere meanwhile
            Err(e) => {
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                tracing::warn!(topic = %topic, id = %entry_id, error = %e, "cannot redeliver for retry; left pending for reclaim");
                return;
            }
        }
    }
}

/// Calls one handler, turning a panic or a timeout into a failure.
async fn call(
    runner: &Runner,
    handler: &ErasedHandler,
    event: Arc<Envelope<Value>>,
    ctx: Context,
) -> Result<(), HandlerError> {
    let limit = runner.options.handler_timeout;
    let outcome = crate::panic::catch(|| {
        let fut = handler(event, ctx);
        async move {
            match limit {
                Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                    Err(HandlerError::retryable(format!(
                        "handler timed out after {limit:?}"
                    )))
                }),
                None => fut.await,
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|panic| {
        Err(HandlerError::retryable(format!(
            "handler panicked: {panic}"
        )))
    })
}

fn ack(runner: &Runner, topic: Topic, id: EntryId) {
    // The acker outlives every task (it stops after the tracker drained), so a send only
    // fails during teardown; the entry then stays pending and is redelivered.
    let _ = runner.ack_tx.send((topic, id));
}

async fn dead_letter(runner: &Runner, topic: &Topic, id: &str, error: String, delivery_count: u32) {
    runner.count_unhandled();
    let reason = DeadLetterReason {
        error,
        delivery_count,
        consumer: runner.spec.consumer.clone(),
    };
    for attempt in 1..=DEAD_LETTER_ATTEMPTS {
        match runner.consumer.dead_letter(topic, id, &reason).await {
            Ok(()) => {
                SubscriptionStats::add(&runner.stats.dead_lettered, 1);
                SubscriptionStats::add(&runner.stats.acked, 1);
                tracing::warn!(topic = %topic, id, error = %reason.error, deliveries = delivery_count, "entry dead-lettered");
                return;
            }
            Err(e) => {
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                tracing::warn!(topic = %topic, id, error = %e, attempt, "dead-lettering failed");
                if attempt == DEAD_LETTER_ATTEMPTS || runner.cancel.is_cancelled() {
                    break;
                }
                tokio::time::sleep(runner.options.reconnect_backoff.delay(attempt)).await;
            }
        }
    }
    // Left pending: it will be redelivered (past max_deliveries) and dead-lettered then.
}

/// Collects acknowledgements and flushes them in batches: whatever accumulated while the
/// previous flush was in flight goes in the next one, so batches grow with load and a lone
/// ack goes out at once.
async fn ack_loop(runner: Arc<Runner>, mut rx: mpsc::UnboundedReceiver<(Topic, EntryId)>) {
    let mut pending = AckBatch::default();
    let mut failures: u32 = 0;
    loop {
        if pending.is_empty() {
            tokio::select! {
                biased;
                item = rx.recv() => match item {
                    Some(item) => pending.push(item),
                    None => return,
                },
                // Handlers drained (or were abandoned): flush what is left, then stop.
                _ = runner.ack_stop.cancelled() => {
                    rx.close();
                    while let Ok(item) = rx.try_recv() {
                        pending.push(item);
                    }
                    if pending.is_empty() {
                        return;
                    }
                }
            }
        }
        while pending.len < MAX_ACK_BATCH {
            match rx.try_recv() {
                Ok(item) => pending.push(item),
                Err(_) => break,
            }
        }
        match runner.consumer.ack(&pending.by_topic).await {
            Ok(()) => {
                SubscriptionStats::add(&runner.stats.acked, pending.len as u64);
                pending.clear();
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                let delay = runner.options.reconnect_backoff.delay(failures);
                tracing::warn!(error = %e, count = pending.len, ?delay, "ack failed; retrying");
                if runner.ack_stop.is_cancelled() && failures > DEAD_LETTER_ATTEMPTS {
                    tracing::warn!(
                        count = pending.len,
                        "giving up acks at shutdown; entries will be redelivered"
                    );
                    return;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Acks waiting for a flush, grouped by topic as they arrive.
#[derive(Default)]
struct AckBatch {
    by_topic: Vec<(Topic, Vec<EntryId>)>,
    len: usize,
}

impl AckBatch {
    fn push(&mut self, (topic, id): (Topic, EntryId)) {
        match self.by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ids)) => ids.push(id),
            None => self.by_topic.push((topic, vec![id])),
        }
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.by_topic.clear();
        self.len = 0;
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

    #[test]
    fn acks_group_by_topic_in_arrival_order() {
        let mut batch = AckBatch::default();
        batch.push((Topic::of_type("A"), "1-0".into()));
        batch.push((Topic::All, "2-0".into()));
        batch.push((Topic::of_type("A"), "3-0".into()));
        assert_eq!(batch.len, 3);
        assert_eq!(
            batch.by_topic,
            vec![
                (
                    Topic::of_type("A"),
                    vec!["1-0".to_string(), "3-0".to_string()]
                ),
                (Topic::All, vec!["2-0".to_string()]),
            ]
        );
        batch.clear();
        assert!(batch.is_empty());
    }
}
