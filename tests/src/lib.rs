//! Shared support for the integration tests in `tests/tests/`.
//!
//! Every test gets its own key namespace derived from its name plus a random suffix, so tests
//! run in parallel against one Redis without seeing each other's keys. A missing Redis fails
//! the test loudly; it never skips.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::pubsub::memory::MemoryPubSub;
use eventbus_core::saga::{MemorySagaStore, SagaStore};
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::transport::{StreamTransport, Topic};
use eventbus_core::PubSubTransport;
use eventbus_redis::{RedisConfig, RedisPubSub, RedisSagaStore, RedisTransport};

/// `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A unique namespace for a test.
pub fn namespace(test: &str) -> String {
    format!(
        "test:{test}:{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A raw connection, for writing and reading entries the way other clients do.
pub async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).expect("REDIS_URL is not a valid Redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "integration tests need a Redis at {} (set REDIS_URL, or start one with \
             `redis-server --save '' --appendonly no`): {e}",
                redis_url()
            )
        })
}

/// The backend a behaviour test runs on.
#[derive(Clone)]
pub enum Backend {
    /// The in-memory transport.
    Memory(MemoryTransport),
    /// Redis, in its own namespace.
    Redis {
        /// The transport.
        transport: RedisTransport,
        /// The test's namespace.
        namespace: String,
    },
}

impl Backend {
    /// The in-memory backend.
    pub fn memory() -> Self {
        Backend::Memory(MemoryTransport::new())
    }

    /// A Redis backend in a fresh namespace for `test`.
    pub async fn redis(test: &str) -> Self {
        let namespace = namespace(test);
        let config = RedisConfig::new(&redis_url())
            .expect("REDIS_URL is not a valid Redis URL")
            .namespace(namespace.clone());
        let transport = RedisTransport::connect(config).await.unwrap_or_else(|e| {
            panic!(
                "integration tests need a Redis at {} (set REDIS_URL): {e}",
                redis_url()
            )
        });
        Backend::Redis {
            transport,
            namespace,
        }
    }

    /// The read-model store of this backend, with every key under `prefix` (Redis tests pass
    /// their namespace, so that cleanup removes the read models too).
    pub fn read_models(&self, prefix: &str) -> eventbus_core::ReadModels {
        match self {
            Backend::Memory(t) => {
                eventbus_core::ReadModels::new(t.read_models().with_prefix(prefix))
            }
            Backend::Redis { transport, .. } => eventbus_core::ReadModels::new(
                eventbus_redis::RedisReadModels::new(transport).with_prefix(prefix),
            ),
        }
    }

    /// A key prefix unique to this backend's test: `{namespace}:` on Redis, none in memory.
    pub fn prefix(&self) -> String {
        match self {
            Backend::Memory(_) => String::new(),
            Backend::Redis { namespace, .. } => format!("{namespace}:"),
        }
    }

    /// The transport, shared.
    pub fn transport(&self) -> Arc<dyn StreamTransport> {
        match self {
            Backend::Memory(t) => Arc::new(t.clone()),
            Backend::Redis { transport, .. } => Arc::new(transport.clone()),
        }
    }

    /// A Pub/Sub backend: a fresh in-memory one, or Redis with channels under the test's
    /// own prefix (`{namespace}:events:`), so tests can use the article's event type names.
    /// Get it once per test and share it between publishers and subscribers.
    pub async fn pubsub(&self) -> Arc<dyn PubSubTransport> {
        match self {
            Backend::Memory(_) => Arc::new(MemoryPubSub::new()),
            Backend::Redis { namespace, .. } => {
                let config = RedisConfig::new(&redis_url())
                    .expect("REDIS_URL is not a valid Redis URL")
                    .namespace(namespace.clone())
                    .channel_prefix(format!("{namespace}:events:"));
                Arc::new(RedisPubSub::connect(config).await.unwrap_or_else(|e| {
                    panic!(
                        "integration tests need a Redis at {} (set REDIS_URL): {e}",
                        redis_url()
                    )
                }))
            }
        }
    }

