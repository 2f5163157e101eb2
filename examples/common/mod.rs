//! Shared by the examples: the flags every example takes, connecting, and the [`Scratch`]
//! namespace an example writes in and removes when it ends (unless `--keep`).

// Every example includes this file and uses part of it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::transport::StreamTransport;
use eventbus_redis::{RedisConfig, RedisTransport, DEFAULT_URL};

/// A plain connection to the example's server or cluster (see [`Scratch::raw`]).
pub enum Raw {
    /// To one server.
    Node(redis::aio::MultiplexedConnection),
    /// To a cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    /// Runs one command.
    pub async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        Ok(match self {
            Raw::Node(conn) => cmd.query_async(conn).await?,
            Raw::Cluster(conn) => cmd.query_async(conn).await?,
        })
    }
}

/// The address of [`DEFAULT_URL`], probed before an example falls back to memory.
const DEFAULT_ADDR: &str = "127.0.0.1:6379";

/// The backend flags of every example.
#[derive(clap::Args, Debug)]
pub struct Backend {
    /// Run on the in-memory backend, even with `--url` or `REDIS_URL` set.
    #[arg(long)]
    pub in_memory: bool,
    /// Redis URL (must answer). Without it or `REDIS_URL`: the Redis at
    /// redis://127.0.0.1:6379 if one answers, else the in-memory backend.
    #[arg(long, env = "REDIS_URL")]
    pub url: Option<String>,
    /// Key namespace in Redis (default: `example-{name}-{process id}`, fresh for each run).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Keep the keys in Redis afterwards and print their namespace (to inspect them with the
    /// `eventbus` CLI); without it every key the example wrote is deleted, also on failure.
    #[arg(long)]
    pub keep: bool,
}

impl Backend {
    /// Connects to Redis in this run's namespace (`configure` may change more of the
    /// configuration), or to nothing with `--in-memory`.
    pub async fn connect(
        &self,
        example: &str,
        configure: impl FnOnce(RedisConfig) -> RedisConfig,
    ) -> anyhow::Result<Scratch> {
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| format!("example-{example}-{:x}", std::process::id()));
        let wants_redis = self.keep || self.namespace.is_some();
        let url = redis_url(example, self.in_memory, self.url.as_deref(), wants_redis);
        let redis = match &url {
            None => None,
            Some(url) => {
                let config = RedisConfig::new(url)?.namespace(namespace.clone());
                Some(connect_or_exit(configure(config)).await)
            }
        };
        let streams: Arc<dyn StreamTransport> = match &redis {
            Some(t) => Arc::new(t.clone()),
            None => Arc::new(MemoryTransport::new()),
        };
        Ok(Scratch {
            url: url.unwrap_or_default(),
            namespace,
            keep: self.keep,
            redis,
            streams,
            finished: false,
        })
    }
}

/// The Redis an example runs on, or `None` for the in-memory backend: none with
/// `--in-memory`; the `--url` (or `REDIS_URL`) given, which must then answer; else the local
/// default when something answers there or `wants_redis` (flags that only make sense on
/// Redis); else none, saying so in one line that tells how to use a Redis instead.
pub fn redis_url(
    example: &str,
    in_memory: bool,
    url: Option<&str>,
    wants_redis: bool,
) -> Option<String> {
    if in_memory {
        return None;
    }
    if let Some(url) = url.filter(|u| !u.is_empty()) {
        return Some(url.to_owned());
    }
    let answers = DEFAULT_ADDR.parse().is_ok_and(|addr| {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500)).is_ok()
    });
    if answers || wants_redis {
        return Some(DEFAULT_URL.to_owned());
    }
    eprintln!(
        "note: no Redis at {DEFAULT_URL}, running on the in-memory backend \
         (to use a Redis: REDIS_URL=redis://host:port cargo run --example {example}, \
         or -- --url redis://host:port)"
    );
    None
}

