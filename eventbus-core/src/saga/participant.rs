//! [`Participant`]: a service that executes saga steps, idempotent by saga and step.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::bus::{EventBus, Subscription, SubscriptionOptions};
use crate::envelope::Envelope;
use crate::error::{Error, HandlerError, Result};
use crate::event::Event;
use crate::saga::definition::{SagaDefinition, SagaStep};
use crate::saga::store::{SagaStore, StepClaim, StepKey, StepRecord};

/// A saga command (or compensation) as an untyped handler ([`Participant::step_raw`])
/// receives it.
#[derive(Debug, Clone)]
pub struct SagaCommand {
    /// The saga it belongs to.
    pub saga_id: String,
    /// The payload: the saga data plus `saga_id`.
    pub data: Map<String, Value>,
    /// The event as delivered.
    pub envelope: Envelope<Value>,
}

impl SagaCommand {
    /// The payload decoded as `T` (e.g. the saga's data type).
    pub fn data_as<T: DeserializeOwned>(&self) -> std::result::Result<T, HandlerError> {
        decode_payload(&self.envelope)
    }

    /// The payload decoded as the typed command `T`, and the context.
    fn typed<T: Event>(self) -> std::result::Result<(T, SagaContext), HandlerError> {
        let command = decode_payload(&self.envelope)?;
        let context = SagaContext {
            saga_id: self.saga_id,
            envelope: self.envelope,
        };
        Ok((command, context))
    }
}

/// What a step's handler decided: the step's success event (its fields merge into the
/// saga data) or its failure event (its `error` field becomes the saga's error, and the
/// saga compensates).
///
/// `S` and `F` must be the step's [`success`](SagaStep::success) and
/// [`failure`](SagaStep::failure) events; [`Participant::step`] checks that when it
/// registers the handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<S, F> {
    /// The step succeeded.
    Success(S),
    /// The step failed for a business reason.
    Failure(F),
}

/// What a participant's handler knows of the saga besides its command: the saga id and the
/// command event as delivered.
#[derive(Debug, Clone)]
pub struct SagaContext {
    saga_id: String,
    envelope: Envelope<Value>,
}

impl SagaContext {
    /// The saga the command belongs to.
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// The command (or compensation) event as delivered (ids, metadata, raw payload).
    pub fn envelope(&self) -> &Envelope<Value> {
        &self.envelope
    }

    /// The whole payload (the saga data plus `saga_id`) decoded as `T`, e.g. the saga's
    /// data type when the command type carries only part of it.
    pub fn data_as<T: DeserializeOwned>(&self) -> std::result::Result<T, HandlerError> {
        decode_payload(&self.envelope)
    }
}

/// What an untyped step handler ([`Participant::step_raw`]) decided.
#[derive(Debug, Clone, PartialEq)]
pub enum StepReply {
    /// The step succeeded: these fields go out with the success event (and merge into the
    /// saga data).
    Success(Map<String, Value>),
    /// The step failed for a business reason: the failure event goes out with this error
    /// and the saga compensates.
    Failure(String),
}

impl StepReply {
    /// Success without fields.
    pub fn ok() -> Self {
        StepReply::Success(Map::new())
    }

    /// Success with the fields of `fields` (a JSON object; anything else adds no field).
    pub fn success(fields: Value) -> Self {
        match fields {
            Value::Object(map) => StepReply::Success(map),
            _ => StepReply::ok(),
        }
    }

    /// A business failure.
    pub fn failure(error: impl Into<String>) -> Self {
        StepReply::Failure(error.into())
    }
}

/// A reply's payload fields, by outcome (what the forward handlers return, typed or not).
enum Outcome {
    Success(Map<String, Value>),
    Failure(Map<String, Value>),
}

impl From<StepReply> for Outcome {
    fn from(reply: StepReply) -> Self {
        match reply {
            StepReply::Success(fields) => Outcome::Success(fields),
            StepReply::Failure(error) => {
                let mut fields = Map::new();
                fields.insert("error".into(), Value::String(error));
                Outcome::Failure(fields)
            }
        }
    }
}