    /// Appends an entry that cannot be decoded (invalid JSON in `data`) to a topic's stream.
    pub async fn append_malformed(&self, topic: &Topic) {
        match self {
            Backend::Memory(t) => {
                t.append_malformed(topic, "`data` is not valid JSON");
            }
            Backend::Redis { namespace, .. } => {
                let key = stream_key(namespace, topic);
                let mut conn = raw_connection().await;
                let _: String = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg(&[
                        ("event_id", "bad-1"),
                        ("event_type", topic_type(topic)),
                        ("source", "python-service"),
                        ("data", "{not json"),
                        ("timestamp", "1700000000.5"),
                        ("metadata", "{}"),
                    ])
                    .query_async(&mut conn)
                    .await
                    .expect("XADD of a malformed entry");
            }
        }
    }

    /// A saga store: a fresh in-memory one, or Redis with state under the test's namespace
    /// (`{namespace}:saga:{id}`, so cleanup removes it). Get it once per test and share it
    /// between coordinators and participants.
    pub fn saga_store(&self) -> Arc<dyn SagaStore> {
        match self {
            Backend::Memory(_) => Arc::new(MemorySagaStore::new()),
            Backend::Redis {
                transport,
                namespace,
            } => Arc::new(
                RedisSagaStore::new(transport).with_state_prefix(format!("{namespace}:saga:")),
            ),
        }
    }

    /// Deletes the test's keys (Redis); nothing to do in memory.
    pub async fn cleanup(&self) {
        if let Backend::Redis { transport, .. } = self {
            transport
                .delete_namespace()
                .await
                .expect("delete the test's namespace");
        }
    }

    /// Simulates losing the consumer group (a `FLUSHALL` or failover).
    pub async fn lose_groups(&self) {
        match self {
            Backend::Memory(t) => t.flush(),
            Backend::Redis { namespace, .. } => {
                let mut conn = raw_connection().await;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{namespace}:*"))
                    .query_async(&mut conn)
                    .await
                    .expect("KEYS");
                if !keys.is_empty() {
                    let _: i64 = redis::cmd("DEL")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await
                        .expect("DEL");
                }
            }
        }
    }
}

fn topic_type(topic: &Topic) -> &str {
    match topic {
        Topic::Type(t) => t,
        _ => "",
    }
}

/// The Redis key of a topic's stream in a namespace.
pub fn stream_key(namespace: &str, topic: &Topic) -> String {
    eventbus_redis::Keys::new(namespace).stream(topic)
}

/// Waits until `check` is true, polling, for at most `limit`; panics with `what` otherwise.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a behaviour test on both backends: `both!(name)` expects `async fn name(Backend)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name($crate::Backend::memory()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    let backend = $crate::Backend::redis(stringify!($name)).await;
                    super::$name(backend.clone()).await;
                    backend.cleanup().await;
                }
            }
        )*
    };
}

/// A `redis-server` of a test's own, on a free port, stopped (by pid) when dropped. For tests
/// that kill connections or need a special configuration, so they can't disturb other tests.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    tls_port: Option<u16>,
    _dir: TempDir,
    _cert_dir: Option<TempDir>,
}

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RedisServer {
    /// Starts a server with persistence off plus `extra` arguments, and waits until it answers.
    pub async fn start(extra: &[&str]) -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("local addr").port()
        };
        let dir = std::env::temp_dir().join(format!(
            "eventbus-redis-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect(
                "tests that need their own server run `redis-server`, which must be on the PATH",
            );
        let server = RedisServer {
            child,
            port,
            tls_port: None,
            _dir: TempDir(dir),
            _cert_dir: None,
        };
        for _ in 0..100 {
            // Accepting connections is enough: a server with a password answers NOAUTH.
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} did not come up");
    }

    /// Starts a server that only speaks TLS, with a self-signed certificate made by `openssl`
    /// (which must be on the PATH). Its URL is [`RedisServer::tls_url`].
    pub async fn start_tls() -> Self {
        let dir =
            std::env::temp_dir().join(format!("eventbus-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the TLS test makes its certificate with `openssl`, which must be on the PATH");
        assert!(status.success(), "openssl could not make a certificate");
        let tls_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("local addr").port()
        };
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut server = RedisServer::start(&[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &cert,
            "--tls-auth-clients",
            "no",
        ])
        .await;
        server.tls_port = Some(tls_port);
        server._cert_dir = Some(TempDir(dir));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not open its TLS port {tls_port}");
    }

    /// The `rediss://` URL of a server started with [`RedisServer::start_tls`]
    /// (certificate verification off: the certificate is self-signed).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|p| format!("rediss://127.0.0.1:{p}/#insecure"))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
