//! Shared helpers of the Redis integration tests: a real server at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`), one key namespace per test.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod server;

use eventbus_core::transport::{ConsumerSpec, StreamConsumer, Topic};
use eventbus_redis::{RedisConfig, RedisTransport};
use redis::aio::MultiplexedConnection;

/// The server the tests run against.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A test's transport, its namespace and a raw connection for inspection.
pub struct Ctx {
    pub transport: RedisTransport,
    pub namespace: String,
    pub raw: MultiplexedConnection,
}

/// Connects in a fresh namespace `test:{name}:{uuid}`. A missing Redis fails the test loudly.
pub async fn setup(name: &str) -> Ctx {
    let namespace = format!("test:{name}:{}", uuid::Uuid::new_v4().simple());
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

    /// Deletes every key of the namespace.
    pub async fn cleanup(self) {
        let keys: Vec<String> = self
            .cmd(redis::cmd("KEYS").arg(format!("{}:*", self.namespace)))
            .await;
        if !keys.is_empty() {
            let _: i64 = self.cmd(redis::cmd("DEL").arg(keys)).await;
        }
    }
}
