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
mod handler;
mod subscription;

use std::sync::Arc;

use serde_json::Value;

use crate::envelope::{EntryId, Envelope};
use crate::error::Result;
use crate::event::Event;
use crate::transport::StreamTransport;

pub use backoff::Backoff;
pub use context::{Context, DeliveryInfo};
pub use handler::EventHandler;
pub use subscription::{
    default_consumer_name, KeyFn, OrderBy, Subscription, SubscriptionBuilder, SubscriptionOptions,
    SubscriptionStats,
};

/// The consumer group of a service: `{service}-consumers`, as in the reference article.
pub fn group_for_service(service: &str) -> String {
    format!("{service}-consumers")
}

/// Publishes events and opens subscriptions for one service.
///
/// Cheap to clone; clones share the transport.
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
        let raw = envelope.to_raw()?;
        let mut ids = self.transport.publish(std::slice::from_ref(&raw)).await?;
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
            .map(|e| self.envelope(e).to_raw())
            .collect::<Result<Vec<_>>>()?;
        self.publish_raw(&raw).await
    }

    /// Publishes envelopes whose payloads are already JSON.
    pub async fn publish_raw(&self, events: &[Envelope<Value>]) -> Result<Vec<EntryId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.transport.publish(events).await
    }

    /// Starts building a subscription in this service's consumer group
    /// (`{service}-consumers`).
    pub fn subscribe(&self) -> SubscriptionBuilder {
        SubscriptionBuilder::new(self.clone())
    }
}
