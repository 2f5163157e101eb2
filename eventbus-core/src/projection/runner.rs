//! [`ProjectionRunner`]: runs a projection as its own consumer group on the event bus's
//! consumer loop, committing each event's writes with its acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

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
pub struct ProjectionRunner {
    bus: EventBus,
    models: ReadModels,
    projection: Arc<dyn Projection>,
    options: SubscriptionOptions,
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
        }
    }

    /// Changes the consumer options (batch size, retries, claim idle time, consumer name…).
    /// Keep `order_by` as it is (one lane) unless the projection's writes commute.
    pub fn configure(mut self, f: impl FnOnce(&mut SubscriptionOptions)) -> Self {
        f(&mut self.options);
        self
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
            builder = builder.on_raw(event_type, move |event: Envelope<Value>, ctx: Context| {
                let projection = projection.clone();
                let store = store.clone();
                async move { project(&*projection, &*store, &event, &ctx, target).await }
            });
        }
        Ok(builder)
    }

    /// Creates the group (if new) and starts projecting.
    pub async fn start(self) -> Result<RunningProjection> {
        let subscription = self
            .subscription(self.options.clone(), CommitTarget::Live)?
            .start()
            .await?;
        Ok(RunningProjection {
            name: self.projection.name().to_owned(),
            group: self.options.group.clone(),
            subscription,
        })
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
                .subscription(options.clone(), CommitTarget::Rebuild)?
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
        Ok(topics.iter().all(|topic| {
            lag.iter()
                .any(|l| &l.topic == topic && l.lag == Some(0) && l.pending == 0)
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
    };
    match store.commit(commit).await {
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

/// A running projection; stop it with [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct RunningProjection {
    name: String,
    group: String,
    subscription: Subscription,
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

    /// Counters of its consumer: `handled` counts committed events.
    pub fn stats(&self) -> &SubscriptionStats {
        self.subscription.stats()
    }

    /// Stops reading and lets in-flight commits finish.
    pub async fn shutdown(self) -> Result<()> {
        self.subscription.shutdown().await.map(drop)
    }
}
