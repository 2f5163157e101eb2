//! Building, running and stopping a subscription.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::backoff::Backoff;
use crate::bus::consumer::{self, Runner};
use crate::bus::handler::{erase, ErasedHandler};
use crate::bus::{group_for_service, Context, EventBus};
use crate::envelope::Envelope;
use crate::error::{Error, HandlerError, Result};
use crate::handler::{bind_here, EventMessage, Handler, Message, Resources};
use crate::transport::{ConsumerSpec, StartFrom, StreamConsumer, Topic};

/// The shortest `claim_idle` accepted.
const MIN_CLAIM_IDLE: Duration = Duration::from_millis(100);

/// Extracts an ordering key from an event.
pub type KeyFn = Arc<dyn Fn(&Envelope<Value>) -> Option<String> + Send + Sync>;

/// Which deliveries must be handled one after another, in stream order.
#[derive(Clone, Default)]
pub enum OrderBy {
    /// Entries of one stream are handled in order, one at a time; streams run concurrently.
    #[default]
    Stream,
    /// Entries with the same correlation id are handled in order; flows run concurrently.
    Correlation,
    /// Entries with the same key are handled in order (e.g. an order id from the payload);
    /// `None` keys are unordered.
    Key(KeyFn),
    /// No ordering: up to `concurrency` entries at once.
    Unordered,
}

impl fmt::Debug for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderBy::Stream => f.write_str("Stream"),
            OrderBy::Correlation => f.write_str("Correlation"),
            OrderBy::Key(_) => f.write_str("Key(..)"),
            OrderBy::Unordered => f.write_str("Unordered"),
        }
    }
}

/// Tuning of a subscription. Every field has a production default.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Consumer group; default `{service}-consumers`.
    pub group: String,
    /// This consumer's name, stable across restarts so that what it left pending is
    /// recovered; see [`default_consumer_name`].
    pub consumer: String,
    /// Where a new group starts.
    pub start_from: StartFrom,
    /// Entries read per round trip (`COUNT`).
    pub batch_size: usize,
    /// How long a read waits for new entries (`BLOCK`).
    pub block: Duration,
    /// Entries read but not yet finished, at most (reading pauses at this bound).
    pub prefetch: usize,
    /// Handlers running at once, at most.
    pub concurrency: usize,
    /// Which entries are handled in order.
    pub order_by: OrderBy,
    /// Deliveries before an entry is dead-lettered.
    pub max_deliveries: u32,
    /// Delay between attempts of a failing entry.
    pub retry_backoff: Backoff,
    /// Limit on one handler call; `None`: unlimited.
    pub handler_timeout: Option<Duration>,
    /// Entries pending longer than this in another consumer are reclaimed. This consumer
    /// renews its hold on every entry it read and has not settled each third of this, so a
    /// slow but live consumer keeps what it holds; every consumer of a group must use the
    /// same value. At least 100 ms.
    pub claim_idle: Duration,
    /// How often to look for such entries.
    pub claim_interval: Duration,
    /// Remove consumers of the group idle longer than this (only those with nothing
    /// pending); `None` keeps them.
    pub remove_idle_consumers_after: Option<Duration>,
    /// Backoff after a transport error (connection lost, group missing).
    pub reconnect_backoff: Backoff,
    /// Take at most this many entries in all, then stop reading (for tools like
    /// `eventbus consume --count N`); `None`: no limit.
    pub limit: Option<u64>,
    /// How long shutdown waits for in-flight handlers before abandoning them (their entries
    /// stay pending and are redelivered later).
    pub shutdown_timeout: Duration,
}

/// A consumer name stable for this host and service: `{service}-{hostname}`, or
/// `{service}-{hostname}-{suffix}` when `EVENTBUS_CONSUMER_SUFFIX` is set (several processes
/// of one service on one host must each set their own suffix, or set names explicitly).
pub fn default_consumer_name(service: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    match std::env::var("EVENTBUS_CONSUMER_SUFFIX") {
        Ok(suffix) if !suffix.is_empty() => format!("{service}-{host}-{suffix}"),
        _ => format!("{service}-{host}"),
    }
}

impl SubscriptionOptions {
    /// Defaults for a service.
    pub fn for_service(service: &str) -> Self {
        SubscriptionOptions {
            group: group_for_service(service),
            consumer: default_consumer_name(service),
            start_from: StartFrom::New,
            batch_size: 256,
            block: Duration::from_secs(2),
            prefetch: 512,
            concurrency: 32,
            order_by: OrderBy::Stream,
            max_deliveries: 5,
            retry_backoff: Backoff::default(),
            handler_timeout: None,
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            remove_idle_consumers_after: Some(Duration::from_secs(24 * 3600)),
            reconnect_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            limit: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of a running subscription.
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    pub(crate) handled: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) claimed: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
    pub(crate) renewed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) poison: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

macro_rules! stat_getters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        impl SubscriptionStats {
            $(
                #[doc = $doc]
                pub fn $name(&self) -> u64 {
                    self.$name.load(AtomicOrdering::Relaxed)
                }
            )*
        }
    };
}

stat_getters! {
    handled: "Entries every handler handled.",
    failed_attempts: "Handler attempts that failed (each retry counts).",
    dead_lettered: "Entries moved to the dead-letter stream.",
    skipped: "Entries no handler of this subscription takes (acknowledged).",
    claimed: "Entries reclaimed from idle consumers or recovered from an earlier run.",
    acked: "Entries acknowledged.",
    transport_errors: "Transport errors the consumer loop survived.",
    renewed: "Holds renewed: entries read and not yet settled, kept from other consumers.",
    lost: "Entries another consumer took before this one started or acknowledged them \
           (neither was done here).",
    poison: "Entries dead-lettered before any handler ran because earlier deliveries never \
             ended (their consumer crashed, was killed or hung).",
    abandoned: "Handlers cancelled at shutdown after `shutdown_timeout` (their entries stay \
                pending).",
}

impl SubscriptionStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, AtomicOrdering::Relaxed);
    }
}

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

/// What a subscription's shutdown left undone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Handlers still running at `shutdown_timeout`, cancelled; their entries stay pending.
    pub abandoned: u64,
    /// Entries read and not settled (never started, cancelled, or their acknowledgement
    /// could not be sent): pending, delivered again later.
    pub left_pending: u64,
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
