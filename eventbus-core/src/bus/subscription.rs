//! Building, running and stopping a subscription.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::backoff::Backoff;
use crate::bus::consumer::{self, Runner};
use crate::bus::handler::EventMessage;
use crate::bus::handler::{erase, ErasedHandler};
use crate::bus::options::{OrderBy, SubscriptionOptions};
use crate::bus::stats::{ShutdownReport, SubscriptionStats};
use crate::bus::{Context, EventBus};
use crate::envelope::Envelope;
use crate::error::{Error, HandlerError, Result};
use crate::handler::{bind_here, Handler, Message, Resources};
use crate::transport::{ConsumerSpec, StartFrom, StreamConsumer, Topic};

/// The shortest `claim_idle` accepted.
const MIN_CLAIM_IDLE: Duration = Duration::from_millis(100);

/// Builds a [`Subscription`]; see [`EventBus::subscribe`].
pub struct SubscriptionBuilder {
    bus: EventBus,
    options: SubscriptionOptions,
    handlers: HashMap<Topic, Vec<ErasedHandler>>,
    topic_order: Vec<Topic>,
    resources: Resources,
    handler_acks: bool,
    stats: Option<Arc<SubscriptionStats>>,
    wrap_consumer: Option<WrapConsumer>,
}

/// Replaces the consumer a subscription opens with one built around it (a projection's
/// fenced consumer).
pub(crate) type WrapConsumer = Arc<
    dyn Fn(
            Box<dyn StreamConsumer>,
            ConsumerSpec,
        ) -> futures_util::future::BoxFuture<'static, Result<Box<dyn StreamConsumer>>>
        + Send
        + Sync,
>;

impl fmt::Debug for SubscriptionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("options", &self.options)
            .field("topics", &self.topic_order)
            .finish()
    }
}

impl SubscriptionBuilder {
    pub(crate) fn new(bus: EventBus) -> Self {
        let options = SubscriptionOptions::for_service(bus.service());
        SubscriptionBuilder {
            bus,
            options,
            handlers: HashMap::new(),
            topic_order: Vec::new(),
            resources: Resources::default(),
            handler_acks: false,
            stats: None,
            wrap_consumer: None,
        }
    }

    /// Opens the consumer through `wrap` (see [`WrapConsumer`]).
    pub(crate) fn wrap_consumer(mut self, wrap: WrapConsumer) -> Self {
        self.wrap_consumer = Some(wrap);
        self
    }

    /// Counts into `stats` (shared by the successive subscriptions of one projection
    /// instance) instead of fresh counters.
    pub(crate) fn stats(mut self, stats: Arc<SubscriptionStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The handlers acknowledge entries themselves (projections commit the ack atomically
    /// with their writes): the loop doesn't ack what they handled.
    pub(crate) fn handler_acks(mut self) -> Self {
        self.handler_acks = true;
        self
    }

    pub(crate) fn add(mut self, topic: Topic, handler: ErasedHandler) -> Self {
        if !self.handlers.contains_key(&topic) {
            self.topic_order.push(topic.clone());
        }
        self.handlers.entry(topic).or_default().push(handler);
        self
    }

    /// Registers a shared resource that handlers registered after it take as
    /// [`State<T>`](crate::State).
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// The resources handlers are bound against (the app's).
    pub(crate) fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Handles events of one type, read from that type's stream: `handler` takes the event
    /// `E` or its `Envelope<E>`, then extractors (`Context`, `State<T>`; see
    /// [`Handler`]). Several handlers of one type run in registration order; the entry is
    /// acknowledged when all of them succeeded.
    ///
    /// # Panics
    ///
    /// When the handler takes a `State<T>` that was not registered before it (`.state`).
    #[track_caller]
    pub fn on<Args, H>(self, handler: H) -> Self
    where
        H: Handler<Context, Args>,
        H::Message: EventMessage + Message<Context, Output = Result<(), HandlerError>>,
    {
        let bound = bind_here(handler, &self.resources);
        self.add(Topic::of_type(H::Message::EVENT_TYPE), erase(bound))
    }

    /// Handles events of a type known by name only, as JSON (`Envelope<Value>`).
    ///
    /// # Panics
    ///
    /// As [`on`](Self::on).
    #[track_caller]
    pub fn on_raw<Args, H>(self, event_type: impl Into<String>, handler: H) -> Self
    where
        H: Handler<Context, Args, Message = Envelope<Value>>,
    {
        let bound = bind_here(handler, &self.resources);
        self.add(Topic::of_type(event_type), erase(bound))
    }

    /// Handles the entries of any topic's stream as JSON (e.g. a service's command stream).
    ///
    /// # Panics
    ///
    /// As [`on`](Self::on).
    #[track_caller]
    pub fn on_topic<Args, H>(self, topic: Topic, handler: H) -> Self
    where
        H: Handler<Context, Args, Message = Envelope<Value>>,
    {
        let bound = bind_here(handler, &self.resources);
        self.add(topic, erase(bound))
    }

    /// Handles every event, read from the global stream, as JSON.
    ///
    /// # Panics
    ///
    /// As [`on`](Self::on).
    #[track_caller]
    pub fn on_all<Args, H>(self, handler: H) -> Self
    where
        H: Handler<Context, Args, Message = Envelope<Value>>,
    {
        let bound = bind_here(handler, &self.resources);
        self.add(Topic::All, erase(bound))
    }

    /// Replaces all options.
    pub fn options(mut self, options: SubscriptionOptions) -> Self {
        self.options = options;
        self
    }

    /// Changes options in place.
    pub fn configure(mut self, f: impl FnOnce(&mut SubscriptionOptions)) -> Self {
        f(&mut self.options);
        self
    }

    /// Uses another consumer group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.options.group = group.into();
        self
    }

    /// Sets this consumer's stable name.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.options.consumer = name.into();
        self
    }