fn decode_payload<T: DeserializeOwned>(
    envelope: &Envelope<Value>,
) -> std::result::Result<T, HandlerError> {
    T::deserialize(&envelope.data).map_err(|e| {
        HandlerError::permanent(format!(
            "`{}` payload does not fit `{}`: {e}",
            envelope.event_type,
            std::any::type_name::<T>()
        ))
    })
}

/// An event's fields, to send as a reply.
fn fields_of<E: Event>(event: &E) -> std::result::Result<Map<String, Value>, HandlerError> {
    match serde_json::to_value(event) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(HandlerError::permanent(format!(
            "reply `{}` must serialize to a JSON object, not {other}",
            E::EVENT_TYPE
        ))),
        Err(e) => Err(HandlerError::permanent(format!(
            "reply `{}` does not serialize: {e}",
            E::EVENT_TYPE
        ))),
    }
}

type Forward = Arc<
    dyn Fn(SagaCommand) -> BoxFuture<'static, std::result::Result<Outcome, HandlerError>>
        + Send
        + Sync,
>;
/// A compensation handler: the confirmation's fields, if it ran.
type Compensate = Arc<
    dyn Fn(SagaCommand) -> BoxFuture<'static, std::result::Result<Map<String, Value>, HandlerError>>
        + Send
        + Sync,
>;

/// What a typed compensation handler returns: `()`, or the step's confirmation event
/// ([`compensated`](SagaStep::compensated)), whose fields then go out with the
/// confirmation. With `()` a confirmation (if the step has one) carries `saga_id` only, as
/// does the confirmation of a compensation that had nothing to undo.
pub trait Confirmation: Send + 'static {
    /// The confirmation event type this value is, `None` for `()`; checked against the
    /// step's when the handler is registered.
    fn event_type() -> Option<&'static str>;

    /// The fields the confirmation carries.
    fn into_fields(self) -> std::result::Result<Map<String, Value>, HandlerError>;
}

impl Confirmation for () {
    fn event_type() -> Option<&'static str> {
        None
    }

    fn into_fields(self) -> std::result::Result<Map<String, Value>, HandlerError> {
        Ok(Map::new())
    }
}

impl<E: Event> Confirmation for E {
    fn event_type() -> Option<&'static str> {
        Some(E::EVENT_TYPE)
    }

    fn into_fields(self) -> std::result::Result<Map<String, Value>, HandlerError> {
        fields_of(&self)
    }
}

/// Panics, at the caller's line, unless `step`'s `role` event (`actual`) is `wanted`, the
/// event type of the Rust type `rust_type`.
#[track_caller]
fn expect_event(
    (saga, step): (&str, &SagaStep),
    role: &str,
    actual: Option<&str>,
    (wanted, rust_type): (&str, &str),
) {
    if actual != Some(wanted) {
        panic!(
            "saga `{saga}`, step `{}`: the {role} event is {}, not `{wanted}` ({rust_type})",
            step.name(),
            actual.map_or_else(|| "not set".to_string(), |a| format!("`{a}`")),
        );
    }
}

/// An event type's wire name and Rust name, for [`expect_event`].
fn names<E: Event>() -> (&'static str, &'static str) {
    (E::EVENT_TYPE, std::any::type_name::<E>())
}

/// Tuning of a participant.
#[derive(Debug, Clone)]
pub struct ParticipantOptions {
    /// How long a consumer holds a step while running its handler; past it, a redelivery
    /// may run the handler again (keep handlers shorter than this).
    pub lease: Duration,
    /// How long a step's outcome is remembered (redeliveries later than this run again).
    pub record_ttl: Duration,
}

