//! Shared support for the integration tests in `tests/tests/`.
//!
//! Every test gets its own key namespace derived from its name plus a random suffix, so tests
//! run in parallel against one Redis without seeing each other's keys, and deletes it when it
//! ends, passed or failed: a [`NamespaceGuard`] (held by [`Backend::Redis`]) deletes
//! `{namespace}:*` when dropped, which unwinding does too, and [`both!`] runs each Redis
//! variant on a runtime of its own that it shuts down (stopping every background task, so
//! none recreates a key) before deleting the namespace once more. A missing Redis fails the
//! test loudly; it never skips. [`redis_url`] is the server of the whole run: the one at
//! `REDIS_URL` (or the default address) when it answers, else a throwaway `redis-server`.
//!
//! Suites that run on a Redis Cluster too use [`all_three!`], which adds a cluster variant
//! per scenario: the backend is then [`Backend::Redis`] on [`Server::Cluster`], the cluster
//! of the test process ([`process_cluster`]), started by its first cluster test and stopped
//! by a watchdog once the process is gone. There every topic is partitioned (hash-tagged
//! keys, qualified entry ids) and a namespace's keys are spread over the masters.

pub mod binaries;
mod cluster;
pub mod scrape;

pub use cluster::{process_cluster, ProcessCluster, RedisCluster};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::pubsub::memory::MemoryPubSub;
use eventbus_core::saga::{MemorySagaStore, SagaStore};
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::transport::{StreamTransport, Topic};
use eventbus_core::PubSubTransport;
use eventbus_redis::{RedisPubSub, RedisSagaStore, RedisTransport};

mod server;
mod shared_server;

pub use server::{
    raw_connection, replicated_write, waiting_connection, NamespaceGuard, RawConnection, Server,
    TEST_PARTITION_LEASE,
};
pub use shared_server::redis_url;

/// A unique namespace for a test.
pub fn namespace(test: &str) -> String {
    format!(
        "test:{test}:{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs the Redis variant of a behaviour test on a runtime of its own: builds the backend,
/// runs `body`, shuts the runtime down (stopping every task the test spawned), deletes the
/// test's namespace, and only then lets a failure (panic) continue.
pub fn run_on_redis<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on(Server::single(), test, body);
}

/// [`run_on_redis`] on this process's cluster ([`process_cluster`], started by the first
/// test that needs it).
pub fn run_on_cluster<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on(Server::cluster(), test, body);
}

fn run_on<F, Fut>(server: Server, test: &str, body: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let namespace = namespace(test);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let backend = Backend::redis_on(server.clone(), namespace.clone()).await;
            body(backend).await;
        })
    }));
    runtime.shutdown_timeout(Duration::from_secs(5));
    NamespaceGuard::on(server, namespace).delete_now().ok();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The backend a behaviour test runs on.
#[derive(Clone)]
pub enum Backend {
    /// The in-memory transport.
    Memory(MemoryTransport),
    /// Redis — the run's shared server or this process's cluster — in its own namespace.
    Redis {
        /// The server or cluster.
        server: Server,
        /// The transport.
        transport: RedisTransport,
        /// The test's namespace.
        namespace: String,
        /// Deletes the namespace when the last clone of the backend is dropped.
        guard: Arc<NamespaceGuard>,
    },
}

impl Backend {
    /// The in-memory backend.
    pub fn memory() -> Self {
        Backend::Memory(MemoryTransport::new())
    }

    /// A Redis backend in a fresh namespace for `test`, deleted when the last clone of the
    /// backend is dropped (also when the test fails).
    pub async fn redis(test: &str) -> Self {
        Backend::redis_in(namespace(test)).await
    }

    /// A Redis backend in `namespace`, deleted when the last clone is dropped.
    pub async fn redis_in(namespace: String) -> Self {
        Backend::redis_on(Server::single(), namespace).await
    }

    /// A backend on this process's cluster ([`process_cluster`], started by the first test
    /// that needs it) in `namespace`, deleted when the last clone is dropped. Every topic of
    /// a cluster is partitioned (hash-tagged keys, qualified entry ids), even with one
    /// partition.
    pub async fn cluster_in(namespace: String) -> Self {
        Backend::redis_on(Server::cluster(), namespace).await
    }

