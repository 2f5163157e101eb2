//! [`RedisClient`]: one Redis server and namespace — its configuration, key layout and
//! shared connection — that every Redis store of this crate is built from.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use std::time::Instant;

use eventbus_core::{Error as CoreError, Result as CoreResult, TransportErrorKind};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Value};

use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::error::{kind_of, Error, Result, Server};
use crate::keys::Keys;
use crate::reply;
use crate::server_info::ServerInfo;

/// A connection to one Redis server, in one namespace: the configuration, the key layout
/// ([`Keys`]) and one multiplexed connection (a `ConnectionManager`, which reconnects with
/// exponential backoff).
///
/// Every Redis backend of this crate is built from a client and shares its connection:
/// [`RedisTransport::from_client`](crate::RedisTransport::from_client),
/// [`RedisReadModels::from_client`](crate::RedisReadModels::from_client),
/// [`RedisEventStore::from_client`](crate::RedisEventStore::from_client),
/// [`RedisSagaStore::from_client`](crate::RedisSagaStore::from_client) and
/// [`RedisPubSub::from_client`](crate::RedisPubSub::from_client). Cheap to clone: clones
/// share the connection.
///
/// ```no_run
/// use eventbus_redis::{RedisClient, RedisConfig, RedisReadModels, RedisTransport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = RedisClient::connect(RedisConfig::from_env()?).await?;
/// let transport = RedisTransport::from_client(client.clone());
/// let read_models = RedisReadModels::from_client(&client);
/// # let _ = (transport, read_models);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

/// What a client knows of the namespace's partitions (its methods, in `partition`, read
/// and cache them).
#[derive(Debug, Default)]
pub(crate) struct Directory {
    /// The namespace's partition tags, as far as loaded.
    pub(crate) tags: RwLock<Vec<String>>,
    /// Partition count per event type, and when it was read.
    pub(crate) counts: Mutex<HashMap<String, (u32, Instant)>>,
    /// The global stream's partition count (the number of tags), and when it was read.
    pub(crate) global: Mutex<Option<(u32, Instant)>>,
    /// Round-robin position for events without a key.
    pub(crate) next: AtomicU64,
    /// Event types this client pinned for the event store (cluster), with their partition
    /// count, which can't change once pinned.
    pub(crate) pinned: Mutex<HashMap<String, u32>>,
    /// The partition count each aggregate type's aggregates are placed by (cluster), which
    /// never changes once stored.
    pub(crate) aggregates: Mutex<HashMap<String, u32>>,
}

/// What the clones of a client share.
pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) server: Server,
    pub(crate) conn: Conn,
    /// What is known of the namespace's partitions.
    pub(crate) partitions: Directory,
    /// Whether the namespace writes the global stream, as last read, and when (see
    /// `settings`).
    pub(crate) settings: Mutex<Option<(bool, Instant)>>,
    server_info: ServerInfo,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("server", &self.inner.server.redacted_url)
            .field("namespace", &self.inner.keys.namespace())
            .field("server_info", &self.inner.server_info)
            .finish()
    }
}

