//! Read-only inspection of a namespace for operator tools (the `eventbus console`): every
//! stream with its length and head, pages of a stream's entries, the groups that have dead
//! letters, and what the projections' keys say (lease holder, checkpoints, rebuild state).
//!
//! Every read is bounded: keys are found by `SCAN` with a cursor (never `KEYS`), entries are
//! read in pages (`XRANGE`/`XREVRANGE … COUNT`), never a whole stream at once.
//!
//! ```no_run
//! use eventbus_redis::inspect::Page;
//! use eventbus_redis::{RedisConfig, RedisTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = RedisTransport::connect(RedisConfig::from_env()?).await?;
//! for stream in transport.stream_infos().await? {
//!     println!("{} ({} entries)", stream.key, stream.length);
//!     // The ten newest entries.
//!     for (id, event) in transport.stream_page(&stream.key, Page::Newest, 10).await? {
//!         println!("  {id}: {:?}", event.map(|e| e.event_type));
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use eventbus_core::transport::Topic;
use eventbus_core::{Error as CoreError, Result as CoreResult};

use crate::admin::Partitions;
use crate::codec;
use crate::reply;
use crate::tail::TailEntry;
use crate::transport::RedisTransport;

/// The most entries one [`stream_page`](RedisTransport::stream_page) call reads.
pub const MAX_PAGE: usize = 1_000;

/// One stream of the namespace (a topic's stream, or one partition of it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream's key.
    pub key: String,
    /// The topic it belongs to.
    pub topic: Topic,
    /// Its partition, for a partitioned topic (`None`: unpartitioned, plain ids).
    pub partition: Option<u32>,
    /// Entries it holds (`XINFO STREAM` `length`).
    pub length: u64,
    /// The id of the newest entry ever added (`last-generated-id`).
    pub last_id: String,
    /// Entries ever added, trimmed ones included (`entries-added`, Redis 7.0+): the rate of
    /// a stream is its growth over time.
    pub entries_added: Option<u64>,
    /// How many consumer groups read it.
    pub groups: u64,
}

/// Where a page of entries starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page<'a> {
    /// The newest entries, newest first.
    Newest,
    /// Entries after this id (exclusive), oldest first.
    After(&'a str),
    /// Entries before this id (exclusive), newest first.
    Before(&'a str),
}

/// What a projection's own keys say (its groups' lag is in
/// [`lag`](eventbus_core::transport::StreamAdmin::lag)).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ProjectionKeys {
    /// Who holds the lease (the active instance's token), if anyone.
    pub lease_holder: Option<String>,
    /// The live checkpoint: the last entry id applied, per stream.
    pub checkpoint: BTreeMap<String, String>,
    /// A rebuild's checkpoint, while one is running or was left unfinished.
    pub rebuild_checkpoint: BTreeMap<String, String>,
    /// What the last finished rebuild covered, per stream.
    pub rebuilt: BTreeMap<String, String>,
    /// When an operator asked for a rebuild that no instance has taken yet (seconds since
    /// the Unix epoch).
    pub rebuild_requested_at: Option<f64>,
}

/// How long a rebuild request waits for an active instance to take it.
pub const REBUILD_REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(3_600);

impl RedisTransport {
    /// Every stream of the namespace, by key: its topic, partition, length and head.
    ///
    /// Finds the keys with `SCAN … TYPE stream` (on every master of a cluster), then runs
    /// `XINFO STREAM` on each.
    pub async fn stream_infos(&self) -> CoreResult<Vec<StreamInfo>> {
        let mut found = self
            .scan(&self.inner().keys.stream_pattern(), Some("stream"))
            .await?;
        found.sort();
        found.dedup();
        let mut partitions = Partitions::default();
        let mut out = Vec::with_capacity(found.len());
        for key in found {
            let Some((topic, partition)) = self.stream_of_key(&key, &mut partitions).await? else {
                continue;
            };
            let info = match self
                .query(redis::cmd("XINFO").arg("STREAM").arg(&key), "XINFO STREAM")
                .await
            {
                Ok(info) => info,
                // Deleted between SCAN and XINFO.
                Err(CoreError::Transport(e)) if e.to_string().contains("no such key") => continue,
                Err(e) => return Err(e),
            };
            let info = reply::map(&info)
                .ok_or_else(|| self.inner().server.protocol("XINFO STREAM", "not a map"))?;
            let number = |name: &str| {
                reply::field(&info, name)
                    .and_then(reply::int)
                    .and_then(|n| u64::try_from(n).ok())
            };
            out.push(StreamInfo {
                topic,
                partition,
                length: number("length").unwrap_or(0),
                last_id: reply::field(&info, "last-generated-id")
                    .and_then(reply::text)
                    .unwrap_or_default(),
                entries_added: number("entries-added"),
                groups: number("groups").unwrap_or(0),
                key,
            });
        }
        Ok(out)
    }