    /// A backend on `server` in `namespace`, deleted when the last clone is dropped.
    pub async fn redis_on(server: Server, namespace: String) -> Self {
        let guard = Arc::new(NamespaceGuard::on(server.clone(), namespace.clone()));
        let transport = RedisTransport::connect(server.config(&namespace))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "integration tests need a Redis at {} (set REDIS_URL): {e}",
                    server.url()
                )
            });
        Backend::Redis {
            server,
            transport,
            namespace,
            guard,
        }
    }

    /// The guard deleting the test's keys (Redis), to add keys outside the namespace.
    pub fn guard(&self) -> Option<&NamespaceGuard> {
        match self {
            Backend::Memory(_) => None,
            Backend::Redis { guard, .. } => Some(guard),
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

    /// The backend's keeper of command clients' reply streams (the transport itself).
    pub fn reply_streams(&self) -> Arc<dyn eventbus_core::ReplyStreams> {
        match self {
            Backend::Memory(t) => Arc::new(t.clone()),
            Backend::Redis { transport, .. } => Arc::new(transport.clone()),
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
            Backend::Redis {
                server, namespace, ..
            } => {
                let config = server
                    .config(namespace)
                    .channel_prefix(format!("{namespace}:events:"));
                Arc::new(RedisPubSub::connect(config).await.unwrap_or_else(|e| {
                    panic!(
                        "integration tests need a Redis at {} (set REDIS_URL): {e}",
                        server.url()
                    )
                }))
            }
        }
    }

    /// Appends an entry that cannot be decoded (invalid JSON in `data`) to a topic's stream
    /// (its partition 0, see [`stream_key`](Self::stream_key)).
    pub async fn append_malformed(&self, topic: &Topic) {
        match self {
            Backend::Memory(t) => {
                t.append_malformed(topic, "`data` is not valid JSON");
            }
            Backend::Redis { server, .. } => {
                let key = self.stream_key(topic).await.expect("a topic has a stream");
                let _: String = RawConnection::to(server)
                    .await
                    .query(redis::cmd("XADD").arg(&key).arg("*").arg(&[
                        ("event_id", "bad-1"),
                        ("event_type", topic_type(topic)),
                        ("source", "python-service"),
                        ("data", "{not json"),
                        ("timestamp", "1700000000.5"),
                        ("metadata", "{}"),
                    ]))
                    .await
                    .expect("XADD of a malformed entry");
            }
        }
    }

    /// Whether it runs on a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Backend::Redis { server, .. } if server.is_cluster())
    }

    /// On a cluster, gives `event_type` `partitions` partitions
    /// ([`RedisTransport::create_topic`]); elsewhere does nothing. The consumers of a group
    /// share a cluster's topic partition by partition (every topic there is partitioned),
    /// where on one node they compete for the entries of a one-partition topic: to share
    /// work on a cluster, a topic needs a partition per consumer.
    pub async fn cluster_partitions(&self, event_type: &str, partitions: u32) {
        if let Backend::Redis { transport, .. } = self {
            if self.is_cluster() {
                transport
                    .create_topic(event_type, partitions)
                    .await
                    .expect("create a partitioned topic");
            }
        }
    }

    /// How long the partitions of a consumer that died stay leased to it before a survivor
    /// of its group takes them over, with its pending entries: the lease time to live on a
    /// cluster ([`TEST_PARTITION_LEASE`]), where every topic is shared by partition
    /// leases; zero elsewhere, where survivors claim idle entries.
    pub fn dead_consumer_lease(&self) -> Duration {
        if self.is_cluster() {
            server::TEST_PARTITION_LEASE
        } else {
            Duration::ZERO
        }
    }

    /// On a cluster, waits until the partitions of `event_type` are held by `n` different
    /// consumers of `group` ([`wait_for_owners`]); elsewhere returns at once.
    pub async fn cluster_owners(&self, group: &str, event_type: &str, n: usize) {
        if let Backend::Redis { transport, .. } = self {
            if self.is_cluster() {
                wait_for_owners(transport, group, event_type, n).await;
            }
        }
    }

    /// The Redis key of partition 0 of a topic's stream: `{ns}:stream:{type}` on a single
    /// node when the topic has one partition, the hash-tagged partition stream on a cluster
    /// (every topic of a cluster is partitioned). `None` in memory.
    pub async fn stream_key(&self, topic: &Topic) -> Option<String> {
        match self {
            Backend::Memory(_) => None,
            Backend::Redis { transport, .. } => {
                let streams = transport
                    .partition_streams(topic)
                    .await
                    .expect("the partition streams of a topic");
                streams.into_iter().next()
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
                ..
            } => Arc::new(
                RedisSagaStore::new(transport).with_state_prefix(format!("{namespace}:saga:")),
            ),
        }
    }

    /// Simulates losing the consumer group (a `FLUSHALL` or failover): deletes every key of
    /// the namespace, on every master of a cluster.
    pub async fn lose_groups(&self) {
        match self {
            Backend::Memory(t) => t.flush(),
            Backend::Redis {
                server, namespace, ..
            } => {
                let (server, namespace) = (server.clone(), namespace.clone());
                tokio::task::spawn_blocking(move || server.delete_keys(&namespace, &[]))
                    .await
                    .expect("the deleting task")
                    .expect("delete the namespace's keys");
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

/// The Redis key of a topic's stream in a namespace, unpartitioned (a single node, one
/// partition); [`Backend::stream_key`] knows partitions and clusters.
pub fn stream_key(namespace: &str, topic: &Topic) -> String {
    eventbus_redis::Keys::new(namespace).stream(topic)
}

/// Everything published so far, read from the global stream by a fresh group (every
/// partition of it), until three reads in a row bring nothing new.
pub async fn published(
    transport: &Arc<dyn StreamTransport>,
) -> Vec<eventbus_core::Envelope<serde_json::Value>> {
    use eventbus_core::transport::{ConsumerSpec, StartFrom};
    let group = format!("inspect-{}", uuid::Uuid::new_v4().simple());
    transport
        .ensure_group(&Topic::All, &group, StartFrom::Beginning)
        .await
        .expect("the inspecting group");
    let consumer = transport
        .consumer(ConsumerSpec {
            group,
            consumer: "inspector".into(),
            topics: vec![Topic::All],
        })
        .await
        .expect("the inspecting consumer");
    let mut events = Vec::new();
    let mut empty = 0;
    while empty < 3 {
        let read = consumer
            .read(1000, Duration::from_millis(100))
            .await
            .expect("read the global stream");
        if read.is_empty() {
            empty += 1;
        } else {
            empty = 0;
        }
        events.extend(read.into_iter().filter_map(|d| d.event.ok()));
    }
    let _ = consumer.close().await;
    events
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

/// Waits until the partitions of `event_type` are held by `n` different consumers of
/// `group`, each partition by one.
pub async fn wait_for_owners(transport: &RedisTransport, group: &str, event_type: &str, n: usize) {
    let topic = Topic::of_type(event_type);
    eventually(
        Duration::from_secs(30),
        &format!("partitions shared by {n} consumers"),
        || async {
            let owners = transport
                .partition_owners(group, &topic)
                .await
                .expect("the partition owners");
            let distinct: std::collections::BTreeSet<&String> = owners.iter().flatten().collect();
            owners.iter().all(Option::is_some) && distinct.len() == n
        },
    )
    .await;
}

/// Runs a behaviour test on both backends: `both!(name)` expects `async fn name(Backend)`,
/// and makes `name::memory` and `name::redis`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::__memory_and_redis!($name);
            }
        )*
    };
}

/// [`both!`] plus `name::cluster`, the test on this process's cluster (started by the first
/// such test, shared by the others, each in a namespace of its own): for the suites that
/// run on a cluster too.
#[macro_export]
macro_rules! all_three {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::__memory_and_redis!($name);

                #[test]
                fn cluster() {
                    $crate::run_on_cluster(stringify!($name), super::$name);
                }
            }
        )*
    };
}

