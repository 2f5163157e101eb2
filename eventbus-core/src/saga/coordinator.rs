//! [`SagaCoordinator`]: starts sagas and drives them from their participants' replies and
//! from their deadlines.

use crate::telemetry;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{EventBus, OrderBy, Subscription, SubscriptionOptions};
use crate::envelope::{new_id, now_seconds, Envelope};
use crate::error::{Error, HandlerError, Result};
use crate::saga::definition::SagaDefinition;
use crate::saga::state::{OutgoingEvent, SagaInstance, SagaState, SagaStatus};
use crate::saga::store::SagaStore;
use crate::saga::transition::{self, Transition};
use crate::transport::StartFrom;

/// Compare-and-set attempts on one reply before the delivery is retried later.
const MAX_CAS_ATTEMPTS: u32 = 16;

/// Tuning of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// How often this instance looks for due deadlines.
    pub timeout_poll: Duration,
    /// How long a claimed deadline is this instance's before others may claim it again
    /// (if this instance dies before applying it).
    pub timeout_lease: Duration,
    /// How long to await a compensation confirmation, for steps without a timeout, before
    /// publishing the compensation again.
    pub compensation_retry: Duration,
    /// Deadlines claimed per poll, at most.
    pub timeout_batch: usize,
    /// How often this instance counts the sagas in each state for the `eventbus_sagas`
    /// gauge (`None`: never). On a cluster a count scans the index shards of every master.
    pub state_gauge_interval: Option<Duration>,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            timeout_poll: Duration::from_millis(250),
            timeout_lease: Duration::from_secs(30),
            compensation_retry: Duration::from_secs(30),
            timeout_batch: 100,
            state_gauge_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// Counters of a coordinator instance.
#[derive(Debug, Default)]
pub struct CoordinatorStats {
    started: AtomicU64,
    transitions: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    ignored: AtomicU64,
    conflicts: AtomicU64,
    timeouts: AtomicU64,
    republished: AtomicU64,
}

macro_rules! getters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        impl CoordinatorStats {
            $(
                #[doc = $doc]
                pub fn $name(&self) -> u64 {
                    self.$name.load(Ordering::Relaxed)
                }
            )*
        }
    };
}

getters! {
    started: "Sagas this instance started.",
    transitions: "Transitions this instance stored (replies and timeouts).",
    completed: "Sagas this instance completed.",
    failed: "Sagas this instance ended as failed (after compensating).",
    ignored: "Replies and timeouts ignored: duplicates, late replies, finished or unknown sagas.",
    conflicts: "Compare-and-set conflicts (another instance changed the saga first).",
    timeouts: "Step and compensation timeouts this instance applied.",
    republished: "Outboxes published again for a redelivered reply.",
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Inner {
    bus: EventBus,
    store: Arc<dyn SagaStore>,
    sagas: HashMap<String, SagaDefinition>,
    options: CoordinatorOptions,
    stats: CoordinatorStats,
}

/// Builds a [`SagaCoordinator`]; see [`SagaCoordinator::builder`].
pub struct SagaCoordinatorBuilder {
    bus: EventBus,
    store: Arc<dyn SagaStore>,
    sagas: Vec<SagaDefinition>,
    options: CoordinatorOptions,
    configure: Vec<crate::saga::Configure>,
}

impl std::fmt::Debug for SagaCoordinatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaCoordinatorBuilder")
            .field("service", &self.bus.service())
            .field("sagas", &self.sagas)
            .field("options", &self.options)
            .finish()
    }
}

impl SagaCoordinatorBuilder {
    /// Registers a saga definition.
    pub fn saga<D>(mut self, definition: &SagaDefinition<D>) -> Self {
        self.sagas.push(definition.erased());
        self
    }

    /// Replaces the coordinator options.
    pub fn options(mut self, options: CoordinatorOptions) -> Self {
        self.options = options;
        self
    }

    /// How often to look for due deadlines.
    pub fn timeout_poll(mut self, every: Duration) -> Self {
        self.options.timeout_poll = every;
        self
    }