impl RedisClient {
    /// Connects and checks the server answers (`PING`).
    ///
    /// An unreachable server, a wrong password or a missing ACL permission fails here with an
    /// error naming the server (never the password). Also reads the server version (when the
    /// ACL user may run `INFO`), and warns (`tracing`) when the eviction policy is
    /// `allkeys-*` (when it may run `CONFIG GET`), under which Redis may evict whole streams
    /// together with their consumer groups.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        if let Some((replicas, wait)) = config.publish_replicas() {
            let response = config.response_timeout_duration();
            if wait >= response {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "publish_wait_for_replicas({replicas}, {} ms) waits as long as or \
                         longer than response_timeout ({} ms): the reply to its WAIT would be \
                         given up on first; wait less or raise response_timeout",
                        wait.as_millis(),
                        response.as_millis()
                    ),
                });
            }
        }
        if config.is_tls() {
            install_crypto_provider();
        }
        let server = Server::new(config.redacted_url(), config.password());
        let mut probe = probe(&config, &server).await?;
        redis::cmd("PING")
            .query_async::<Value>(&mut probe)
            .await
            .map_err(|e| server.transport(&e, "PING"))?;

        let server_info = match redis::cmd("INFO")
            .arg("server")
            .query_async::<Value>(&mut probe)
            .await
        {
            // A cluster answers per master (a map of node to text): any master will do.
            Ok(info) => ServerInfo::parse(&info_text(&info).unwrap_or_default()),
            // A least-privilege ACL user may not run INFO: the version is only informative.
            Err(e) if kind_of(&e) == TransportErrorKind::Permission => {
                tracing::debug!(server = %server.redacted_url, "no permission for INFO: server version unknown");
                ServerInfo::default()
            }
            Err(e) => return Err(server.transport(&e, "INFO server").into()),
        };
        tracing::info!(
            server = %server.redacted_url,
            server_name = %server_info.name,
            server_version = %server_info.version,
            redis_version = %server_info.redis_version,
            "connected to {server_info}"
        );
        check_eviction_policy(&mut probe, &server).await;

        let conn = match &probe {
            // A cluster connection routes by slot and follows the topology: share it.
            Conn::Cluster(_) => probe.clone(),
            Conn::Single(_) | Conn::Plain(_) => Conn::Single(
                manager(&config, Some(config.response_timeout_duration()))
                    .await
                    .map_err(|e| server.transport(&e, "connect"))?,
            ),
        };
        let keys = config.keys();
        Ok(RedisClient {
            inner: Arc::new(Inner {
                config,
                keys,
                server,
                conn,
                partitions: Default::default(),
                settings: Mutex::new(None),
                server_info,
            }),
        })
    }

    /// Connects to `REDIS_URL` (default `redis://127.0.0.1:6379`) with default settings.
    pub async fn from_env() -> Result<Self> {
        RedisClient::connect(RedisConfig::from_env()?).await
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The server's `redis_version`, as reported by `INFO server` when connecting; empty when
    /// the ACL user may not run `INFO`. On Valkey it is the Redis version Valkey is compatible
    /// with (`7.2.4` for Valkey 8): [`server`](Self::server) tells which server it is and its
    /// own version.
    pub fn server_version(&self) -> &str {
        &self.inner.server_info.redis_version
    }

    /// Which server it is connected to — Redis or Valkey — and its version, as reported by
    /// `INFO server` when connecting (empty fields when the ACL user may not run `INFO`).
    pub fn server(&self) -> &ServerInfo {
        &self.inner.server_info
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn shared(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    /// A connection of its own (see [`Inner::dedicated_connection`]).
    pub(crate) async fn dedicated_connection(&self) -> CoreResult<Conn> {
        self.inner.dedicated_connection().await
    }
}

impl Inner {
    /// A connection of its own (for blocking reads, which must not stall the shared one),
    /// with the configured timeouts and reconnect backoff and no response timeout.
    /// A connection of its own, without a response timeout (for blocking reads): a new
    /// reconnecting connection to the node, or a new cluster connection.
    pub(crate) async fn dedicated_connection(&self) -> CoreResult<Conn> {
        let connected = match self.config.cluster_client() {
            Some(client) => match client {
                Ok(client) => client.get_async_connection().await.map(Conn::Cluster),
                Err(e) => Err(e),
            },
            None => manager(&self.config, None).await.map(Conn::Single),
        };
        connected.map_err(|e| CoreError::Transport(self.server.transport(&e, "connect")))
    }
}

/// A `ConnectionManager` with this configuration's timeouts and reconnect backoff.
pub(crate) async fn manager(
    config: &RedisConfig,
    response_timeout: Option<Duration>,
) -> redis::RedisResult<ConnectionManager> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout_duration()))
        .set_response_timeout(response_timeout)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(5))
        .set_number_of_retries(6);
    ConnectionManager::new_with_config(config.client().clone(), manager_config).await
}

async fn check_eviction_policy(conn: &mut impl ConnectionLike, server: &Server) {
    let reply = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Value>(conn)
        .await;
    let policy = match reply {
        Ok(value) => reply::map(&value)
            .and_then(|pairs| reply::field(&pairs, "maxmemory-policy").and_then(reply::text)),
        Err(e) => {
            tracing::debug!(server = %server.redacted_url, error = %e, "cannot read maxmemory-policy");
            None
        }
    };
    if let Some(policy) = policy.filter(|p| p.starts_with("allkeys-")) {
        tracing::warn!(
            server = %server.redacted_url,
            maxmemory_policy = %policy,
            "Redis may evict whole streams together with their consumer groups under this \
             eviction policy; use noeviction or a volatile-* policy for the event bus"
        );
    }
}

/// Installs rustls' ring provider as the process default, once (an already installed
/// provider is kept).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The first connection: a multiplexed one to the node (for the checks made once), or the
/// cluster connection.
async fn probe(config: &RedisConfig, server: &Server) -> Result<Conn> {
    let connected = match config.cluster_client() {
        Some(client) => match client {
            Ok(client) => client.get_async_connection().await.map(Conn::Cluster),
            Err(e) => Err(e),
        },
        None => {
            let probe_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout_duration()))
                .set_response_timeout(Some(config.response_timeout_duration()));
            config
                .client()
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await
                .map(Conn::Plain)
        }
    };
    connected.map_err(|e| server.transport(&e, "connect").into())
}

/// The text of an `INFO` reply: a node's, or the first master's of a cluster's per-node map.
fn info_text(value: &Value) -> Option<String> {
    match value {
        Value::Map(nodes) => nodes.first().and_then(|(_, info)| reply::text(info)),
        other => reply::text(other),
    }
}
