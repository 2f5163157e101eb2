//! Where a test's keys live — the run's shared server or this process's cluster
//! ([`Server`]) — raw connections to it, and the guard deleting a test's namespace there.

use crate::cluster::{process_cluster, ProcessCluster};
use crate::redis_url;
use eventbus_redis::RedisConfig;

/// The partition lease of the tests' transports: short, so that the partitions of a consumer
/// a test lets die are taken over quickly.
pub const TEST_PARTITION_LEASE: std::time::Duration = std::time::Duration::from_secs(3);

/// The Redis a backend's keys live on: the run's shared server, or this process's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// One server at this URL ([`redis_url`]).
    Single(String),
    /// This test process's cluster ([`process_cluster`]).
    Cluster(&'static ProcessCluster),
}

impl Server {
    /// The run's shared server ([`redis_url`]; the first call may start it).
    pub fn single() -> Self {
        Server::Single(redis_url())
    }

    /// This process's cluster ([`process_cluster`]; the first call starts it).
    pub fn cluster() -> Self {
        Server::Cluster(process_cluster())
    }

    /// Its URL (`redis+cluster://…` for the cluster).
    pub fn url(&self) -> &str {
        match self {
            Server::Single(url) => url,
            Server::Cluster(cluster) => &cluster.url,
        }
    }

    /// The client configuration of `namespace` on it.
    pub fn config(&self, namespace: &str) -> RedisConfig {
        RedisConfig::new(self.url())
            .unwrap_or_else(|e| panic!("{} is not a valid Redis URL: {e}", self.url()))
            .namespace(namespace)
            .partition_lease(TEST_PARTITION_LEASE)
    }

    /// Whether it is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Server::Cluster(_))
    }

    /// `SCAN MATCH {namespace}:*` + `UNLINK` on every master, and `UNLINK` of `extra`
    /// (single server only), on blocking connections. Returns how many keys were deleted.
    pub(crate) fn delete_keys(&self, namespace: &str, extra: &[String]) -> redis::RedisResult<u64> {
        let pattern = format!("{}:*", glob_escape(namespace));
        match self {
            Server::Single(url) => {
                let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
                let mut keys = scan(&mut conn, &pattern)?;
                keys.extend_from_slice(extra);
                let mut deleted = 0;
                for chunk in keys.chunks(500) {
                    deleted += redis::cmd("UNLINK").arg(chunk).query::<u64>(&mut conn)?;
                }
                Ok(deleted)
            }
            Server::Cluster(cluster) => {
                let mut deleted = 0;
                for port in &cluster.ports {
                    let url = format!("redis://127.0.0.1:{port}");
                    let mut conn = redis::Client::open(url)?.get_connection()?;
                    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
                    if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
                    {
                        continue;
                    }
                    // A master holds only keys of its own slots, but of many: one key a command.
                    let keys = scan(&mut conn, &pattern)?;
                    if keys.is_empty() {
                        continue;
                    }
                    let mut unlink = redis::pipe();
                    for key in &keys {
                        unlink.cmd("UNLINK").arg(key);
                    }
                    let counts: Vec<u64> = unlink.query(&mut conn)?;
                    deleted += counts.iter().sum::<u64>();
                }
                Ok(deleted)
            }
        }
    }
}

/// The keys matching `pattern` on the node of `conn` (`SCAN`).
fn scan(conn: &mut redis::Connection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Deletes a test's keys when dropped — at the end of the test, or while a failing test
/// unwinds: every key matching `{namespace}:*` (`SCAN` + `UNLINK`, on every master of a
/// cluster), plus the keys given to [`also`](Self::also). Uses a blocking connection on a
/// thread of its own, so it works from `Drop` inside or outside a runtime.
#[derive(Debug)]
pub struct NamespaceGuard {
    server: Server,
    namespace: String,
    extra: std::sync::Mutex<Vec<String>>,
}

impl NamespaceGuard {
    /// A guard of `namespace` on the run's shared server.
    pub fn new(namespace: impl Into<String>) -> Self {
        NamespaceGuard::on(Server::single(), namespace)
    }

    /// A guard of `namespace` on `server`.
    pub fn on(server: Server, namespace: impl Into<String>) -> Self {
        NamespaceGuard {
            server,
            namespace: namespace.into(),
            extra: std::sync::Mutex::default(),
        }
    }

    /// The namespace it deletes.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Deletes `key` too (a key outside the namespace the test writes, such as the
    /// article's unprefixed read-model keys).
    pub fn also(&self, key: impl Into<String>) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.into());
    }

    /// Deletes the keys now (also done on drop). Returns how many were deleted.
    pub fn delete_now(&self) -> redis::RedisResult<u64> {
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.server.delete_keys(&self.namespace, &extra)
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let server = self.server.clone();
        let namespace = self.namespace.clone();
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // A thread of its own: a blocking connection must not run on a runtime's worker.
        let done = std::thread::spawn(move || server.delete_keys(&namespace, &extra)).join();
        if !matches!(done, Ok(Ok(_))) {
            eprintln!(
                "could not delete the keys of test namespace `{}`: {done:?}",
                self.namespace
            );
        }
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

/// A connection to the one server at `url` without a response timeout (redis-rs's default
/// is 500 ms), for commands that wait on the server, such as `WAIT`.
pub async fn waiting_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Writes `key` (expiring in 60 s) on the server at `url`, then waits up to 30 s for one
/// replica to acknowledge it; returns how many replicas did. `WAIT` waits for the
/// replication offset of its own connection's last write, which is past every write that
/// server took before it, whoever made it (on a connection that wrote nothing it answers at
/// once). On a cluster node, `key` must hash to one of its slots.
pub async fn replicated_write(url: &str, key: &str) -> i64 {
    let mut conn = waiting_connection(url).await;
    let () = redis::cmd("SET")
        .arg(key)
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("SET {key} on {url}: {e}"));
    redis::cmd("WAIT")
        .arg(1)
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("WAIT on {url}: {e}"))
}

/// A raw connection to a [`Server`]; a cluster connection routes each command by its key.
pub enum RawConnection {
    /// To a single server.
    Single(redis::aio::MultiplexedConnection),
    /// To a cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RawConnection {
    /// Connects to `server`.
    pub async fn to(server: &Server) -> Self {
        match server {
            Server::Single(_) => RawConnection::Single(raw_connection().await),
            Server::Cluster(cluster) => RawConnection::Cluster(
                redis::cluster::ClusterClient::new(
                    cluster
                        .ports
                        .iter()
                        .map(|port| format!("redis://127.0.0.1:{port}")),
                )
                .expect("a cluster client")
                .get_async_connection()
                .await
                .expect("a connection to the test cluster"),
            ),
        }
    }

    /// Runs `cmd`.
    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            RawConnection::Single(conn) => cmd.query_async(conn).await,
            RawConnection::Cluster(conn) => cmd.query_async(conn).await,
        }
    }
}