    /// This instance's consumer name in the coordinators' group; give each instance its own.
    pub fn consumer_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.configure_subscription(move |o| o.consumer = name)
    }

    /// Tunes the subscription that reads the replies (group, concurrency, reclaiming…).
    pub fn configure_subscription(
        mut self,
        f: impl FnOnce(&mut SubscriptionOptions) + Send + 'static,
    ) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Validates the definitions, subscribes to every reply event type in the service's
    /// group (`{service}-consumers`, shared by all instances), and starts polling deadlines.
    ///
    /// A new group starts at the beginning of the reply streams, so that replies written
    /// before the first coordinator ever ran are not lost (older ones find no saga, or a
    /// finished one, and are ignored); override with
    /// [`configure_subscription`](Self::configure_subscription) and `start_from`.
    pub async fn start(self) -> Result<SagaCoordinator> {
        let mut sagas = HashMap::new();
        let mut replies = BTreeSet::new();
        for definition in self.sagas {
            definition.validate()?;
            for step in definition.steps() {
                replies.insert(step.success_event().to_string());
                replies.insert(step.failure_event().to_string());
                if let Some(confirmed) = step.compensated_event() {
                    replies.insert(confirmed.to_string());
                }
            }
            let name = definition.name().to_string();
            if sagas.insert(name.clone(), definition).is_some() {
                return Err(Error::Config(format!("saga `{name}` is registered twice")));
            }
        }
        if sagas.is_empty() {
            return Err(Error::Config(
                "a coordinator needs at least one saga".into(),
            ));
        }
        let inner = Arc::new(Inner {
            bus: self.bus.clone(),
            store: self.store,
            sagas,
            options: self.options,
            stats: CoordinatorStats::default(),
        });
        let mut builder = self
            .bus
            .subscribe()
            .start_from(StartFrom::Beginning)
            .order_by(OrderBy::Unordered);
        for configure in self.configure {
            builder = builder.configure(configure);
        }
        for event_type in replies {
            let inner = inner.clone();
            builder = builder.on_raw(event_type, move |event: Envelope<Value>| {
                let inner = inner.clone();
                async move { inner.on_reply(event).await }
            });
        }
        let subscription = builder.start().await?;
        let cancel = CancellationToken::new();
        let poller = tokio::spawn(poll_deadlines(inner.clone(), cancel.clone()));
        if let Some(every) = inner.options.state_gauge_interval {
            tokio::spawn(count_states(inner.clone(), every, cancel.clone()));
        }
        Ok(SagaCoordinator {
            inner,
            subscription: Some(subscription),
            poller: Some(poller),
            cancel,
        })
    }
}

