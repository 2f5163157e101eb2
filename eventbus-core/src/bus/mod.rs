//! The Streams event bus: publishing, and subscriptions with at-least-once delivery.
//!
//! [`EventBus`] publishes typed events through a [`StreamTransport`]; [`EventBus::subscribe`]
//! builds a [`Subscription`]: a consumer of the service's group that reads in batches,
//! runs handlers with bounded concurrency, acknowledges in batches only what every handler
//! handled, retries failures with backoff, dead-letters what keeps failing or can't be
//! decoded, reclaims what crashed consumers left pending, and drains on shutdown.

mod backoff;
mod consumer;
mod context;
pub(crate) mod handler;
pub use handler::EventMessage;
mod options;
mod stats;
mod subscription;

use std::sync::Arc;

use serde_json::Value;

use crate::envelope::{EntryId, Envelope};
use crate::error::Result;
use crate::event::Event;
use crate::telemetry;
use crate::transport::{StreamTransport, Topic};
use tracing::Instrument;

pub use backoff::Backoff;
pub use context::{Context, DeliveryInfo};
pub use options::{default_consumer_name, KeyFn, OrderBy, SubscriptionOptions};
pub use stats::{ShutdownReport, SubscriptionStats};
pub(crate) use subscription::WrapConsumer;
pub use subscription::{Subscription, SubscriptionBuilder};

/// The consumer group of a service: `{service}-consumers`, as in the reference article.
pub fn group_for_service(service: &str) -> String {
    format!("{service}-consumers")
}

/// Publishes events and opens subscriptions for one service.
///
/// Cheap to clone; clones share the transport.
///
/// Two services on one transport: each event goes to its type's stream, and every service
/// that subscribes reads it in its own consumer group.
///
/// ```
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::{event, Envelope, EventBus, HandlerError, StartFrom};
///
/// #[event(name = "OrderCreated")]
/// pub struct OrderCreated { pub order_id: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = MemoryTransport::new();
/// let orders = EventBus::new(transport.clone(), "order-service");
/// orders.publish(OrderCreated { order_id: "ord_1".into() }).await?;
///
/// // Billing starts later, from the beginning of the stream: it still gets the order.
/// let billing = EventBus::new(transport, "billing-service");
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let subscription = billing
///     .subscribe()
///     .start_from(StartFrom::Beginning)
///     .on(move |e: Envelope<OrderCreated>| {
///         let tx = tx.clone();
///         async move { tx.send((e.source, e.data.order_id)).map_err(HandlerError::from) }
///     })
///     .start()
///     .await?;
/// let (source, order_id) = rx.recv().await.ok_or("no delivery")?;
/// assert_eq!((source.as_str(), order_id.as_str()), ("order-service", "ord_1"));
/// subscription.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EventBus {
    transport: Arc<dyn StreamTransport>,
    service: Arc<str>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("service", &self.service)
            .field("transport", &self.transport.describe())
            .finish()
    }
}

impl EventBus {
    /// A bus for `service` over `transport`.
    pub fn new(transport: impl StreamTransport, service: impl Into<String>) -> Self {
        Self::from_arc(Arc::new(transport), service)
    }

    /// A bus over a shared transport.
    pub fn from_arc(transport: Arc<dyn StreamTransport>, service: impl Into<String>) -> Self {
        let service: String = service.into();
        EventBus {
            transport,
            service: service.into(),
        }
    }

