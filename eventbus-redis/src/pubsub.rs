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
/// On a Redis Cluster (Redis 7.0 or later) events go over **sharded Pub/Sub** on the same
/// channel names: `SPUBLISH events:{event_type}` reaches the `SSUBSCRIBE`rs of that channel
/// on the master of its slot only. Sharded Pub/Sub has no patterns, so a publish on a
/// cluster also sends a plain `PUBLISH` of the same message, which the cluster broadcasts to
/// every node, and pattern handlers `PSUBSCRIBE` as on one node; a subscription there is one
/// RESP3 cluster connection (sharded channels on their masters, patterns on one node).
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
    /// `PUBLISH`; on a cluster `SPUBLISH` (to the channel's exact subscribers) then
    /// `PUBLISH` (to pattern subscribers), the receivers of both summed. On a cluster the
    /// count of the `PUBLISH` covers the node that took it only: pattern subscribers on other
    /// nodes receive the message but are not counted.
    async fn publish(&self, event: &Envelope<Value>) -> CoreResult<usize> {
        let message = codec::encode_message(event)?;
        let channel = self.inner.keys.channel(&event.event_type);
        let commands: &[&str] = if self.inner.config.is_cluster() {
            &["SPUBLISH", "PUBLISH"]
        } else {
            &["PUBLISH"]
        };
        let mut receivers = 0;
        for command in commands {
            let mut conn = self.inner.conn.clone();
            let count: i64 = redis::cmd(command)
                .arg(&channel)
                .arg(&message)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.inner.server.transport(&e, command))?;
            receivers += usize::try_from(count).unwrap_or(0);
        }
        Ok(receivers)
    }

    async fn subscribe(&self, spec: &PubSubSpec) -> CoreResult<Box<dyn PubSubStream>> {
        if self.inner.config.is_cluster() {
            return self.subscribe_sharded(spec).await;
        }
        let inner = &self.inner;
        let mut pubsub = self
            .connect_within(inner.config.client().get_async_pubsub())
            .await?;
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
        let globs = self.globs(spec);
        if !globs.is_empty() {
            let names: Vec<&str> = globs.iter().map(|(g, _)| g.as_str()).collect();
            pubsub
                .psubscribe(&names)
                .await
                .map_err(|e| inner.server.transport(&e, "PSUBSCRIBE"))?;
        }
        Ok(Box::new(RedisStream {
            messages: pubsub.into_on_message(),
            globs: shared(globs),
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

impl RedisPubSub {
    /// A subscription's connection, within the connect timeout.
    async fn connect_within<T>(
        &self,
        connect: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> CoreResult<T> {
        let inner = &self.inner;
        let timeout = inner.config.connect_timeout_duration();
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(inner.server.transport(&e, "connect (Pub/Sub)").into()),
            Err(_) => Err(inner.server.timeout(
                "connect (Pub/Sub)",
                format!("no connection after {timeout:?}"),
            )),
        }
    }

    /// The `PSUBSCRIBE` globs of a spec's patterns, each with the patterns it stands for
    /// (several patterns can share one glob: one `PSUBSCRIBE` each).
    fn globs(&self, spec: &PubSubSpec) -> Vec<(String, Vec<usize>)> {
        let mut globs: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, pattern) in spec.patterns.iter().enumerate() {
            let glob = self.inner.keys.channel_glob(pattern);
            match globs.iter_mut().find(|(g, _)| *g == glob) {
                Some((_, indices)) => indices.push(i),
                None => globs.push((glob, vec![i])),
            }
        }
        globs
    }

    /// A subscription on a cluster: one RESP3 cluster connection of its own, `SSUBSCRIBE`
    /// to each event type's channel (on the master of its slot, one command per channel
    /// since channels of different slots can't share one) and `PSUBSCRIBE` to each glob
    /// (any node hears a plain `PUBLISH`). The stream ends when a node's connection drops,
    /// so the bus subscribes again (with backoff) on a fresh connection that follows the
    /// cluster's current topology.
    async fn subscribe_sharded(&self, spec: &PubSubSpec) -> CoreResult<Box<dyn PubSubStream>> {
        let inner = &self.inner;
        let (sender, pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = match inner.config.cluster_subscriber(sender) {
            Some(Ok(client)) => client,
            Some(Err(e)) => return Err(inner.server.transport(&e, "connect (Pub/Sub)").into()),
            None => {
                return Err(inner
                    .server
                    .protocol("connect (Pub/Sub)", "not a cluster configuration"))
            }
        };
        let mut conn = self.connect_within(client.get_async_connection()).await?;
        for event_type in &spec.event_types {
            conn.ssubscribe(inner.keys.channel(event_type))
                .await
                .map_err(|e| inner.server.transport(&e, "SSUBSCRIBE"))?;
        }
        let globs = self.globs(spec);
        for (glob, _) in &globs {
            conn.psubscribe(glob)
                .await
                .map_err(|e| inner.server.transport(&e, "PSUBSCRIBE"))?;
        }
        Ok(Box::new(ShardedStream {
            _conn: conn,
            pushes,
            globs: shared(globs),
        }))
    }
}

fn shared(globs: Vec<(String, Vec<usize>)>) -> Vec<(String, Arc<[usize]>)> {
    globs
        .into_iter()
        .map(|(glob, indices)| (glob, Arc::from(indices)))
        .collect()
}

/// Which part of a spec a message came by: its event type's channel (`pattern` `None`) or
/// the patterns of a glob; `None` for a glob that is not ours.
fn via_of(globs: &[(String, Arc<[usize]>)], pattern: Option<&[u8]>) -> Option<Via> {
    match pattern {
        None => Some(Via::EventType),
        Some(glob) => globs
            .iter()
            .find(|(g, _)| g.as_bytes() == glob)
            .map(|(_, indices)| Via::Patterns(indices.clone())),
    }
}

/// A message as the bus takes it; `publish_key` tells copies of one publish apart from
/// another publish.
fn message(via: Via, channel: &[u8], payload: &[u8]) -> PubSubMessage {
    let mut hasher = DefaultHasher::new();
    channel.hash(&mut hasher);
    payload.hash(&mut hasher);
    PubSubMessage {
        via,
        publish_key: hasher.finish(),
        event: codec::decode_message(payload),
    }
}

/// The messages of a subscription on a cluster: the push messages of its connection.
struct ShardedStream {
    /// Kept open while the subscription runs.
    _conn: redis::cluster_async::ClusterConnection,
    pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    globs: Vec<(String, Arc<[usize]>)>,
}

#[async_trait]
impl PubSubStream for ShardedStream {
    async fn next(&mut self) -> Option<PubSubMessage> {
        loop {
            let push = self.pushes.recv().await?;
            let bytes = |value: &redis::Value| match value {
                redis::Value::BulkString(bytes) => Some(bytes.clone()),
                redis::Value::SimpleString(text) => Some(text.clone().into_bytes()),
                _ => None,
            };
            let parts: Vec<Option<Vec<u8>>> = push.data.iter().map(bytes).collect();
            let (pattern, channel, payload) = match (push.kind, parts.as_slice()) {
                // A node's connection dropped: end, so the bus subscribes again.
                (redis::PushKind::Disconnection, _) => return None,
                (redis::PushKind::SMessage | redis::PushKind::Message, [Some(c), Some(p)]) => {
                    (None, c, p)
                }
                (redis::PushKind::PMessage, [Some(g), Some(c), Some(p)]) => (Some(g), c, p),
                // Subscription confirmations and anything else.
                _ => continue,
            };
            let Some(via) = via_of(&self.globs, pattern.map(Vec::as_slice)) else {
                continue; // not one of ours
            };
            return Some(message(via, channel, payload));
        }
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
            return Some(message(
                via,
                msg.get_channel_name().as_bytes(),
                msg.get_payload_bytes(),
            ));
        }
    }
}