/// Runs sagas: stores each one's state, publishes its steps' commands, applies replies and
/// timeouts as compare-and-set transitions, and compensates completed steps in reverse order
/// when a step fails or times out.
///
/// All state is in the [`SagaStore`]: run several instances (each with its own
/// [`consumer_name`](SagaCoordinatorBuilder::consumer_name)) and any of them carries on any
/// saga; replies are shared through the service's consumer group, deadlines are claimed by
/// one instance at a time.
///
/// ```
/// use eventbus_core::event;
/// use eventbus_core::saga::{MemorySagaStore, SagaCoordinator, SagaDefinition, SagaStatus, SagaStep};
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::EventBus;
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// struct Order { order_id: String }
///
/// #[event(name = "InventoryReserveCommand")] pub struct ReserveInventory { pub order_id: String }
/// #[event] pub struct InventoryReserved {}
/// #[event] pub struct InventoryReserveFailed { pub error: String }
/// #[event(name = "InventoryReleaseCommand")] pub struct ReleaseInventory { pub order_id: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eventbus_core::Result<()> {
/// let saga = SagaDefinition::<Order>::new("create_order").step(
///     SagaStep::new("reserve_inventory")
///         .command::<ReserveInventory>()
///         .success::<InventoryReserved>()
///         .failure::<InventoryReserveFailed>()
///         .compensation::<ReleaseInventory>(),
/// );
/// let bus = EventBus::new(MemoryTransport::new(), "order-coordinator");
/// let coordinator = SagaCoordinator::builder(bus, MemorySagaStore::new())
///     .saga(&saga)
///     .start()
///     .await?;
/// let id = coordinator.start(&saga, &Order { order_id: "ord_1".into() }).await?;
/// let saga_now = coordinator.instance(&saga, &id).await?.expect("stored");
/// assert_eq!(saga_now.state.state, SagaStatus::Pending);
/// assert_eq!(saga_now.data.order_id, "ord_1");
/// coordinator.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct SagaCoordinator {
    inner: Arc<Inner>,
    subscription: Option<Subscription>,
    poller: Option<JoinHandle<()>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for SagaCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaCoordinator")
            .field("service", &self.inner.bus.service())
            .field("sagas", &self.inner.sagas.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SagaCoordinator {
    /// A builder for a coordinator publishing and subscribing on `bus` (its service name is
    /// the coordinators' group), with saga state in `store`.
    pub fn builder(bus: EventBus, store: impl SagaStore) -> SagaCoordinatorBuilder {
        Self::builder_with(bus, Arc::new(store))
    }

    /// [`builder`](Self::builder) with a shared store.
    pub fn builder_with(bus: EventBus, store: Arc<dyn SagaStore>) -> SagaCoordinatorBuilder {
        SagaCoordinatorBuilder {
            bus,
            store,
            sagas: Vec::new(),
            options: CoordinatorOptions::default(),
            configure: Vec::new(),
        }
    }

    /// Starts a saga with a fresh id: stores its state and publishes its first command
    /// (payload: `data` plus `saga_id`; correlation id: the saga id). Returns the saga id.
    ///
    /// `data` must serialize to a JSON object. The definition must be registered. If the
    /// publish fails after the state was stored, the error is returned and the saga waits
    /// (until its first step's timeout, if any): [`republish`](Self::republish) retries
    /// (start with [`start_with_id`](Self::start_with_id) to know the id in that case).
    pub async fn start<D: Serialize>(
        &self,
        definition: &SagaDefinition<D>,
        data: &D,
    ) -> Result<String> {
        let saga_id = new_id();
        self.start_with_id(definition, &saga_id, data).await?;
        Ok(saga_id)
    }

    /// Starts a saga with a chosen id (e.g. derived from a business key, so a retried start
    /// can't run it twice): fails with [`Error::Config`] when a saga with that id exists.
    pub async fn start_with_id<D: Serialize>(
        &self,
        definition: &SagaDefinition<D>,
        saga_id: &str,
        data: &D,
    ) -> Result<()> {
        let name = definition.name();
        let registered = self.inner.sagas.get(name).ok_or_else(|| {
            Error::Config(format!(
                "saga `{name}` is not registered with this coordinator"
            ))
        })?;
        let data = match serde_json::to_value(data) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(Error::Config(format!(
                    "saga `{name}`: data must serialize to a JSON object, not {other}"
                )))
            }
            Err(source) => {
                return Err(Error::Serialize {
                    event_type: format!("saga `{name}` data"),
                    source,
                })
            }
        };
        let state = transition::start(registered, saga_id, data, now_seconds())
            .ok_or_else(|| Error::Config(format!("saga `{name}` has no steps")))?;
        if !self.inner.store.create(&state).await? {
            return Err(Error::Config(format!("saga `{saga_id}` exists already")));
        }
        bump(&self.inner.stats.started);
        self.inner
            .publish(&state.saga_id, &state.outbox, None)
            .await
    }

    /// Publishes again what the saga's last transition published (its current step's
    /// command, or the compensations under way — also those of a saga that ended as
    /// failed), for an operator to unstick a saga whose publish failed (e.g.
    /// [`start`](Self::start) returned a transport error after storing it, or the bus was
    /// down when a timeout was applied: a reply's transition is re-published when the reply
    /// is redelivered, a timeout's is not). Participants are idempotent, so a repeat is
    /// harmless. `false` when no such saga.
    pub async fn republish(&self, saga_id: &str) -> Result<bool> {
        let Some(state) = self.inner.store.load(saga_id).await? else {
            return Ok(false);
        };
        if !state.outbox.is_empty() {
            self.inner.publish(saga_id, &state.outbox, None).await?;
        }
        Ok(true)
    }

    /// A saga's state and history.
    pub async fn state(&self, saga_id: &str) -> Result<Option<SagaState>> {
        self.inner.store.load(saga_id).await
    }

    /// A saga of `definition` with its data decoded as the definition's data type; `None`
    /// when no such saga (or it belongs to another definition).
    pub async fn instance<D: DeserializeOwned>(
        &self,
        definition: &SagaDefinition<D>,
        saga_id: &str,
    ) -> Result<Option<SagaInstance<D>>> {
        match self.inner.store.load(saga_id).await? {
            Some(state) if state.saga_name == definition.name() => {
                SagaInstance::from_state(state).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Up to `limit` sagas with a status.
    pub async fn list(&self, status: SagaStatus, limit: usize) -> Result<Vec<SagaState>> {
        self.inner.store.list(status, limit).await
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.inner.store
    }

    /// Counters of this instance.
    pub fn stats(&self) -> &CoordinatorStats {
        &self.inner.stats
    }

    /// Stops polling deadlines and reading replies (in-flight replies finish). Sagas carry
    /// on with any other instance, or with this one when it starts again.
    pub async fn shutdown(mut self) -> Result<()> {
        self.cancel.cancel();
        if let Some(poller) = self.poller.take() {
            let _ = poller.await;
        }
        match self.subscription.take() {
            Some(subscription) => subscription.shutdown().await.map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for SagaCoordinator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Inner {
    async fn on_reply(&self, event: Envelope<Value>) -> std::result::Result<(), HandlerError> {
        let empty = Map::new();
        let data = event.data.as_object().unwrap_or(&empty);
        let Some(saga_id) = data.get("saga_id").and_then(Value::as_str) else {
            tracing::debug!(event_type = %event.event_type, "reply without saga_id ignored");
            bump(&self.stats.ignored);
            return Ok(());
        };
        let retry = self.options.compensation_retry;
        let settled = self
            .transition(saga_id, Some(&event), |definition, state| {
                transition::on_reply(
                    definition,
                    state,
                    &event.event_type,
                    &event.event_id,
                    data,
                    retry,
                    now_seconds(),
                )
            })
            .await?;
        if settled {
            Ok(())
        } else {
            Err(HandlerError::retryable(format!(
                "saga `{saga_id}` changed under {MAX_CAS_ATTEMPTS} attempts in a row"
            )))
        }
    }

    /// Applies a claimed deadline; `false` when the saga kept changing (the claim's lease
    /// runs out and the deadline is handed out again).
    async fn on_deadline(&self, saga_id: &str) -> Result<bool> {
        let retry = self.options.compensation_retry;
        self.transition(saga_id, None, |definition, state| {
            transition::on_timeout(definition, state, retry, now_seconds())
        })
        .await
    }

    /// Loads, decides and stores with a compare-and-set, retrying on conflicts; publishes
    /// what the stored transition says. `false` when every attempt hit a conflict.
    async fn transition(
        &self,
        saga_id: &str,
        cause: Option<&Envelope<Value>>,
        decide: impl Fn(&SagaDefinition, &SagaState) -> Transition,
    ) -> Result<bool> {
        let span = telemetry::spans::saga(saga_id, cause.is_none());
        self.transition_in(saga_id, cause, decide, &span)
            .instrument(span.clone())
            .await
    }

    async fn transition_in(
        &self,
        saga_id: &str,
        cause: Option<&Envelope<Value>>,
        decide: impl Fn(&SagaDefinition, &SagaState) -> Transition,
        span: &tracing::Span,
    ) -> Result<bool> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(state) = self.store.load(saga_id).await? else {
                bump(&self.stats.ignored);
                return Ok(true);
            };
            let Some(definition) = self.sagas.get(&state.saga_name) else {
                tracing::warn!(saga_id, saga = %state.saga_name, "saga not registered here; ignored");
                bump(&self.stats.ignored);
                return Ok(true);
            };
            match decide(definition, &state) {
                Transition::Ignore(why) => {
                    tracing::debug!(saga_id, ?why, "ignored");
                    bump(&self.stats.ignored);
                    return Ok(true);
                }
                Transition::Republish(outbox) => {
                    bump(&self.stats.republished);
                    self.publish(saga_id, &outbox, cause).await?;
                    return Ok(true);
                }
                Transition::Apply(next) => {
                    if !self.store.update(&state, &next).await? {
                        bump(&self.stats.conflicts);
                        continue;
                    }
                    bump(&self.stats.transitions);
                    span.record("eventbus.saga", state.saga_name.as_str());
                    span.record("eventbus.saga.state", next.state.as_str());
                    telemetry::metrics::saga_transition(&state.saga_name, next.state.as_str());
                    if cause.is_none() {
                        bump(&self.stats.timeouts);
                        telemetry::metrics::saga_timeout(&state.saga_name);
                    }
                    match next.state {
                        SagaStatus::Completed => bump(&self.stats.completed),
                        SagaStatus::Failed => bump(&self.stats.failed),
                        _ => {}
                    }
                    self.publish(saga_id, &next.outbox, cause).await?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn publish(
        &self,
        saga_id: &str,
        outbox: &[OutgoingEvent],
        cause: Option<&Envelope<Value>>,
    ) -> Result<()> {
        let envelopes: Vec<Envelope<Value>> = outbox
            .iter()
            .map(|out| {
                let envelope =
                    Envelope::new(&out.event_type, 1, self.bus.service(), out.data.clone())
                        .with_metadata("saga_id", saga_id);
                match cause {
                    Some(cause) => envelope.caused_by(cause),
                    None => envelope.with_correlation_id(saga_id),
                }
            })
            .collect();
        self.bus.publish_raw(&envelopes).await.map(|_| ())
    }
}

/// Sets the `eventbus_sagas` gauge of every state every `every`, until cancelled.
async fn count_states(inner: Arc<Inner>, every: Duration, cancel: CancellationToken) {
    loop {
        for status in SagaStatus::ALL {
            match inner.store.count(status).await {
                Ok(n) => telemetry::metrics::sagas_in(status.as_str(), n),
                Err(e) => tracing::debug!(error = %e, "cannot count sagas for the gauge"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn poll_deadlines(inner: Arc<Inner>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(inner.options.timeout_poll) => {}
        }
        let due = inner
            .store
            .claim_due(
                now_seconds(),
                inner.options.timeout_lease,
                inner.options.timeout_batch,
            )
            .await;
        match due {
            Ok(ids) => {
                for id in ids {
                    // Unapplied, the claim's lease runs out and the deadline is handed out again.
                    match inner.on_deadline(&id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(saga_id = %id, "saga timeout not applied: conflicts")
                        }
                        Err(e) => tracing::warn!(
                            saga_id = %id, error = %e,
                            "saga timeout not applied, or applied but not published (republish)"
                        ),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim due saga deadlines"),
        }
    }
}