impl Default for ParticipantOptions {
    fn default() -> Self {
        ParticipantOptions {
            lease: Duration::from_secs(60),
            record_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Counters of a participant.
#[derive(Debug, Default)]
pub struct ParticipantStats {
    executed: AtomicU64,
    compensated: AtomicU64,
    deduplicated: AtomicU64,
    cancelled: AtomicU64,
}

impl ParticipantStats {
    /// Step handlers run to a reply.
    pub fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }
    /// Compensation handlers run.
    pub fn compensated(&self) -> u64 {
        self.compensated.load(Ordering::Relaxed)
    }
    /// Redelivered or repeated commands answered from the record, without running a handler.
    pub fn deduplicated(&self) -> u64 {
        self.deduplicated.load(Ordering::Relaxed)
    }
    /// Commands not run because their compensation came first, and compensations of steps
    /// that never ran or failed (nothing to undo).
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }
}

struct Shared {
    bus: EventBus,
    store: Arc<dyn SagaStore>,
    options: ParticipantOptions,
    stats: Arc<ParticipantStats>,
}

/// Builds and runs a saga participant: for each step it serves, a handler for the step's
/// command and one for its compensation. Replies carry `saga_id`; every command is handled
/// at most once per saga (a redelivery re-sends the recorded reply), a compensation that
/// overtakes its command stops the command from running, and a compensation of a step
/// that never ran or failed undoes nothing.
///
/// ```no_run
/// use eventbus_core::event;
/// use eventbus_core::saga::{MemorySagaStore, Participant, Reply, SagaContext, SagaDefinition, SagaStep};
/// use eventbus_core::{EventBus, transport::memory::MemoryTransport};
///
/// #[event(name = "PaymentProcessCommand")] pub struct ProcessPayment { pub amount: f64 }
/// #[event] pub struct PaymentProcessed { pub payment_id: String }
/// #[event] pub struct PaymentFailed { pub error: String }
/// #[event(name = "PaymentRefundCommand")] pub struct RefundPayment { pub amount: f64 }
///
/// # async fn run(saga: SagaDefinition) -> eventbus_core::Result<()> {
/// // `saga` has a step with these four events.
/// let bus = EventBus::new(MemoryTransport::new(), "payment-service");
/// let payments = Participant::new(bus, MemorySagaStore::new())
///     .step(
///         &saga,
///         |cmd: ProcessPayment, ctx: SagaContext| async move {
///             if cmd.amount > 1000.0 {
///                 return Ok(Reply::Failure(PaymentFailed { error: "card declined".into() }));
///             }
///             Ok(Reply::Success(PaymentProcessed { payment_id: format!("pay_{}", ctx.saga_id()) }))
///         },
///         |_refund: RefundPayment, _ctx| async move { Ok(()) },
///     )
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Participant {
    shared: Arc<Shared>,
    steps: Vec<(SagaStep, Forward, Compensate)>,
    configure: Vec<crate::saga::Configure>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("service", &self.shared.bus.service())
            .field(
                "steps",
                &self.steps.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Participant {
    /// A participant publishing and subscribing as `bus`'s service, recording its work in
    /// `store`.
    pub fn new(bus: EventBus, store: impl SagaStore) -> Self {
        Self::with_store(bus, Arc::new(store))
    }

    /// [`new`](Self::new) with a shared store.
    pub fn with_store(bus: EventBus, store: Arc<dyn SagaStore>) -> Self {
        Participant {
            shared: Arc::new(Shared {
                bus,
                store,
                options: ParticipantOptions::default(),
                stats: Arc::default(),
            }),
            steps: Vec::new(),
            configure: Vec::new(),
        }
    }

    /// A participant an [`App`](crate::App) runs: the app gives it its bus and saga store
    /// when it starts (see `AppBuilder::saga_step`).
    pub(crate) fn detached() -> Self {
        Self::with_store(
            EventBus::new(crate::transport::memory::MemoryTransport::new(), "detached"),
            Arc::new(crate::saga::MemorySagaStore::new()),
        )
    }

    /// Moves the participant's steps onto `bus` and `store` (an app's, at its start).
    pub(crate) fn attach(self, bus: EventBus, store: Arc<dyn SagaStore>) -> Self {
        Participant {
            shared: Arc::new(Shared {
                bus,
                store,
                options: self.shared.options.clone(),
                stats: self.shared.stats.clone(),
            }),
            ..self
        }
    }

    /// Replaces the options.
    pub fn options(mut self, options: ParticipantOptions) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.options = options;
        }
        self
    }

    /// Serves the step of `saga` whose command is `C`: `execute` handles the command and
    /// replies with the step's success event `S` or failure event `F`; `compensate`
    /// handles its compensation `U` (called only if the command ran and succeeded) and
    /// returns `()` or the step's confirmation event (see [`Confirmation`]).
    ///
    /// Each command and compensation is decoded from its payload (the saga data plus
    /// `saga_id`; unknown fields are ignored, a missing one dead-letters the event);
    /// [`SagaContext`] has the saga id.
    ///
    /// # Panics
    ///
    /// At the caller's line, when `saga` has no step whose command is `C`, or when that
    /// step's success, failure, compensation or confirmation event is not `S`, `F`, `U` or
    /// `R`.
    #[track_caller]
    pub fn step<D, C, S, F, U, R, E, EFut, K, KFut>(
        self,
        saga: &SagaDefinition<D>,
        execute: E,
        compensate: K,
    ) -> Self
    where
        C: Event,
        S: Event,
        F: Event,
        U: Event,
        E: Fn(C, SagaContext) -> EFut + Send + Sync + 'static,
        EFut: Future<Output = std::result::Result<Reply<S, F>, HandlerError>> + Send + 'static,
        K: Fn(U, SagaContext) -> KFut + Send + Sync + 'static,
        KFut: Future<Output = std::result::Result<R, HandlerError>> + Send + 'static,
        R: Confirmation,
    {
        let Some(step) = saga
            .steps()
            .iter()
            .find(|s| s.command_event() == C::EVENT_TYPE)
        else {
            let commands: Vec<&str> = saga.steps().iter().map(SagaStep::command_event).collect();
            panic!(
                "saga `{}` has no step whose command is `{}` ({}); its commands: {commands:?}",
                saga.name(),
                C::EVENT_TYPE,
                std::any::type_name::<C>()
            );
        };
        let at = (saga.name(), step);
        expect_event(at, "success", Some(step.success_event()), names::<S>());
        expect_event(at, "failure", Some(step.failure_event()), names::<F>());
        expect_event(
            at,
            "compensation",
            Some(step.compensation_event()),
            names::<U>(),
        );
        if let Some(confirmation) = R::event_type() {
            let rust_type = std::any::type_name::<R>();
            let actual = step.compensated_event();
            expect_event(at, "confirmation", actual, (confirmation, rust_type));
        }
        let execute = Arc::new(execute);
        let forward: Forward = Arc::new(move |cmd: SagaCommand| {
            let execute = execute.clone();
            Box::pin(async move {
                let (command, context) = cmd.typed::<C>()?;
                Ok(match execute(command, context).await? {
                    Reply::Success(event) => Outcome::Success(fields_of(&event)?),
                    Reply::Failure(event) => Outcome::Failure(fields_of(&event)?),
                })
            })
        });
        let compensate = Arc::new(compensate);
        let undo: Compensate = Arc::new(move |cmd: SagaCommand| {
            let compensate = compensate.clone();
            Box::pin(async move {
                let (command, context) = cmd.typed::<U>()?;
                compensate(command, context).await?.into_fields()
            })
        });
        self.serve(step, forward, undo)
    }

    /// Serves `step` with untyped handlers: `execute` gets the command's payload as JSON
    /// and replies with fields; `compensate` gets the compensation. For steps whose events
    /// have no Rust type (defined by name for non-Rust participants); prefer
    /// [`step`](Self::step).
    pub fn step_raw<F, FFut, C, CFut>(self, step: &SagaStep, execute: F, compensate: C) -> Self
    where
        F: Fn(SagaCommand) -> FFut + Send + Sync + 'static,
        FFut: Future<Output = std::result::Result<StepReply, HandlerError>> + Send + 'static,
        C: Fn(SagaCommand) -> CFut + Send + Sync + 'static,
        CFut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        let execute = Arc::new(execute);
        let forward: Forward = Arc::new(move |cmd| {
            let execute = execute.clone();
            Box::pin(async move { execute(cmd).await.map(Outcome::from) })
        });
        let compensate = Arc::new(compensate);
        let undo: Compensate = Arc::new(move |cmd| {
            let compensate = compensate.clone();
            Box::pin(async move { compensate(cmd).await.map(|()| Map::new()) })
        });
        self.serve(step, forward, undo)
    }

