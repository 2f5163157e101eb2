//! Operator queries beyond core's [`StreamTransport`](eventbus_core::StreamTransport) admin
//! methods (`lag`, dead letters): what a tool such as the `eventbus` CLI needs to explain
//! what it is about to do — whether a stream exists, how long it is, which groups read it.
//!
//! ```no_run
//! use eventbus_core::transport::Topic;
//! use eventbus_redis::{RedisConfig, RedisTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = RedisTransport::connect(RedisConfig::from_env()?).await?;
//! match transport.stream_summary(&Topic::of_type("OrderCreated")).await? {
//!     Some(s) => println!("{} entries, groups {:?}", s.length, s.groups),
//!     None => println!("no such stream yet"),
//! }
//! # Ok(())
//! # }
//! ```

use eventbus_core::transport::Topic;
use eventbus_core::Result as CoreResult;
use redis::Value;

use crate::reply;
use crate::transport::RedisTransport;

/// A stream's length and the consumer groups reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSummary {
    /// Entries in the stream (`XLEN`).
    pub length: u64,
    /// Names of its consumer groups, in the server's order.
    pub groups: Vec<String>,
}

impl RedisTransport {
    /// A topic's stream (all its partitions): its length and groups, or `None` when no
    /// stream of it exists.
    ///
    /// Runs `XINFO GROUPS` and `XLEN` (ACL: `+xinfo|groups +xlen`, which the documented
    /// operator role has and the consumer role doesn't) on each of the topic's partition
    /// streams, summing their lengths and listing each group once. Not atomic: the streams
    /// may change meanwhile.
    pub async fn stream_summary(&self, topic: &Topic) -> CoreResult<Option<StreamSummary>> {
        let mut summary: Option<StreamSummary> = None;
        for key in self.partition_streams(topic).await? {
            if let Some(part) = self.summary_of(&key).await? {
                let total = summary.get_or_insert(StreamSummary {
                    length: 0,
                    groups: Vec::new(),
                });
                total.length += part.length;
                for group in part.groups {
                    if !total.groups.contains(&group) {
                        total.groups.push(group);
                    }
                }
            }
        }
        Ok(summary)
    }

    /// The summary of the stream at `key`, or `None` when it does not exist.
    async fn summary_of(&self, key: &str) -> CoreResult<Option<StreamSummary>> {
        let inner = self.inner();
        let mut conn = inner.conn.clone();
        let groups: Value = match redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(key)
            .query_async(&mut conn)
            .await
        {
            Ok(groups) => groups,
            Err(e) if e.to_string().contains("no such key") => return Ok(None),
            Err(e) => return Err(inner.server.error(&e, "XINFO GROUPS", None)),
        };
        let groups = reply::items(&groups)
            .ok_or_else(|| inner.server.protocol("XINFO GROUPS", "not an array"))?
            .iter()
            .map(|g| {
                reply::map(g)
                    .and_then(|info| reply::field(&info, "name").and_then(reply::text))
                    .ok_or_else(|| {
                        inner
                            .server
                            .protocol("XINFO GROUPS", "group without a name")
                    })
            })
            .collect::<CoreResult<Vec<String>>>()?;
        let length: u64 = redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.server.error(&e, "XLEN", None))?;
        Ok(Some(StreamSummary { length, groups }))
    }
}
