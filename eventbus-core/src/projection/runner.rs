//! [`ProjectionRunner`]: runs a projection as its own consumer group on the event bus's
//! consumer loop, committing each event's writes with its acknowledgement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::SubscriptionStats;
use crate::bus::{default_consumer_name, Context, EventBus, Subscription, SubscriptionOptions};
use crate::envelope::Envelope;
use crate::error::{Error, HandlerError, Result};
use crate::projection::{
    projection_group, Commit, CommitTarget, Committed, Projection, ReadModelStore, ReadModels,
    RebuildStep,
};
use crate::transport::{StartFrom, Topic};

/// How often a rebuild checks whether it caught up.
const REBUILD_POLL: Duration = Duration::from_millis(50);

/// How long a projection's lease lasts unless renewed (renewed every third of it).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Runs a [`Projection`]: reads its event types as the consumer group
/// `{service}-projection-{name}` (from the beginning of the streams when the group is new)
/// and commits each event's writes to the [`ReadModels`]' store atomically with the entry's
/// acknowledgement.
///
/// It runs on the event bus's consumer loop, so it has the same fault behaviour: batched
/// reads, retries with backoff, dead letters for malformed entries and for events that keep
/// failing, reclaiming of entries crashed consumers left pending, recreating a lost group,
/// reconnecting with backoff, and a graceful shutdown.
///
/// Entries are applied one at a time, in the order they are read: stream order within an
/// event type; across types, a read returns each stream's new entries in the order the
/// projection lists its event types (for `#[projection]`: first mention). So an event is
/// applied after an earlier event of another type unless a backlog of more than a read batch
/// (`batch_size`) separates them: keep the writes of different event types commuting where
/// that matters (e.g. don't set one field from two event types).
///
/// The store must belong to the bus's transport (e.g. `MemoryTransport::read_models`, or
/// `RedisReadModels::new(&transport)`): it acknowledges the entries.
///
/// # One active instance per group
///
/// Run the projection on as many instances as you like: one of them is active, the others
/// stand by. The active one holds the projection's lease in the store (on Redis a key with a
/// time to live, [`lease_ttl`](Self::lease_ttl), renewed every third of it) and is the only
/// consumer of the group, so the events of one entity are applied in the order a single
/// instance applies them — never `OrderCreated` on one instance overwriting `OrderShipped`
/// applied concurrently on another. Every commit carries the lease's token and writes
/// nothing unless the lease is still held with it (fencing: an instance paused past its
/// lease, whose successor took over, commits nothing), and so are its reads where the store
/// supports it ([`ReadModelStore::fence`]: on Redis entries are taken from the group only in
/// a script that checks the lease). A standby checks the lease every
/// third of its time to live and takes over when it is released (graceful shutdown) or
/// lapses (the active instance died); it first adopts every entry its predecessor left
/// pending, so those are applied before anything newer, and in the order the predecessor
/// would have applied them (an instance holds at most one read batch: `prefetch` is capped
/// at `batch_size`; the successor recovers them stream by stream, as a batch is read).
///
/// # Example
///
/// A projection started after events were published catches up from the start of the
/// streams:
///
/// ```
/// use std::time::Duration;
/// use eventbus_core::projection::{ProjectionRunner, ReadModel};
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::{event, projection, EventBus, ReadModels};
///
/// #[event]
/// pub struct OrderCreated { pub order_id: String }
///
/// #[projection(hash = "orders:status:{order_id}")]
/// pub struct OrderStatus {
///     #[set(from = OrderCreated)] pub order_id: String,
///     #[set(OrderCreated = "created")] pub status: String,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = MemoryTransport::new();
/// let models = ReadModels::new(transport.read_models());
/// let bus = EventBus::new(transport, "order-service");
/// for id in ["ord_1", "ord_2"] {
///     bus.publish(OrderCreated { order_id: id.into() }).await?;
/// }
///
/// let runner = ProjectionRunner::new(&bus, &models, OrderStatus::projection())
///     .lease_ttl(Duration::from_secs(10));
/// assert_eq!(runner.group(), "order-service-projection-OrderStatus");
/// let running = runner.start().await?;
/// while running.stats().acked() < 2 {
///     tokio::time::sleep(Duration::from_millis(5)).await;
/// }
/// let second = OrderStatus::load(&models, "ord_2").await?;
/// assert_eq!(second.map(|s| s.status).as_deref(), Some("created"));
/// running.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct ProjectionRunner {
    bus: EventBus,
    models: ReadModels,
    projection: Arc<dyn Projection>,
    options: SubscriptionOptions,
    lease_ttl: Duration,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("options", &self.options)
            .finish()
    }
}

