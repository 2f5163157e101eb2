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