    fn serve(mut self, step: &SagaStep, forward: Forward, undo: Compensate) -> Self {
        self.steps.push((step.clone(), forward, undo));
        self
    }

    /// Tunes the subscription (consumer name, concurrency, retries…).
    pub fn configure_subscription(
        mut self,
        f: impl FnOnce(&mut SubscriptionOptions) + Send + 'static,
    ) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Counters, shared with the running participant.
    pub fn stats(&self) -> Arc<ParticipantStats> {
        self.shared.stats.clone()
    }

    /// Subscribes to the steps' commands and compensations in the service's group.
    pub async fn start(self) -> Result<Subscription> {
        if self.steps.is_empty() {
            return Err(Error::Config(
                "a participant needs at least one step".into(),
            ));
        }
        let mut builder = self.shared.bus.subscribe();
        for configure in self.configure {
            builder = builder.configure(configure);
        }
        for (step, forward, undo) in self.steps {
            let step = Arc::new(step);
            let (shared, s) = (self.shared.clone(), step.clone());
            builder = builder.on_raw(step.command_event().to_string(), move |e| {
                let (shared, step, forward) = (shared.clone(), s.clone(), forward.clone());
                async move { shared.execute(&step, &forward, e).await }
            });
            let (shared, s) = (self.shared.clone(), step.clone());
            builder = builder.on_raw(step.compensation_event().to_string(), move |e| {
                let (shared, step, undo) = (shared.clone(), s.clone(), undo.clone());
                async move { shared.compensate(&step, &undo, e).await }
            });
        }
        builder.start().await
    }
}