impl ProjectionRunner {
    /// A runner of `projection` for the bus's service, writing through `models`.
    pub fn new(bus: &EventBus, models: &ReadModels, projection: impl Projection) -> Self {
        Self::from_arc(bus, models, Arc::new(projection))
    }

    /// A runner of a shared projection.
    pub fn from_arc(bus: &EventBus, models: &ReadModels, projection: Arc<dyn Projection>) -> Self {
        let mut options = SubscriptionOptions::for_service(bus.service());
        options.group = projection_group(bus.service(), projection.name());
        options.consumer = default_consumer_name(bus.service());
        options.start_from = StartFrom::Beginning;
        // One lane: entries are applied one at a time, in the order they are read.
        options.order_by = crate::OrderBy::Key(Arc::new(|_| Some(String::new())));
        ProjectionRunner {
            bus: bus.clone(),
            models: models.clone(),
            projection,
            options,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }

    /// How long the lease of the active instance lasts unless renewed (default
    /// [`DEFAULT_LEASE_TTL`]): how long standbys wait after the active instance died. It is
    /// renewed, and standbys look at it, every third of that.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Changes the consumer options (batch size, retries, claim idle time, consumer name…).
    /// Keep `order_by` as it is (one lane) unless the projection's writes commute.
    pub fn configure(mut self, f: impl FnOnce(&mut SubscriptionOptions)) -> Self {
        f(&mut self.options);
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        self.projection.name()
    }

    /// The consumer group, `{service}-projection-{name}` by default.
    pub fn group(&self) -> &str {
        &self.options.group
    }

    /// The streams it reads.
    pub fn topics(&self) -> Vec<Topic> {
        self.projection
            .event_types()
            .into_iter()
            .map(Topic::of_type)
            .collect()
    }

    fn subscription(
        &self,
        options: SubscriptionOptions,
        target: CommitTarget,
        lease: Option<Lease>,
    ) -> Result<crate::SubscriptionBuilder> {
        let event_types = self.projection.event_types();
        if event_types.is_empty() {
            return Err(Error::Config(format!(
                "projection `{}` reads no event type",
                self.projection.name()
            )));
        }
        let mut builder = self.bus.subscribe().options(options).handler_acks();
        for event_type in event_types {
            let projection = self.projection.clone();
            let store = self.models.store().clone();
            let lease = lease.clone();
            builder =
                builder.on_raw(event_type, move |event: Envelope<Value>, ctx: Context| {
                    let projection = projection.clone();
                    let store = store.clone();
                    let lease = lease.clone();
                    async move {
                        project(&*projection, &*store, &event, &ctx, target, lease.as_ref()).await
                    }
                });
        }
        Ok(builder)
    }

    /// Creates the group (if new) and starts projecting: at once if no other instance holds
    /// the projection's lease, otherwise as a standby that takes over when the lease is
    /// released or lapses (see [One active instance per group](Self#one-active-instance-per-group)).
    pub async fn start(mut self) -> Result<RunningProjection> {
        // A successor recovers what this instance leaves pending stream by stream, which is
        // the order of one read batch, not of several: never hold more than a batch.
        self.options.prefetch = self.options.prefetch.min(self.options.batch_size);
        let token = format!("{}:{}", self.options.consumer, crate::envelope::new_id());
        let lease = Lease {
            token,
            lost: Arc::new(Notify::new()),
        };
        // Fails fast on configuration errors (no event type) and on a store that can't be
        // reached; then creates the groups so that lag shows them while standing by.
        self.subscription(self.options.clone(), CommitTarget::Live, None)?;
        for topic in self.topics() {
            self.bus
                .transport()
                .ensure_group(&topic, &self.options.group, self.options.start_from)
                .await?;
        }
        let stats = Arc::new(SubscriptionStats::default());
        let active = Arc::new(AtomicBool::new(false));
        let store = self.models.store().clone();
        let name = self.projection.name().to_owned();
        let group = self.options.group.clone();
        let first = if store.lease(&name, &lease.token, self.lease_ttl).await? {
            match self.activate(&lease, &stats).await {
                Ok(subscription) => Some(subscription),
                Err(e) => {
                    // Don't keep standbys waiting for a lease nobody uses.
                    store.release_lease(&name, &lease.token).await.ok();
                    return Err(e);
                }
            }
        } else {
            tracing::info!(projection = %name, "standing by: another instance is active");
            None
        };
        active.store(first.is_some(), Ordering::SeqCst);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(
            self,
            lease,
            stats.clone(),
            active.clone(),
            cancel.clone(),
            first,
        ));
        Ok(RunningProjection {
            name,
            group,
            stats,
            active,
            cancel,
            task: Some(task),
        })
    }

