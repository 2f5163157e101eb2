//! Shared helpers of the Redis integration tests: a real server at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`), one key namespace per test, deleted when the test ends —
//! also when it fails: a [`Namespace`] deletes `{namespace}:*` when dropped, which
//! unwinding does too.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use eventbus_core::transport::{ConsumerSpec, StreamConsumer, Topic};
use eventbus_redis::{RedisConfig, RedisTransport};
use redis::aio::MultiplexedConnection;

/// The server the tests run against: the workspace's, started for the run if none answers.
pub use eventbus_tests::redis_url;

/// A test's key namespace: deletes every key under it (`SCAN` + `UNLINK`, on a blocking
/// connection in a thread of its own) when dropped, whether the test passed or panicked.
/// Derefs to the namespace string.
#[derive(Debug)]
pub struct Namespace(String);

impl Namespace {
    /// A fresh namespace `{prefix}:{uuid}`.
    pub fn new(prefix: &str) -> Self {
        Namespace(format!("{prefix}:{}", uuid::Uuid::new_v4().simple()))
    }
}

impl std::ops::Deref for Namespace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let mut pattern = String::new();
        for c in self.0.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        let done = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(redis_url())?.get_connection()?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK").arg(keys).query::<i64>(&mut conn)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!(
                "could not delete the keys of test namespace `{}`: {done:?}",
                self.0
            );
        }
    }
}

/// A test's transport, its namespace and a raw connection for inspection. Dropping it
/// deletes the namespace.
pub struct Ctx {
    pub transport: RedisTransport,
    pub namespace: String,
    pub raw: MultiplexedConnection,
    _guard: Namespace,
}

/// Connects in a fresh namespace `test:{name}:{uuid}`. A missing Redis fails the test loudly.
pub async fn setup(name: &str) -> Ctx {
    let guard = Namespace::new(&format!("test:{name}"));
    let namespace = guard.to_string();
    let url = redis_url();
    let config = RedisConfig::new(&url)
        .expect("REDIS_URL is not a valid Redis URL")
        .namespace(&namespace);
    let transport = RedisTransport::connect(config).await.unwrap_or_else(|e| {
        panic!(
            "these tests need a Redis server at {url} (set REDIS_URL, or run `redis-server`): {e}"
        )
    });
    let raw = raw_connection().await;
    Ctx {
        transport,
        namespace,
        raw,
        _guard: guard,
    }
}

/// A plain connection to the test server.
pub async fn raw_connection() -> MultiplexedConnection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("these tests need a Redis server at {url}: {e}"))
}

impl Ctx {
    /// The key of a topic's stream.
    pub fn stream(&self, topic: &Topic) -> String {
        self.transport.keys().stream(topic)
    }

    /// Opens a consumer of `group` named `name` on one topic.
    pub async fn consumer(
        &self,
        group: &str,
        name: &str,
        topic: &Topic,
    ) -> Box<dyn StreamConsumer> {
        self.consumer_of(group, name, vec![topic.clone()]).await
    }

    /// Opens a consumer of `group` named `name` on `topics`.
    pub async fn consumer_of(
        &self,
        group: &str,
        name: &str,
        topics: Vec<Topic>,
    ) -> Box<dyn StreamConsumer> {
        use eventbus_core::StreamTransport;
        self.transport
            .consumer(ConsumerSpec {
                group: group.into(),
                consumer: name.into(),
                topics,
            })
            .await
            .unwrap()
    }

    /// Runs a raw command.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.raw.clone()).await.unwrap()
    }

    /// Raw `XRANGE key - +` as (id, fields) pairs.
    pub async fn xrange(&self, key: &str) -> Vec<(String, Vec<(String, String)>)> {
        let raw: Vec<(String, Vec<String>)> = self
            .cmd(redis::cmd("XRANGE").arg(key).arg("-").arg("+"))
            .await;
        raw.into_iter()
            .map(|(id, flat)| {
                (
                    id,
                    flat.chunks(2)
                        .map(|p| (p[0].clone(), p[1].clone()))
                        .collect(),
                )
            })
            .collect()
    }
}
