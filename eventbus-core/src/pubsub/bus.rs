//! The Pub/Sub runtime: publishing, and subscriptions that dispatch to handlers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::Backoff;
use crate::dispatch::{call_isolated, erase, Payload, RawHandler};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::handler::Handler;
use crate::pattern::Pattern;
use crate::pubsub::{PubSubMessage, PubSubSpec, PubSubStream, PubSubTransport, Via};
use crate::router::Router;

/// Publishes events to, and subscribes to events from, a Pub/Sub backend: at-most-once
/// broadcast (see the [module docs](crate::pubsub)).
///
/// ```
/// use eventbus_core::pubsub::memory::MemoryPubSub;
/// use eventbus_core::{event, Envelope, HandlerError, PubSubBus};
///
/// #[event(name = "PaymentCompleted")]
/// pub struct PaymentCompleted { pub order_id: String, pub amount: f64 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventbus_core::Error> {
/// let backend = MemoryPubSub::new();
/// let order_bus = PubSubBus::new(backend.clone(), "order-service");
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let subscription = order_bus
///     .subscribe()
///     .on(move |e: Envelope<PaymentCompleted>| {
///         let tx = tx.clone();
///         async move { tx.send(e.data.order_id).map_err(HandlerError::from) }
///     })
///     .start()
///     .await?;
///
/// let payment_bus = PubSubBus::new(backend, "payment-service");
/// payment_bus.publish(PaymentCompleted { order_id: "ord_123".into(), amount: 99.99 }).await?;
/// assert_eq!(rx.recv().await.as_deref(), Some("ord_123"));
/// subscription.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PubSubBus {
    transport: Arc<dyn PubSubTransport>,
    service: Arc<str>,
}

impl std::fmt::Debug for PubSubBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubBus")
            .field("service", &self.service)
            .field("transport", &self.transport.describe())
            .finish()
    }
}

impl PubSubBus {
    /// A bus for `service` over `transport`.
    pub fn new(transport: impl PubSubTransport, service: impl Into<String>) -> Self {
        Self::from_arc(Arc::new(transport), service)
    }

    /// A bus over a shared transport.
    pub fn from_arc(transport: Arc<dyn PubSubTransport>, service: impl Into<String>) -> Self {
        let service: String = service.into();
        PubSubBus {
            transport,
            service: service.into(),
        }
    }

    /// The service name stamped as `source` on published events.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Broadcasts an event to the current subscribers of its type. Returns how many
    /// subscriptions received it; nobody listening is not an error (and nothing is kept).
    pub async fn publish<E: Event>(&self, event: E) -> Result<usize> {
        self.publish_envelope(Envelope::from_event(&*self.service, event))
            .await
    }

    /// Broadcasts a prepared envelope (for correlation and causation ids). Its event id,
    /// version and metadata are not sent.
    pub async fn publish_envelope<E: Event>(&self, envelope: Envelope<E>) -> Result<usize> {
        self.publish_raw(&envelope.to_raw()?).await
    }

    /// Broadcasts an event whose payload is already JSON.
    pub async fn publish_raw(&self, event: &Envelope<Value>) -> Result<usize> {
        self.transport.publish(event).await
    }

    /// Starts building a subscription.
    pub fn subscribe(&self) -> PubSubSubscriptionBuilder {
        PubSubSubscriptionBuilder {
            bus: self.clone(),
            exact: HashMap::new(),
            patterns: Vec::new(),
            routers: Vec::new(),
            reconnect_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
        }
    }
}

/// Builds a [`PubSubSubscription`]; see [`PubSubBus::subscribe`].
pub struct PubSubSubscriptionBuilder {
    bus: PubSubBus,
    exact: HashMap<String, Vec<RawHandler>>,
    patterns: Vec<(Pattern, Vec<RawHandler>)>,
    routers: Vec<Router>,
    reconnect_backoff: Backoff,
}

