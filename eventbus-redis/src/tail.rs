//! Following a stream without a consumer group (`XREAD`), as `eventbus tail` does.

use std::time::Duration;

use crate::conn::Conn;
use eventbus_core::transport::{Malformed, StartFrom, Topic};
use eventbus_core::{EntryId, Envelope, Result as CoreResult};
use redis::Value;
use serde_json::Value as Json;

use crate::codec;
use crate::reply;
use crate::transport::RedisTransport;

/// An entry read by a [`StreamTail`]: its id, and the event or why it can't be decoded.
pub type TailEntry = (EntryId, Result<Envelope<Json>, Malformed>);

/// A cursor following one stream, with its own connection for blocking reads. Reads
/// acknowledge nothing and join no group: other consumers are unaffected.
pub struct StreamTail {
    transport: RedisTransport,
    key: String,
    cursor: EntryId,
    conn: Conn,
}

impl std::fmt::Debug for StreamTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTail")
            .field("key", &self.key)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl RedisTransport {
    /// Follows a topic's stream from its beginning or from now on.
    pub async fn tail(&self, topic: &Topic, from: StartFrom) -> CoreResult<StreamTail> {
        let server = &self.inner().server;
        let mut conn = self.client().dedicated_connection().await?;
        let key = self.keys().stream(topic);
        let cursor = match from {
            StartFrom::Beginning => "0-0".to_string(),
            StartFrom::New => {
                let last: Value = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| server.transport(&e, "XREVRANGE"))?;
                reply::entries(&last)
                    .and_then(|entries| entries.into_iter().next())
                    .map_or_else(|| "0-0".to_string(), |e| e.id)
            }
        };
        Ok(StreamTail {
            transport: self.clone(),
            key,
            cursor,
            conn,
        })
    }
}

impl StreamTail {
    /// The id of the last entry returned (`0-0` before any).
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// Up to `count` entries after the cursor, waiting up to `block` for one to arrive.
    pub async fn next_batch(
        &mut self,
        count: usize,
        block: Duration,
    ) -> CoreResult<Vec<TailEntry>> {
        let server = &self.transport.inner().server;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(&self.cursor);
        let value: Value = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| server.transport(&e, "XREAD"))?;
        let streams = reply::streams(&value).unwrap_or_default();
        let mut out = Vec::new();
        for (_, entries) in streams {
            for entry in entries {
                self.cursor = entry.id.clone();
                if let Some(fields) = entry.fields {
                    out.push((entry.id, codec::decode(&fields)));
                }
            }
        }
        Ok(out)
    }
}
