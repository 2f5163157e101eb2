//! [`RedisPubSub`]: the Pub/Sub bus on Redis, wire-compatible with the reference article's
//! `PubSubEventBus`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::pubsub::{PubSubMessage, PubSubSpec, PubSubStream, PubSubTransport, Via};
use eventbus_core::{Envelope, Result as CoreResult};
use futures_util::StreamExt;
use serde_json::Value;

use crate::client::{manager, RedisClient};
use crate::codec;
use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::error::{Result, Server};
use crate::keys::Keys;
use crate::transport::RedisTransport;

/// Pub/Sub on Redis: `PUBLISH events:{event_type}` with the article's six-key JSON message,
/// `SUBSCRIBE`/`PSUBSCRIBE` on a dedicated connection per subscription.
///
/// **At-most-once**: Redis stores nothing; a subscriber that is disconnected misses what is
/// published meanwhile. [`eventbus_core::PubSubBus`] resubscribes after a lost connection,
/// with backoff. Use the Streams bus ([`RedisTransport`]) when events must not be lost.
///
/// Cheap to clone; publishing goes over one multiplexed connection.
///
/// ```no_run
/// use eventbus_core::PubSubBus;
/// use eventbus_redis::{RedisConfig, RedisPubSub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = RedisPubSub::connect(RedisConfig::from_env()?).await?;
/// let bus = PubSubBus::new(pubsub, "payment-service");
/// bus.publish_raw(&eventbus_core::Envelope::new(
///     "PaymentCompleted", 1, "payment-service",
///     serde_json::json!({"order_id": "ord_123", "amount": 99.99}),
/// )).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisPubSub {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    keys: Keys,
    server: Server,
    conn: Conn,
}

impl std::fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSub")
            .field("server", &self.inner.server.redacted_url)
            .field("channel_prefix", &self.inner.keys.channel_prefix())
            .finish()
    }
}

impl RedisPubSub {
    /// Connects and checks the server answers (`PING`); errors name the server, never the
    /// password.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let server = Server::new(config.redacted_url(), config.password());
        let connected = match config.cluster_client() {
            // Classic Pub/Sub on a cluster: a publish on any node reaches every subscriber.
            Some(client) => match client {
                Ok(client) => client.get_async_connection().await.map(Conn::Cluster),
                Err(e) => Err(e),
            },
            None => manager(&config, Some(config.response_timeout_duration()))
                .await
                .map(Conn::Single),
        };
        let mut conn = connected.map_err(|e| server.transport(&e, "connect"))?;
        redis::cmd("PING")
            .query_async::<redis::Value>(&mut conn)
            .await
            .map_err(|e| server.transport(&e, "PING"))?;
        Ok(RedisPubSub::with_connection(config, server, conn))
    }

    fn with_connection(config: RedisConfig, server: Server, conn: Conn) -> Self {
        let keys = config.keys();
        RedisPubSub {
            inner: Arc::new(Inner {
                config,
                keys,
                server,
                conn,
            }),
        }
    }

    /// Pub/Sub on `client`'s server, sharing its connection for publishing.
    pub fn from_client(client: &RedisClient) -> Self {
        let inner = client.inner();
        RedisPubSub::with_connection(
            inner.config.clone(),
            inner.server.clone(),
            inner.conn.clone(),
        )
    }

    /// The key layout (its channel prefix names the channels).
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }
}

impl RedisTransport {
    /// Pub/Sub on the same server, sharing this transport's connection for publishing.
    pub fn pubsub(&self) -> RedisPubSub {
        RedisPubSub::from_client(self.client())
    }
}

#[async_trait]
impl PubSubTransport for RedisPubSub {
    async fn publish(&self, event: &Envelope<Value>) -> CoreResult<usize> {
        let message = codec::encode_message(event)?;
        let channel = self.inner.keys.channel(&event.event_type);
        let mut conn = self.inner.conn.clone();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.inner.server.transport(&e, "PUBLISH"))?;
        Ok(usize::try_from(receivers).unwrap_or(0))
    }

    async fn subscribe(&self, spec: &PubSubSpec) -> CoreResult<Box<dyn PubSubStream>> {
        let inner = &self.inner;
        let timeout = inner.config.connect_timeout_duration();
        let mut pubsub =
            match tokio::time::timeout(timeout, inner.config.client().get_async_pubsub()).await {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => return Err(inner.server.transport(&e, "connect (Pub/Sub)").into()),
                Err(_) => {
                    return Err(inner.server.timeout(
                        "connect (Pub/Sub)",
                        format!("no connection after {timeout:?}"),
                    ))
                }
            };
        let channels: Vec<String> = spec
            .event_types
            .iter()
            .map(|t| inner.keys.channel(t))
            .collect();
        if !channels.is_empty() {
            pubsub
                .subscribe(&channels)
                .await
                .map_err(|e| inner.server.transport(&e, "SUBSCRIBE"))?;
        }
        // Several patterns can share one glob: one PSUBSCRIBE each, standing for all of them.
        let mut globs: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, pattern) in spec.patterns.iter().enumerate() {
            let glob = inner.keys.channel_glob(pattern);
            match globs.iter_mut().find(|(g, _)| *g == glob) {
                Some((_, indices)) => indices.push(i),
                None => globs.push((glob, vec![i])),
            }
        }
        if !globs.is_empty() {
            let names: Vec<&str> = globs.iter().map(|(g, _)| g.as_str()).collect();
            pubsub
                .psubscribe(&names)
                .await
                .map_err(|e| inner.server.transport(&e, "PSUBSCRIBE"))?;
        }
        let globs = globs
            .into_iter()
            .map(|(glob, indices)| (glob, Arc::from(indices)))
            .collect();
        Ok(Box::new(RedisStream {
            messages: pubsub.into_on_message(),
            globs,
        }))
    }

    fn describe(&self) -> String {
        format!(
            "redis pubsub {} ({}*)",
            self.inner.server.redacted_url,
            self.inner.keys.channel_prefix()
        )
    }
}

struct RedisStream {
    messages: redis::aio::PubSubStream,
    globs: Vec<(String, Arc<[usize]>)>,
}

#[async_trait]
impl PubSubStream for RedisStream {
    async fn next(&mut self) -> Option<PubSubMessage> {
        loop {
            // `None`: the connection is gone; the bus subscribes again.
            let msg = self.messages.next().await?;
            let via = match msg.get_pattern::<Option<String>>() {
                Ok(None) => Via::EventType,
                Ok(Some(glob)) => match self.globs.iter().find(|(g, _)| *g == glob) {
                    Some((_, indices)) => Via::Patterns(indices.clone()),
                    None => continue, // not one of ours
                },
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable Pub/Sub message pattern; dropped");
                    continue;
                }
            };
            let payload = msg.get_payload_bytes();
            let mut hasher = DefaultHasher::new();
            msg.get_channel_name().hash(&mut hasher);
            payload.hash(&mut hasher);
            return Some(PubSubMessage {
                via,
                publish_key: hasher.finish(),
                event: codec::decode_message(payload),
            });
        }
    }
}