type HandlerResult = std::result::Result<(), HandlerError>;

impl Shared {
    fn command(&self, envelope: Envelope<Value>) -> std::result::Result<SagaCommand, HandlerError> {
        let data = match &envelope.data {
            Value::Object(map) => map.clone(),
            _ => {
                return Err(HandlerError::permanent(
                    "a saga command's payload must be an object",
                ))
            }
        };
        let saga_id = data
            .get("saga_id")
            .and_then(Value::as_str)
            .ok_or_else(|| HandlerError::permanent("a saga command must carry `saga_id`"))?
            .to_string();
        Ok(SagaCommand {
            saga_id,
            data,
            envelope,
        })
    }

    /// Claims (or, with `cancel`, cancels) work, waiting while another consumer holds it —
    /// up to the lease, after which its claim has expired — so that a redelivery or a
    /// compensation arriving while the command runs settles without burning deliveries.
    async fn settle(&self, key: &StepKey, cancel: bool) -> Result<StepClaim> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let claim = if cancel {
                self.store.cancel_step(key, self.options.record_ttl).await?
            } else {
                self.store.claim_step(key, self.options.lease).await?
            };
            if claim != StepClaim::Existing(StepRecord::InProgress)
                || started.elapsed() >= self.options.lease
            {
                return Ok(claim);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    fn key(&self, saga_id: &str, event_type: &str) -> StepKey {
        StepKey {
            participant: self.bus.service().to_string(),
            saga_id: saga_id.to_string(),
            event_type: event_type.to_string(),
        }
    }

    async fn reply(&self, cause: &Envelope<Value>, record: &StepRecord) -> Result<()> {
        if let StepRecord::Done {
            event_type: Some(event_type),
            data,
        } = record
        {
            let envelope =
                Envelope::new(event_type, 1, self.bus.service(), data.clone()).caused_by(cause);
            self.bus.publish_raw(&[envelope]).await?;
        }
        Ok(())
    }

    async fn execute(
        &self,
        step: &SagaStep,
        forward: &Forward,
        event: Envelope<Value>,
    ) -> HandlerResult {
        let cmd = self.command(event)?;
        let key = self.key(&cmd.saga_id, step.command_event());
        match self.settle(&key, false).await? {
            StepClaim::Existing(StepRecord::InProgress) => Err(HandlerError::retryable(format!(
                "{key} is being handled by another consumer"
            ))),
            StepClaim::Existing(StepRecord::Cancelled) => {
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            StepClaim::Existing(record) => {
                self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
                Ok(self.reply(&cmd.envelope, &record).await?)
            }
            StepClaim::Acquired => {
                let cause = cmd.envelope.clone();
                let saga_id = cmd.saga_id.clone();
                let outcome = match forward(cmd).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        self.store.release_step(&key).await?;
                        return Err(e);
                    }
                };
                let (event_type, mut data) = match outcome {
                    Outcome::Success(fields) => (step.success_event(), fields),
                    Outcome::Failure(fields) => (step.failure_event(), fields),
                };
                data.insert("saga_id".into(), Value::String(saga_id));
                let record = StepRecord::Done {
                    event_type: Some(event_type.to_string()),
                    data: Value::Object(data),
                };
                self.store
                    .finish_step(&key, &record, self.options.record_ttl)
                    .await?;
                self.stats.executed.fetch_add(1, Ordering::Relaxed);
                Ok(self.reply(&cause, &record).await?)
            }
        }
    }