/// The `memory` and `redis` tests of a behaviour test, for [`both!`] and [`all_three!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __memory_and_redis {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn memory() {
            super::$name($crate::Backend::memory()).await;
        }

        #[test]
        fn redis() {
            $crate::run_on_redis(stringify!($name), super::$name);
        }
    };
}

/// A `redis-server` of a test's own ([`binaries::server`]), on a free port, stopped (by pid)
/// when dropped. For tests that kill connections or need a special configuration, so they
/// can't disturb other tests.
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
    /// A server that exits at once (its port was taken meanwhile by another process of the
    /// run) is started again on another port, up to three times.
    pub async fn start(extra: &[&str]) -> Self {
        RedisServer::start_program(binaries::server(), extra).await
    }

    /// [`start`](Self::start) with the server binary `program`.
    async fn start_program(program: std::ffi::OsString, extra: &[&str]) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match RedisServer::try_start(&program, extra).await {
                Ok(server) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "{} did not come up: {}",
            program.display(),
            failures.join("; ")
        );
    }

    /// One attempt of [`start`](Self::start).
    async fn try_start(program: &std::ffi::OsStr, extra: &[&str]) -> Result<Self, String> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("local addr").port()
        };
        let dir = std::env::temp_dir().join(format!(
            "eventbus-redis-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let child = std::process::Command::new(program)
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
            .unwrap_or_else(|e| {
                panic!(
                    "tests that need their own server run `{}` (on the PATH, or set \
                     EVENTBUS_TEST_SERVER): {e}",
                    program.display()
                )
            });
        let server = RedisServer {
            child,
            port,
            tls_port: None,
            _dir: TempDir(dir),
            _cert_dir: None,
        };
        let mut server = server;
        for _ in 0..200 {
            // Accepting connections is enough: a server with a password answers NOAUTH.
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("on port {port} it exited with {status}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("on port {port} it did not answer within 10 s"))
    }

    /// Starts a server ([`binaries::tls_server`]) that also speaks TLS, with a self-signed
    /// certificate made by `openssl` (which must be on the PATH). Its URL is
    /// [`RedisServer::tls_url`].
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
        let mut server = RedisServer::start_program(
            binaries::tls_server(),
            &[
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
            ],
        )
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

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's working directory (removed when it is dropped).
    pub fn dir(&self) -> &std::path::Path {
        &self._dir.0
    }

    /// SIGKILLs the server (a crash: nothing is flushed).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