impl std::fmt::Debug for PubSubSubscriptionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubSubscriptionBuilder")
            .field("event_types", &self.exact.keys().collect::<Vec<_>>())
            .field("patterns", &self.patterns.len())
            .field("routers", &self.routers.len())
            .finish()
    }
}

impl PubSubSubscriptionBuilder {
    /// Handles events of type `E` (channel `events:{E::EVENT_TYPE}` on Redis).
    #[track_caller]
    pub fn on<E, Args, H>(self, handler: H) -> Self
    where
        E: Event,
        H: Handler<(), Args, Message = Envelope<E>>,
    {
        self.on_type(E::EVENT_TYPE, erase(handler))
    }

    /// Handles events of a type known by name only, as JSON.
    #[track_caller]
    pub fn on_raw<Args, H>(self, event_type: impl Into<String>, handler: H) -> Self
    where
        H: Handler<(), Args, Message = Envelope<Value>>,
    {
        self.on_type(event_type, erase(handler))
    }

    fn on_type(mut self, event_type: impl Into<String>, handler: RawHandler) -> Self {
        self.exact
            .entry(event_type.into())
            .or_default()
            .push(handler);
        self
    }

    /// Handles every event whose type matches `pattern` (`Order.*`, `**.Failed`; see
    /// [`Pattern`]) as JSON, or as `T` when `T` is a typed event (others are then skipped).
    ///
    /// Fails with [`Error::InvalidPattern`] when the pattern is invalid.
    #[track_caller]
    pub fn on_pattern<T, Args, H>(mut self, pattern: &str, handler: H) -> Result<Self>
    where
        T: Payload,
        H: Handler<(), Args, Message = Envelope<T>>,
    {
        let pattern = Pattern::parse(pattern)?;
        let handler = erase(handler);
        let handler: RawHandler = Arc::new(move |event: Arc<Envelope<Value>>| {
            if T::accepts(&event.event_type) {
                handler(event)
            } else {
                Box::pin(std::future::ready(Ok(())))
            }
        });
        let at = self.pattern_index(&pattern);
        self.patterns[at].1.push(handler);
        Ok(self)
    }

    fn pattern_index(&mut self, pattern: &Pattern) -> usize {
        match self.patterns.iter().position(|(p, _)| p == pattern) {
            Some(i) => i,
            None => {
                self.patterns.push((pattern.clone(), Vec::new()));
                self.patterns.len() - 1
            }
        }
    }

    /// Routes the events matching the router's patterns through it (each published event
    /// is dispatched once, even when several of its patterns match).
    pub fn route(mut self, router: &Router) -> Self {
        for pattern in router.patterns() {
            self.pattern_index(&pattern);
        }
        self.routers.push(router.clone());
        self
    }