    /// Starts consuming as the lease holder: adopts what earlier holders left pending, then
    /// starts the subscription.
    async fn activate(
        &self,
        lease: &Lease,
        stats: &Arc<SubscriptionStats>,
    ) -> Result<Subscription> {
        let store = self.models.store().clone();
        let adopted = store
            .adopt_pending(&self.options.group, &self.options.consumer, &self.topics())
            .await?;
        tracing::info!(
            projection = %self.projection.name(),
            consumer = %self.options.consumer,
            adopted,
            "active: holding the projection's lease"
        );
        let fence: crate::bus::WrapConsumer = {
            let store = store.clone();
            let name = self.projection.name().to_owned();
            let token = lease.token.clone();
            Arc::new(move |consumer, spec| {
                let (store, name, token) = (store.clone(), name.clone(), token.clone());
                Box::pin(async move { store.fence(consumer, &spec, &name, &token).await })
            })
        };
        self.subscription(
            self.options.clone(),
            CommitTarget::Live,
            Some(lease.clone()),
        )?
        .stats(stats.clone())
        .wrap_consumer(fence)
        .start()
        .await
    }

    /// Rebuilds the read model from the start of the streams, then switches readers over.
    ///
    /// Replays every entry still in the streams into shadow keys, as the group
    /// `{group}-rebuild`, while the live projection (if running) keeps the live keys
    /// current. Once the rebuild has caught up — nothing left to read or pending, and the
    /// live projection has applied nothing the rebuild hasn't — the store replaces the live
    /// keys with the rebuilt ones in one atomic step (on Redis one script: readers, Python
    /// ones included, see the old model until then and the new one after, never a mix), and
    /// the live projection skips the entries the rebuild covered. Returns once switched.
    ///
    /// Only what the streams still hold is replayed: entries trimmed away are gone.
    pub async fn rebuild(&self) -> Result<()> {
        let store = self.models.store();
        let name = self.projection.name().to_owned();
        let topics = self.topics();
        let mut options = self.options.clone();
        options.group = format!("{}-rebuild", self.options.group);
        options.consumer = format!("{}-rebuild", self.options.consumer);
        options.start_from = StartFrom::Beginning;
        store.begin_rebuild(&name, &options.group, &topics).await?;
        loop {
            let subscription = self
                .subscription(options.clone(), CommitTarget::Rebuild, None)?
                .start()
                .await?;
            while !self.caught_up(&options.group, &topics).await? {
                tokio::time::sleep(REBUILD_POLL).await;
            }
            // Stopped before switching, so it can't recreate its group after the switch.
            subscription.shutdown().await?;
            match store.finish_rebuild(&name, &options.group, &topics).await? {
                RebuildStep::Swapped => {
                    tracing::info!(projection = %name, "rebuild finished; readers switched over");
                    return Ok(());
                }
                RebuildStep::Behind => tokio::time::sleep(REBUILD_POLL).await,
            }
        }
    }

    async fn caught_up(&self, group: &str, topics: &[Topic]) -> Result<bool> {
        let lag = self.bus.transport().lag(Some(group)).await?;
        // Every row of a topic (one per partition) must be caught up.
        Ok(topics.iter().all(|topic| {
            let mut rows = lag.iter().filter(|l| &l.topic == topic).peekable();
            rows.peek().is_some() && rows.all(|l| l.lag == Some(0) && l.pending == 0)
        }))
    }
}

/// Applies one event and commits its writes with the acknowledgement.
async fn project(
    projection: &dyn Projection,
    store: &dyn ReadModelStore,
    event: &Envelope<Value>,
    ctx: &Context,
    target: CommitTarget,
    lease: Option<&Lease>,
) -> std::result::Result<(), HandlerError> {
    let ops = projection.apply(event)?;
    let delivery = ctx.delivery();
    let commit = Commit {
        projection: projection.name().to_owned(),
        group: delivery.group.clone(),
        consumer: delivery.consumer.clone(),
        topic: delivery.topic.clone(),
        entry_id: delivery.entry_id.clone(),
        ops,
        target,
        lease: lease.map(|l| l.token.clone()),
    };
    let span = crate::telemetry::spans::internal("projection", projection.name());
    match store.commit(commit).instrument(span).await {
        Ok(Committed::LeaseLost) => {
            // Another instance may be active now: stop, leaving the entry pending for it.
            if let Some(lease) = lease {
                lease.lost.notify_one();
            }
            Err(HandlerError::abandon("the projection's lease was lost"))
        }
        Ok(outcome) => {
            if outcome != Committed::Applied {
                tracing::debug!(
                    projection = projection.name(), id = %delivery.entry_id, ?outcome,
                    "entry not applied"
                );
            }
            Ok(())
        }
        Err(e) if e.is_retryable() => Err(HandlerError::from(e)),
        Err(e) => Err(HandlerError::from(e).into_permanent()),
    }
}

/// The lease an active instance commits under.
#[derive(Clone)]
struct Lease {
    token: String,
    /// Notified when a commit found the lease lost.
    lost: Arc<Notify>,
}