    async fn compensate(
        &self,
        step: &SagaStep,
        undo: &Compensate,
        event: Envelope<Value>,
    ) -> HandlerResult {
        let cmd = self.command(event)?;
        let key = self.key(&cmd.saga_id, step.compensation_event());
        let forward_key = self.key(&cmd.saga_id, step.command_event());
        let ttl = self.options.record_ttl;
        match self.settle(&key, false).await? {
            StepClaim::Existing(StepRecord::InProgress) => {
                return Err(HandlerError::retryable(format!(
                    "{key} is being handled by another consumer"
                )))
            }
            StepClaim::Existing(record) => {
                self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
                return Ok(self.reply(&cmd.envelope, &record).await?);
            }
            StepClaim::Acquired => {}
        }
        // Stop the command from running after its compensation; learn whether it ran.
        let ran = match self.settle(&forward_key, true).await? {
            StepClaim::Acquired | StepClaim::Existing(StepRecord::Cancelled) => false,
            StepClaim::Existing(StepRecord::InProgress) => {
                self.store.release_step(&key).await?;
                return Err(HandlerError::retryable(format!(
                    "{forward_key} is still running; compensating after it"
                )));
            }
            StepClaim::Existing(StepRecord::Done { event_type, .. }) => {
                event_type.as_deref() != Some(step.failure_event())
            }
        };
        let cause = cmd.envelope.clone();
        let saga_id = cmd.saga_id.clone();
        let mut data = Map::new();
        if ran {
            match undo(cmd).await {
                Ok(fields) => data = fields,
                Err(e) => {
                    self.store.release_step(&key).await?;
                    return Err(e);
                }
            }
            self.stats.compensated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        data.insert("saga_id".into(), Value::String(saga_id));
        let record = StepRecord::Done {
            event_type: step.compensated_event().map(str::to_string),
            data: Value::Object(data),
        };
        self.store.finish_step(&key, &record, ttl).await?;
        Ok(self.reply(&cause, &record).await?)
    }
}
