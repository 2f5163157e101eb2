//! The in-memory Pub/Sub backend: broadcast to current subscribers only, as on Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::envelope::{new_id, Envelope};
use crate::error::Result;
use crate::pubsub::{PubSubMessage, PubSubSpec, PubSubStream, PubSubTransport, Via};

/// An in-process Pub/Sub backend with the semantics of Redis Pub/Sub: a publish reaches the
/// subscriptions open at that moment, once per matching part of each (its event type, each
/// matching pattern); nothing is stored. Received events get a fresh event id, version 1 and
/// no metadata, exactly as over Redis's six-key JSON message.
///
/// Cheap to clone; clones share the subscribers. [`disconnect_all`](Self::disconnect_all)
/// simulates a lost connection.
#[derive(Clone, Default)]
pub struct MemoryPubSub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    subscribers: Mutex<Vec<Subscriber>>,
    publishes: AtomicU64,
}

struct Subscriber {
    spec: PubSubSpec,
    tx: mpsc::UnboundedSender<PubSubMessage>,
}

impl std::fmt::Debug for MemoryPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPubSub").finish_non_exhaustive()
    }
}

impl MemoryPubSub {
    /// A backend without subscribers.
    pub fn new() -> Self {
        MemoryPubSub::default()
    }

    /// Closes every open subscription, as a dropped connection would.
    pub fn disconnect_all(&self) {
        self.subscribers().clear();
    }

    /// Open subscriptions.
    pub fn subscriber_count(&self) -> usize {
        let mut subs = self.subscribers();
        subs.retain(|s| !s.tx.is_closed());
        subs.len()
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        // The lock guards a plain list; a panic elsewhere can't leave it inconsistent.
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a receiver gets: the six keys of the wire message, nothing else.
fn as_received(event: &Envelope<Value>) -> Envelope<Value> {
    Envelope {
        event_id: new_id(),
        event_type: event.event_type.clone(),
        version: 1,
        source: event.source.clone(),
        timestamp: event.timestamp,
        correlation_id: event.correlation_id.clone(),
        causation_id: event.causation_id.clone(),
        metadata: Default::default(),
        data: event.data.clone(),
    }
}

#[async_trait]
impl PubSubTransport for MemoryPubSub {
    async fn publish(&self, event: &Envelope<Value>) -> Result<usize> {
        let key = self.inner.publishes.fetch_add(1, Ordering::Relaxed);
        let mut delivered = 0;
        let mut subs = self.subscribers();
        subs.retain(|s| !s.tx.is_closed());
        for sub in subs.iter() {
            let mut vias = Vec::new();
            if sub.spec.event_types.contains(&event.event_type) {
                vias.push(Via::EventType);
            }
            for (i, pattern) in sub.spec.patterns.iter().enumerate() {
                if pattern.matches(&event.event_type) {
                    vias.push(Via::Patterns(Arc::from([i])));
                }
            }
            // Copies of one publish are sent together, under the lock, as Redis does.
            for via in vias {
                let message = PubSubMessage {
                    via,
                    publish_key: key,
                    event: Ok(as_received(event)),
                };
                if sub.tx.send(message).is_ok() {
                    delivered += 1;
                }
            }
        }
        Ok(delivered)
    }

    async fn subscribe(&self, spec: &PubSubSpec) -> Result<Box<dyn PubSubStream>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers().push(Subscriber {
            spec: spec.clone(),
            tx,
        });
        Ok(Box::new(MemoryStream { rx }))
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

struct MemoryStream {
    rx: mpsc::UnboundedReceiver<PubSubMessage>,
}

#[async_trait]
impl PubSubStream for MemoryStream {
    async fn next(&mut self) -> Option<PubSubMessage> {
        self.rx.recv().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;

    #[tokio::test]
    async fn broadcast_to_current_subscribers_only() {
        let bus = MemoryPubSub::new();
        let event = Envelope::new("Order.Created", 3, "svc", serde_json::json!({"n": 1}))
            .with_metadata("k", "v");
        assert_eq!(bus.publish(&event).await.unwrap(), 0, "nobody listens yet");

        let spec = PubSubSpec {
            event_types: vec!["Order.Created".into()],
            patterns: vec![
                Pattern::parse("Order.*").unwrap(),
                Pattern::parse("X").unwrap(),
            ],
        };
        let mut sub = bus.subscribe(&spec).await.unwrap();
        assert_eq!(bus.publish(&event).await.unwrap(), 2);
        let first = sub.next().await.unwrap();
        let second = sub.next().await.unwrap();
        assert_eq!(first.via, Via::EventType);
        assert_eq!(second.via, Via::Patterns(Arc::from([0])));
        assert_eq!(first.publish_key, second.publish_key);
        let received = first.event.unwrap();
        assert_ne!(received.event_id, event.event_id);
        assert_eq!(received.version, 1);
        assert!(received.metadata.is_empty());
        assert_eq!(received.data, event.data);

        bus.disconnect_all();
        assert!(sub.next().await.is_none());
        assert_eq!(bus.subscriber_count(), 0);
    }
}