    /// Backoff between attempts to subscribe again after a lost connection.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// Subscribes, and starts dispatching in a background task. On return the subscription
    /// is active: events published afterwards are received. Fails fast when nothing is
    /// subscribed to, and on connection, authentication and permission errors.
    pub async fn start(self) -> Result<PubSubSubscription> {
        if self.exact.is_empty() && self.patterns.is_empty() {
            return Err(Error::Config(
                "a Pub/Sub subscription needs at least one handler (`on`, `on_raw`, `on_pattern` or `route`)".into(),
            ));
        }
        let mut event_types: Vec<String> = self.exact.keys().cloned().collect();
        event_types.sort();
        let spec = PubSubSpec {
            event_types,
            patterns: self.patterns.iter().map(|(p, _)| p.clone()).collect(),
        };
        let stream = self.bus.transport.subscribe(&spec).await?;
        let routers_of = self
            .patterns
            .iter()
            .map(|(pattern, _)| {
                let mut of = Vec::new();
                for (i, router) in self.routers.iter().enumerate() {
                    if router.rules().iter().any(|r| r.pattern() == pattern) {
                        of.push(i);
                    }
                }
                of
            })
            .collect();
        let stats = Arc::new(PubSubStats::default());
        PubSubStats::count(&stats.subscribed);
        let cancel = CancellationToken::new();
        let listener = Listener {
            transport: self.bus.transport.clone(),
            spec,
            exact: self.exact,
            patterns: self.patterns,
            routers: self.routers,
            routers_of,
            backoff: self.reconnect_backoff,
            stats: stats.clone(),
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(listener.run(stream));
        Ok(PubSubSubscription {
            cancel,
            task: Some(task),
            stats,
        })
    }
}

/// Counters of a Pub/Sub subscription.
#[derive(Debug, Default)]
pub struct PubSubStats {
    received: AtomicU64,
    handled: AtomicU64,
    failed: AtomicU64,
    malformed: AtomicU64,
    subscribed: AtomicU64,
}

impl PubSubStats {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Published events received (once per publish, however many patterns matched).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Handler calls (router dispatches included) that succeeded.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Handler calls that failed or panicked (router dispatches with a failing rule
    /// included). Nothing is retried: Pub/Sub is at-most-once.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Messages that were not a valid event (logged and dropped).
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Times the subscription was established: 1 at start, plus one per resubscription
    /// after a lost connection.
    pub fn subscribed(&self) -> u64 {
        self.subscribed.load(Ordering::Relaxed)
    }
}

/// A running Pub/Sub subscription. Dropping it stops it too.
#[derive(Debug)]
pub struct PubSubSubscription {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: Arc<PubSubStats>,
}

impl PubSubSubscription {
    /// Its counters.
    pub fn stats(&self) -> &PubSubStats {
        &self.stats
    }

    /// Unsubscribes, after the handlers of the message being dispatched (if any) finish.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "Pub/Sub listener task failed");
            }
        }
    }

    /// Whether the listener has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for PubSubSubscription {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The background task of a subscription.
struct Listener {
    transport: Arc<dyn PubSubTransport>,
    spec: PubSubSpec,
    exact: HashMap<String, Vec<RawHandler>>,
    patterns: Vec<(Pattern, Vec<RawHandler>)>,
    routers: Vec<Router>,
    /// For each pattern, the routers that have a rule with it.
    routers_of: Vec<Vec<usize>>,
    backoff: Backoff,
    stats: Arc<PubSubStats>,
    cancel: CancellationToken,
}

/// The copies of one publish seen so far (one per matching part of the spec).
#[derive(Default)]
struct Publish {
    key: Option<u64>,
    vias: HashSet<usize>,
    routers_done: HashSet<usize>,
}

/// Publishes whose copies may still arrive: the last [`RECENT_PUBLISHES`]. On one
/// connection a publish's copies arrive back to back; on a cluster the exact channel's copy
/// (`SSUBSCRIBE`, on the channel's shard) and the patterns' (`PSUBSCRIBE`, on another
/// node) come over different connections and interleave with other publishes' copies.
#[derive(Default)]
struct Recent {
    publishes: std::collections::VecDeque<Publish>,
}

/// How many publishes [`Recent`] remembers.
const RECENT_PUBLISHES: usize = 64;

impl Recent {
    /// The publish a copy (`key`, arriving by `via`) belongs to: a remembered one that has
    /// not had a copy by `via` yet, else a new one (`true`).
    fn of(&mut self, key: u64, via: usize) -> (&mut Publish, bool) {
        let found = self
            .publishes
            .iter()
            .rposition(|p| p.key == Some(key) && !p.vias.contains(&via));
        let (index, new) = match found {
            Some(i) => (i, false),
            None => {
                if self.publishes.len() == RECENT_PUBLISHES {
                    self.publishes.pop_front();
                }
                self.publishes.push_back(Publish {
                    key: Some(key),
                    ..Publish::default()
                });
                (self.publishes.len() - 1, true)
            }
        };
        let publish = &mut self.publishes[index];
        publish.vias.insert(via);
        (publish, new)
    }
}