    /// The service name stamped as `source` on published events.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn StreamTransport> {
        &self.transport
    }

    /// Wraps an event in a fresh envelope from this service.
    pub fn envelope<E: Event>(&self, event: E) -> Envelope<E> {
        Envelope::from_event(&*self.service, event)
    }

    /// Publishes one event (new correlation id = its own event id). Returns its entry id in
    /// its type's stream.
    pub async fn publish<E: Event>(&self, event: E) -> Result<EntryId> {
        self.publish_envelope(self.envelope(event)).await
    }

    /// Publishes a prepared envelope (for explicit correlation/causation ids or metadata).
    pub async fn publish_envelope<E: Event>(&self, envelope: Envelope<E>) -> Result<EntryId> {
        let raw = envelope.into_raw()?;
        let mut ids = self.send(vec![raw]).await?;
        ids.pop()
            .ok_or_else(|| crate::Error::Config("transport returned no entry id".into()))
    }

    /// Publishes many events in one pipelined batch; returns their entry ids in order.
    pub async fn publish_batch<E: Event>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Vec<EntryId>> {
        let raw = events
            .into_iter()
            .map(|e| self.envelope(e).into_raw())
            .collect::<Result<Vec<_>>>()?;
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        self.send(raw).await
    }

    /// Publishes envelopes whose payloads are already JSON.
    ///
    /// Each event gets the trace context of its publish in its metadata (`traceparent`,
    /// see [`telemetry::context`]) unless it carries one.
    pub async fn publish_raw(&self, events: &[Envelope<Value>]) -> Result<Vec<EntryId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.send(events.to_vec()).await
    }

    /// Publishes, in a PRODUCER span, with each event's trace context stamped, counted.
    async fn send(&self, mut events: Vec<Envelope<Value>>) -> Result<Vec<EntryId>> {
        let transport = &self.transport;
        let system = transport.system();
        let destination = match events.first() {
            Some(first) if events.iter().all(|e| e.event_type == first.event_type) => {
                transport.destination(&Topic::of_type(&first.event_type))
            }
            _ => "(several)".to_owned(),
        };
        let span = telemetry::spans::publish(system, &destination, &mut events);
        let started = std::time::Instant::now();
        let ids = transport.publish(&events).instrument(span).await?;
        telemetry::metrics::operation("publish", &destination, started.elapsed());
        let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
        for event in &events {
            *counts.entry(event.event_type.as_str()).or_default() += 1;
        }
        for (event_type, n) in counts {
            telemetry::metrics::sent(
                system,
                &transport.destination(&Topic::of_type(event_type)),
                n,
            );
        }
        Ok(ids)
    }

    /// Starts building a subscription in this service's consumer group
    /// (`{service}-consumers`).
    pub fn subscribe(&self) -> SubscriptionBuilder {
        SubscriptionBuilder::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::transport::memory::MemoryTransport;
    use crate::transport::StreamAdmin;
    use crate::HandlerError;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }
    impl Event for Ping {
        const EVENT_TYPE: &'static str = "Ping";
        const VERSION: u32 = 1;
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn handles_acks_and_dead_letters() {
        let transport = MemoryTransport::new();
        let bus = EventBus::new(transport.clone(), "svc");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sub = bus
            .subscribe()
            .max_deliveries(2)
            .retry_backoff(Backoff::constant(Duration::from_millis(5)))
            .on(move |e: Envelope<Ping>| {
                let s = s.clone();
                async move {
                    if e.data.n == 0 {
                        return Err(HandlerError::retryable("zero"));
                    }
                    s.lock().unwrap().push(e.data.n);
                    Ok(())
                }
            })
            .start()
            .await
            .unwrap();
        bus.publish_batch([Ping { n: 1 }, Ping { n: 0 }, Ping { n: 2 }])
            .await
            .unwrap();
        wait_for("two handled, one dead letter", || {
            seen.lock().unwrap().len() == 2 && sub.stats().dead_lettered() == 1
        })
        .await;
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
        assert_eq!(sub.stats().failed_attempts(), 2);
        wait_for("all acked", || sub.stats().acked() == 3).await;
        let dead = transport.dead_letters("svc-consumers", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason.delivery_count, 2);
        sub.shutdown().await.unwrap();
        let lag = transport.lag(Some("svc-consumers")).await.unwrap();
        assert_eq!(lag.iter().map(|l| l.pending).sum::<u64>(), 0);
    }

    #[tokio::test]
    async fn subscription_without_handlers_is_a_config_error() {
        let bus = EventBus::new(MemoryTransport::new(), "svc");
        let err = bus.subscribe().start().await.unwrap_err();
        assert!(matches!(err, crate::Error::Config(_)), "{err}");
    }
}