    /// Where a new group starts reading.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.options.start_from = start;
        self
    }

    /// Maximum handlers running at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.options.concurrency = n;
        self
    }

    /// Which entries are handled in order.
    pub fn order_by(mut self, order: OrderBy) -> Self {
        self.options.order_by = order;
        self
    }

    /// Deliveries before dead-lettering.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.options.max_deliveries = n;
        self
    }

    /// Delay between attempts.
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.options.retry_backoff = backoff;
        self
    }

    /// Idle time after which another consumer's pending entries are reclaimed.
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.options.claim_idle = idle;
        self
    }

    fn validate(&self) -> Result<()> {
        let o = &self.options;
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.handlers.is_empty() {
            return bad("a subscription needs at least one handler (`on`, `on_raw` or `on_all`)");
        }
        if o.group.is_empty() || o.consumer.is_empty() {
            return bad("group and consumer names must not be empty");
        }
        if o.batch_size == 0 || o.prefetch == 0 || o.concurrency == 0 {
            return bad("batch_size, prefetch and concurrency must be at least 1");
        }
        if o.max_deliveries == 0 {
            return bad("max_deliveries must be at least 1");
        }
        if o.claim_idle < MIN_CLAIM_IDLE {
            return bad(
                "claim_idle must be at least 100 ms: holds are renewed each third of it, and a \
                 shorter one lets other consumers take entries a live consumer is handling",
            );
        }
        if o.claim_interval.is_zero() {
            return bad("claim_interval must be more than zero");
        }
        if o.handler_timeout.is_some_and(|t| t.is_zero()) {
            return bad("handler_timeout must be more than zero (or None for no limit)");
        }
        Ok(())
    }

    /// Creates the group on every stream (if missing), opens the consumer and starts the
    /// consumer loop. Fails fast on configuration, authentication and permission errors.
    pub async fn start(self) -> Result<Subscription> {
        self.validate()?;
        let transport = self.bus.transport().clone();
        for topic in &self.topic_order {
            transport
                .ensure_group(topic, &self.options.group, self.options.start_from)
                .await?;
        }
        let spec = ConsumerSpec {
            group: self.options.group.clone(),
            consumer: self.options.consumer.clone(),
            topics: self.topic_order.clone(),
        };
        let mut consumer = transport.consumer(spec.clone()).await?;
        if let Some(wrap) = &self.wrap_consumer {
            consumer = wrap(consumer, spec.clone()).await?;
        }
        let stats = self.stats.unwrap_or_default();
        let cancel = CancellationToken::new();
        let runner = Runner::new(
            self.bus,
            consumer,
            spec,
            self.options,
            self.handlers,
            stats.clone(),
            cancel.clone(),
            self.handler_acks,
        );
        let task = tokio::spawn(consumer::run(runner));
        Ok(Subscription {
            cancel,
            task: Some(task),
            stats,
        })
    }
}

/// A running subscription. Stop it with [`shutdown`](Self::shutdown); dropping it stops
/// reading too, and drains in the background.
///
/// ```
/// use std::time::Duration;
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::{event, Envelope, EventBus, HandlerError, ShutdownReport};
///
/// #[event(name = "OrderCreated")]
/// pub struct OrderCreated { pub total: f64 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = EventBus::new(MemoryTransport::new(), "billing");
/// let subscription = bus
///     .subscribe()
///     .on(|e: Envelope<OrderCreated>| async move {
///         if e.data.total < 0.0 {
///             // Not worth retrying: straight to the dead letters.
///             return Err(HandlerError::permanent("negative total"));
///         }
///         Ok(())
///     })
///     .start()
///     .await?;
/// bus.publish(OrderCreated { total: 10.0 }).await?;
/// bus.publish(OrderCreated { total: -1.0 }).await?;
///
/// let stats = subscription.stats();
/// while stats.handled() + stats.dead_lettered() < 2 {
///     tokio::time::sleep(Duration::from_millis(5)).await;
/// }
/// assert_eq!((stats.handled(), stats.dead_lettered()), (1, 1));
/// // Drained: nothing abandoned, nothing left pending.
/// assert_eq!(subscription.shutdown().await?, ShutdownReport::default());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Subscription {
    cancel: CancellationToken,
    task: Option<JoinHandle<ShutdownReport>>,
    stats: Arc<SubscriptionStats>,
}

impl Subscription {
    /// Counters of this subscription.
    pub fn stats(&self) -> &SubscriptionStats {
        &self.stats
    }

    /// Stops reading, lets in-flight handlers finish (up to the shutdown timeout, after which
    /// they are cancelled), acknowledges what finished, and returns what was left undone.
    /// Entries read but not finished stay pending and are recovered by this consumer's next
    /// run or reclaimed by another.
    pub async fn shutdown(mut self) -> Result<ShutdownReport> {
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Config(format!("consumer task failed: {e}"))),
            None => Ok(ShutdownReport::default()),
        }
    }

    /// Whether the consumer loop has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
