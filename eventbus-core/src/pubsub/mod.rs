//! The Pub/Sub broadcast bus: **at-most-once**, nothing stored.
//!
//! A published event goes to the subscribers connected at that moment and nowhere else: a
//! subscriber that is down, reconnecting or not yet subscribed misses it, and nothing is
//! retried. Use it for notifications that may be lost (cache invalidation, live dashboards);
//! use the Streams bus ([`crate::EventBus`]) for anything that must be processed.
//!
//! [`PubSubBus`] is the runtime (typed, raw and pattern handlers, a router, handler
//! isolation, resubscription after a lost connection); [`PubSubTransport`] is the seam a
//! backend implements: Redis `PUBLISH`/`SUBSCRIBE`/`PSUBSCRIBE` in `eventbus-redis`, or
//! [`memory::MemoryPubSub`].
//!
//! ## The message and the envelope
//!
//! On Redis, an event of type `T` is published on channel `events:{T}` as the reference
//! article's JSON object with exactly six keys: `event_type`, `source`, `data`, `timestamp`
//! (a number, seconds), `correlation_id` and `causation_id` (`null` when absent). The
//! envelope's `event_id`, `version` and `metadata` are not sent (the article's consumer
//! rejects any other key). A received message therefore becomes an envelope with a **fresh
//! event id** (generated on receipt), **version 1** and empty metadata; a typed handler of an
//! event whose `VERSION` is above 1 cannot decode Pub/Sub messages, so version such events on
//! Streams.

mod bus;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::Result;
use crate::pattern::Pattern;
use crate::transport::Malformed;

pub use bus::{PubSubBus, PubSubStats, PubSubSubscription, PubSubSubscriptionBuilder};

/// What one subscription listens to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubSubSpec {
    /// Exact event types (Redis: `SUBSCRIBE events:{type}`).
    pub event_types: Vec<String>,
    /// Patterns over event types (Redis: `PSUBSCRIBE` with a glob covering each pattern).
    pub patterns: Vec<Pattern>,
}

impl PubSubSpec {
    /// Whether it listens to nothing.
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.patterns.is_empty()
    }
}

/// Which part of a [`PubSubSpec`] delivered a message.
///
/// One publish reaches a subscription once per part that matches its channel (as Redis sends
/// one `message` for the channel and one `pmessage` per matching pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The subscription to the event type's own channel.
    EventType,
    /// A pattern subscription, standing for these indices of [`PubSubSpec::patterns`]
    /// (several patterns can share one server-side subscription). A backend may deliver on
    /// a coarser match than the patterns (Redis globs); the bus checks each pattern.
    Patterns(Arc<[usize]>),
}

/// One message received on a subscription.
#[derive(Debug, Clone)]
pub struct PubSubMessage {
    /// What delivered it.
    pub via: Via,
    /// Equal for the copies of one publish delivered through several parts of the spec, and
    /// (practically always) different for consecutive distinct publishes.
    pub publish_key: u64,
    /// The event, or why the message could not be decoded.
    pub event: std::result::Result<Envelope<Value>, Malformed>,
}

/// A backend for the Pub/Sub bus.
#[async_trait]
pub trait PubSubTransport: Send + Sync + 'static {
    /// Broadcasts an event to the current subscribers of its type's channel. Returns how
    /// many subscriptions received it (0 is not an error: nobody was listening).
    async fn publish(&self, event: &Envelope<Value>) -> Result<usize>;

    /// Opens a subscription (Redis: a dedicated connection). On return it is subscribed:
    /// events published afterwards are received.
    async fn subscribe(&self, spec: &PubSubSpec) -> Result<Box<dyn PubSubStream>>;

    /// A short human-readable name of the backend and server (no password).
    fn describe(&self) -> String;
}

/// The messages of one open subscription, in the order they were published.
#[async_trait]
pub trait PubSubStream: Send + 'static {
    /// The next message; `None` once the subscription is gone (connection lost or closed),
    /// after which the bus subscribes again.
    async fn next(&mut self) -> Option<PubSubMessage>;
}