impl Listener {
    async fn run(self, mut stream: Box<dyn PubSubStream>) {
        let mut recent = Recent::default();
        loop {
            loop {
                let message = tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    message = stream.next() => message,
                };
                match message {
                    Some(message) => self.handle(&mut recent, message).await,
                    None => break,
                }
            }
            tracing::warn!(transport = %self.transport.describe(), "Pub/Sub subscription lost; resubscribing");
            match self.resubscribe().await {
                Some(again) => stream = again,
                None => return,
            }
        }
    }

    /// Subscribes again with backoff until it works or the subscription is shut down.
    async fn resubscribe(&self) -> Option<Box<dyn PubSubStream>> {
        let mut attempt = 1;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.backoff.delay(attempt)) => {}
            }
            match self.transport.subscribe(&self.spec).await {
                Ok(stream) => {
                    PubSubStats::count(&self.stats.subscribed);
                    tracing::info!(transport = %self.transport.describe(), "Pub/Sub resubscribed");
                    return Some(stream);
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "Pub/Sub resubscribe failed; backing off");
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    async fn handle(&self, recent: &mut Recent, message: PubSubMessage) {
        let event = match message.event {
            Ok(event) => Arc::new(event),
            Err(malformed) => {
                PubSubStats::count(&self.stats.malformed);
                tracing::warn!(reason = %malformed, "malformed Pub/Sub message dropped");
                return;
            }
        };
        // The backend's match can be coarser than the patterns (Redis globs have no
        // segments): a copy none of whose patterns match was never meant for us.
        if let Via::Patterns(indices) = &message.via {
            let wanted = indices.iter().any(|&i| {
                self.patterns
                    .get(i)
                    .is_some_and(|(p, _)| p.matches(&event.event_type))
            });
            if !wanted {
                return;
            }
        }
        let via_key = match &message.via {
            Via::EventType => usize::MAX,
            Via::Patterns(ix) => ix.first().copied().unwrap_or(usize::MAX - 1),
        };
        // A copy of the same publish arrives once per matching part of the spec; a part
        // seen again means a new publish (of an identical message).
        let (publish, new) = recent.of(message.publish_key, via_key);
        if new {
            PubSubStats::count(&self.stats.received);
        }

        match &message.via {
            Via::EventType => {
                if let Some(handlers) = self.exact.get(&event.event_type) {
                    self.call_all(handlers, &event).await;
                }
            }
            Via::Patterns(indices) => {
                for &i in indices.iter() {
                    let Some((pattern, handlers)) = self.patterns.get(i) else {
                        continue;
                    };
                    if !pattern.matches(&event.event_type) {
                        continue;
                    }
                    self.call_all(handlers, &event).await;
                    for &r in self.routers_of.get(i).into_iter().flatten() {
                        if publish.routers_done.insert(r) {
                            self.route(r, &event).await;
                        }
                    }
                }
            }
        }
    }

    async fn call_all(&self, handlers: &[RawHandler], event: &Arc<Envelope<Value>>) {
        for handler in handlers {
            match call_isolated(handler, event.clone()).await {
                Ok(()) => PubSubStats::count(&self.stats.handled),
                Err(e) => {
                    PubSubStats::count(&self.stats.failed);
                    tracing::warn!(event_type = %event.event_type, error = %e, "Pub/Sub handler failed (not retried)");
                }
            }
        }
    }

    async fn route(&self, router: usize, event: &Envelope<Value>) {
        let Some(router) = self.routers.get(router) else {
            return;
        };
        if router.dispatch(event).await.is_ok() {
            PubSubStats::count(&self.stats.handled);
        } else {
            PubSubStats::count(&self.stats.failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn copies_of_one_publish_count_once_even_interleaved_with_others() {
        let mut recent = Recent::default();
        // Publish 1 by the exact channel, publish 2 by a pattern, then publish 1's pattern
        // copy (another connection, later): two publishes.
        assert!(recent.of(1, usize::MAX).1);
        assert!(recent.of(2, 0).1);
        assert!(!recent.of(1, 0).1);
        // The same message published again comes by a part already seen: a new publish.
        assert!(recent.of(1, usize::MAX).1);
        assert!(!recent.of(1, 0).1);
    }
}