/// Keeps the lease of an active instance renewed, or waits for it as a standby, switching
/// the subscription on and off; on cancellation stops it and releases the lease.
async fn supervise(
    runner: ProjectionRunner,
    lease: Lease,
    stats: Arc<SubscriptionStats>,
    active: Arc<AtomicBool>,
    cancel: CancellationToken,
    mut current: Option<Subscription>,
) -> Result<()> {
    let store = runner.models.store().clone();
    let name = runner.projection.name().to_owned();
    let ttl = runner.lease_ttl;
    let every = ttl / 3;
    let mut renewed = Instant::now();
    // A rebuild an operator asked for, running beside the live projection; whether a
    // failure to check for one was logged as a warning yet (a user without the permission
    // would log one every round).
    let mut rebuilding: Option<JoinHandle<()>> = None;
    let mut warned = false;
    loop {
        let lost = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = lease.lost.notified(), if current.is_some() => true,
            _ = tokio::time::sleep(every) => false,
        };
        let held = if lost {
            false
        } else {
            // The lease runs from (at the latest) when it was asked for.
            let asked = Instant::now();
            match store.lease(&name, &lease.token, ttl).await {
                Ok(held) => {
                    if held {
                        renewed = asked;
                    }
                    held
                }
                Err(e) => {
                    tracing::warn!(projection = %name, error = %e, "cannot renew or take the lease");
                    // Still ours while it can't have lapsed: stop before it may have.
                    current.is_some() && renewed.elapsed() + every < ttl
                }
            }
        };
        match (held, current.is_some()) {
            (true, false) => match runner.activate(&lease, &stats).await {
                Ok(subscription) => {
                    current = Some(subscription);
                    active.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::warn!(projection = %name, error = %e, "cannot start after taking the lease");
                    let _ = store.release_lease(&name, &lease.token).await;
                }
            },
            (false, true) => {
                tracing::warn!(projection = %name, "lease lost: standing by");
                active.store(false, Ordering::SeqCst);
                if let Some(subscription) = current.take() {
                    subscription.shutdown().await?;
                }
            }
            _ => {}
        }
        if current.is_some() && rebuilding.as_ref().is_none_or(|r| r.is_finished()) {
            rebuilding = requested_rebuild(&runner, &*store, &name, &mut warned).await;
        }
    }
    if let Some(rebuild) = rebuilding {
        rebuild.abort(); // the next rebuild starts over (`begin_rebuild`)
    }
    active.store(false, Ordering::SeqCst);
    if let Some(subscription) = current.take() {
        subscription.shutdown().await?;
        store.release_lease(&name, &lease.token).await?;
    }
    Ok(())
}

/// Starts the rebuild an operator asked for (`ReadModelStore::take_rebuild_request`), if
/// any, on a task of its own beside the live projection.
async fn requested_rebuild(
    runner: &ProjectionRunner,
    store: &dyn ReadModelStore,
    name: &str,
    warned: &mut bool,
) -> Option<JoinHandle<()>> {
    match store.take_rebuild_request(name).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) if !*warned => {
            *warned = true;
            tracing::warn!(projection = %name, error = %e, "cannot check for a rebuild request (logged once)");
            return None;
        }
        Err(e) => {
            tracing::debug!(projection = %name, error = %e, "cannot check for a rebuild request");
            return None;
        }
    }
    tracing::info!(projection = %name, "rebuilding, as an operator asked");
    let rebuild = ProjectionRunner {
        bus: runner.bus.clone(),
        models: runner.models.clone(),
        projection: runner.projection.clone(),
        options: runner.options.clone(),
        lease_ttl: runner.lease_ttl,
    };
    let name = name.to_owned();
    Some(tokio::spawn(async move {
        if let Err(e) = rebuild.rebuild().await {
            tracing::warn!(projection = %name, error = %e, "the rebuild an operator asked for failed");
        }
    }))
}

/// A running projection instance (active or standing by); stop it with
/// [`shutdown`](Self::shutdown). Dropping it stops it too, in the background.
#[derive(Debug)]
pub struct RunningProjection {
    name: String,
    group: String,
    stats: Arc<SubscriptionStats>,
    active: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<()>>>,
}

impl RunningProjection {
    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its consumer group (what `eventbus lag` lists).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Counters of its consumer: `handled` counts committed events (over every period this
    /// instance was active).
    pub fn stats(&self) -> &SubscriptionStats {
        &self.stats
    }

    /// Whether this instance holds the lease and applies events (`false`: standing by).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Stops reading, lets in-flight commits finish, and releases the lease so that a
    /// standby takes over at once.
    pub async fn shutdown(mut self) -> Result<()> {
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Config(format!("projection task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningProjection {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
