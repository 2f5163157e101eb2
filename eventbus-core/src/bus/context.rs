//! What a handler knows about the delivery it handles, and how it emits follow-up events.

use std::sync::Arc;

use serde_json::Value;

use crate::bus::EventBus;
use crate::envelope::{EntryId, Envelope};
use crate::error::Result;
use crate::event::Event;
use crate::transport::Topic;

/// Where a delivery came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The stream it was read from.
    pub topic: Topic,
    /// The entry id in that stream.
    pub entry_id: EntryId,
    /// Deliveries so far, this one included.
    pub delivery_count: u32,
    /// The consumer group.
    pub group: String,
    /// The consumer's name.
    pub consumer: String,
}

/// Handed to handlers with each event: delivery facts, and publishing that propagates the
/// correlation id and names the handled event as the cause.
///
/// A billing handler charges each order; the payment it publishes through its context
/// continues the order's flow:
///
/// ```
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::{event, Context, Envelope, EventBus, HandlerError};
///
/// #[event(name = "OrderCreated")]
/// pub struct OrderCreated { pub order_id: String }
///
/// #[event(name = "PaymentCompleted")]
/// pub struct PaymentCompleted { pub order_id: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = EventBus::new(MemoryTransport::new(), "billing");
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let subscription = bus
///     .subscribe()
///     .on(|e: Envelope<OrderCreated>, ctx: Context| async move {
///         assert_eq!(ctx.delivery().delivery_count, 1);
///         ctx.publish(PaymentCompleted { order_id: e.data.order_id }).await?;
///         Ok(())
///     })
///     .on(move |e: Envelope<PaymentCompleted>| {
///         let tx = tx.clone();
///         async move { tx.send((e.correlation_id, e.causation_id)).map_err(HandlerError::from) }
///     })
///     .start()
///     .await?;
///
/// let order = bus.envelope(OrderCreated { order_id: "ord_1".into() });
/// let order_id = Some(order.event_id.clone());
/// bus.publish_envelope(order).await?;
/// // The payment names the order as its cause, and carries the flow's correlation id
/// // (the order's id, as the order had none).
/// let (correlation_id, causation_id) = rx.recv().await.ok_or("no payment")?;
/// assert_eq!((correlation_id, causation_id), (order_id.clone(), order_id));
/// subscription.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Context {
    bus: EventBus,
    cause: Arc<Envelope<Value>>,
    delivery: Arc<DeliveryInfo>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("event_id", &self.cause.event_id)
            .field("delivery", &self.delivery)
            .finish()
    }
}

crate::handler::context_extractor!(Context);

impl Context {
    pub(crate) fn new(
        bus: EventBus,
        cause: Arc<Envelope<Value>>,
        delivery: Arc<DeliveryInfo>,
    ) -> Self {
        Context {
            bus,
            cause,
            delivery,
        }
    }

    /// The delivery being handled.
    pub fn delivery(&self) -> &DeliveryInfo {
        &self.delivery
    }

    /// The correlation id of the flow (the handled event's, or its event id when it had none).
    pub fn correlation_id(&self) -> &str {
        self.cause
            .correlation_id
            .as_deref()
            .unwrap_or(&self.cause.event_id)
    }

    /// The bus of the subscribing service.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// Publishes an event caused by the handled one: same correlation id, causation id = the
    /// handled event's id.
    pub async fn publish<E: Event>(&self, event: E) -> Result<EntryId> {
        let envelope = self.bus.envelope(event).caused_by(&self.cause);
        self.bus.publish_envelope(envelope).await
    }
}