    /// Up to `count` (at most [`MAX_PAGE`]) entries of the stream at `key` (a stream of
    /// this namespace, as [`stream_infos`](Self::stream_infos) names it), with plain ids.
    pub async fn stream_page(
        &self,
        key: &str,
        page: Page<'_>,
        count: usize,
    ) -> CoreResult<Vec<TailEntry>> {
        if self.inner().keys.parse_stream(key).is_none() {
            return Err(CoreError::Config(format!(
                "`{key}` is not a stream of namespace `{}`",
                self.inner().keys.namespace()
            )));
        }
        let count = count.clamp(1, MAX_PAGE);
        let mut cmd = match page {
            Page::Newest => range("XREVRANGE", key, "+", "-"),
            Page::After(id) => range("XRANGE", key, &format!("({id}"), "+"),
            Page::Before(id) => range("XREVRANGE", key, &format!("({id}"), "-"),
        };
        cmd.arg("COUNT").arg(count);
        let value = self.query(&cmd, "XRANGE").await?;
        let entries = reply::entries(&value)
            .ok_or_else(|| self.inner().server.protocol("XRANGE", "unexpected reply"))?;
        Ok(entries
            .into_iter()
            .filter_map(|e| Some((e.id, codec::decode(&e.fields?))))
            .collect())
    }

    /// Every consumer group that has dead letters, with how many (over every partition).
    pub async fn dead_letter_counts(&self) -> CoreResult<BTreeMap<String, u64>> {
        let keys = &self.inner().keys;
        let prefix = keys.dead_letters("");
        let mut found = self
            .scan(&keys.dead_letters_pattern(""), Some("stream"))
            .await?;
        found.sort();
        found.dedup();
        let mut out = BTreeMap::new();
        for key in found {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            // `{group}` or `{group}:{tag}` (a partition's, or a named stream's on a cluster).
            let group = match rest.rfind(":{") {
                Some(at) if rest.ends_with('}') => &rest[..at],
                _ => rest,
            };
            let len = self.query(redis::cmd("XLEN").arg(&key), "XLEN").await?;
            let len = reply::int(&len).and_then(|n| u64::try_from(n).ok());
            *out.entry(group.to_owned()).or_insert(0) += len.unwrap_or(0);
        }
        out.retain(|_, n| *n > 0);
        Ok(out)
    }

    /// A projection's lease holder, checkpoints and rebuild record (the unpartitioned keys;
    /// a partitioned topic's per-partition checkpoints are not merged in).
    pub async fn projection_keys(&self, name: &str) -> CoreResult<ProjectionKeys> {
        let keys = &self.inner().keys;
        let hash = |key: String| async move {
            let value = self
                .query(redis::cmd("HGETALL").arg(key), "HGETALL")
                .await?;
            Ok::<_, CoreError>(
                reply::map(&value)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, reply::text(v)?)))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let get = |key: String| async move {
            let value = self.query(redis::cmd("GET").arg(key), "GET").await?;
            Ok::<_, CoreError>(reply::text(&value))
        };
        let requested = get(keys.projection_rebuild_request(name)).await?;
        Ok(ProjectionKeys {
            lease_holder: get(keys.projection_lease(name)).await?,
            rebuild_requested_at: requested.and_then(|at| at.parse().ok()),
            checkpoint: hash(keys.projection_checkpoint(name, false)).await?,
            rebuild_checkpoint: hash(keys.projection_checkpoint(name, true)).await?,
            rebuilt: hash(keys.projection_rebuilt(name)).await?,
        })
    }
}

impl RedisTransport {
    /// Asks the active instance of projection `name` to rebuild it from the start of its
    /// streams (taken with [`ReadModelStore::take_rebuild_request`], within a third of its
    /// lease time). The request lapses after [`REBUILD_REQUEST_TTL`] if no instance takes
    /// it; asking again while one is waiting changes nothing.
    ///
    /// [`ReadModelStore::take_rebuild_request`]: eventbus_core::projection::ReadModelStore::take_rebuild_request
    pub async fn request_rebuild(&self, name: &str) -> CoreResult<()> {
        let now = eventbus_core::envelope::now_seconds();
        self.query(
            redis::cmd("SET")
                .arg(self.inner().keys.projection_rebuild_request(name))
                .arg(format!("{now:.3}"))
                .arg("NX")
                .arg("EX")
                .arg(REBUILD_REQUEST_TTL.as_secs()),
            "SET",
        )
        .await?;
        Ok(())
    }
}

/// `XRANGE key start end` (or `XREVRANGE key end start`, as given).
fn range(command: &str, key: &str, from: &str, to: &str) -> redis::Cmd {
    let mut cmd = redis::cmd(command);
    cmd.arg(key).arg(from).arg(to);
    cmd
}