/// Connects, or says in one line what to run and exits with status 2.
pub async fn connect_or_exit(config: RedisConfig) -> RedisTransport {
    match RedisTransport::connect(config).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: {e} (start Redis with `redis-server --save '' --appendonly no`, \
                 set REDIS_URL, or run with --in-memory)"
            );
            std::process::exit(2)
        }
    }
}

/// The namespace an example writes in: every key it writes is under `{namespace}:`, read
/// models included ([`read_model_prefix`](Self::read_model_prefix)).
///
/// [`finish`](Self::finish) deletes them (or, with `--keep`, prints the namespace); Ctrl-C
/// ends the work early through [`until_interrupted`](Self::until_interrupted), and a panic
/// still deletes them when the guard drops.
pub struct Scratch {
    url: String,
    namespace: String,
    keep: bool,
    redis: Option<RedisTransport>,
    streams: Arc<dyn StreamTransport>,
    finished: bool,
}

impl Scratch {
    /// The stream transport: Redis, or a fresh in-memory one.
    pub fn streams(&self) -> Arc<dyn StreamTransport> {
        self.streams.clone()
    }

    /// The Redis transport, or `None` on the in-memory backend.
    pub fn redis(&self) -> Option<&RedisTransport> {
        self.redis.as_ref()
    }

    /// The Redis URL (for a plain client of the example's own); empty in memory.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A plain connection of the example's own, to read keys as another service would:
    /// to the server, or to the cluster.
    pub async fn raw(&self) -> anyhow::Result<Raw> {
        let config = self
            .redis
            .as_ref()
            .context("no Redis: the example runs in memory")?
            .config();
        Ok(match config.cluster_seeds() {
            Some(seeds) => Raw::Cluster(
                redis::cluster::ClusterClient::new(seeds.to_vec())?
                    .get_async_connection()
                    .await?,
            ),
            None => Raw::Node(
                redis::Client::open(self.url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?,
            ),
        })
    }

    /// The backend in a few words: the server and namespace, or `in-memory`.
    pub fn describe(&self) -> String {
        match &self.redis {
            Some(_) => format!("{}, namespace {}", self.streams.describe(), self.namespace),
            None => self.streams.describe(),
        }
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The prefix of read-model keys, inside the namespace.
    pub fn read_model_prefix(&self) -> String {
        format!("{}:read:", self.namespace)
    }

    /// Runs `work` until it ends or Ctrl-C, which is an error (so the keys still go).
    pub async fn until_interrupted<T>(
        &self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            outcome = work => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    }

    /// Deletes every key of the namespace, or with `--keep` prints it; then returns
    /// `outcome` (a failed clean-up fails a run that succeeded, and is reported after
    /// one that failed).
    pub async fn finish<T>(mut self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        self.finished = true;
        let namespace = &self.namespace;
        match (&self.redis, self.keep) {
            (Some(_), true) => {
                println!(
                    "kept namespace {namespace}: inspect with eventbus --namespace {namespace} lag"
                );
            }
            (None, true) => println!("nothing kept: the in-memory backend ends with the process"),
            (Some(redis), false) => {
                let deleted = redis
                    .delete_namespace()
                    .await
                    .with_context(|| format!("deleting namespace {namespace}"));
                match (deleted, &outcome) {
                    (Err(e), Ok(_)) => return Err(e),
                    (Err(e), Err(_)) => eprintln!("warning: {e:#}"),
                    (Ok(_), _) => {}
                }
            }
            (None, false) => {}
        }
        outcome
    }
}

impl Drop for Scratch {
    /// A panic unwound past [`finish`](Self::finish): delete the keys anyway.
    fn drop(&mut self) {
        if self.finished || self.keep {
            return;
        }
        if let Some(redis) = self.redis.take() {
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let deleted = tokio::task::block_in_place(|| handle.block_on(redis.delete_namespace()));
            if let Err(e) = deleted {
                eprintln!(
                    "warning: keys of namespace {} not deleted: {e}",
                    self.namespace
                );
            }
        }
    }
}
