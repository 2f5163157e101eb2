//! The namespace's settings: stored in Redis (`{ns}:settings`), so that every client of the
//! namespace follows them, and cached by each client for [`SETTINGS_TTL`].
//!
//! One setting so far: whether publishing writes the global stream (`{ns}:stream:all`). A
//! namespace whose services never subscribe to all events can turn it off and save Redis
//! half its appends; subscriptions to all events (and the router on Streams, which reads
//! them) then refuse to start.

use std::time::{Duration, Instant};

use eventbus_core::{Error as CoreError, Result as CoreResult, Topic};

use crate::client::{Inner, RedisClient};

/// How long a client trusts what it read of the settings before reading them again: a
/// change reaches every client within this.
pub const SETTINGS_TTL: Duration = Duration::from_secs(5);

/// The field of `{ns}:settings` that says whether publishing writes the global stream.
const GLOBAL_STREAM: &str = "global_stream";

/// A namespace's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceSettings {
    /// Whether publishing appends every event to the global stream too (the default, and
    /// what the article's services expect).
    pub global_stream: bool,
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        NamespaceSettings {
            global_stream: true,
        }
    }
}

impl RedisClient {
    /// The namespace's settings, read now.
    pub async fn namespace_settings(&self) -> CoreResult<NamespaceSettings> {
        let settings = read(self.inner()).await?;
        store(self.inner(), settings);
        Ok(settings)
    }

    /// Turns the global stream on or off for every client of the namespace (each follows
    /// within [`SETTINGS_TTL`]). Turning it off leaves the global stream's entries and groups
    /// as they are; nothing is appended to it any more.
    pub async fn set_global_stream(&self, on: bool) -> CoreResult<()> {
        let inner = self.inner();
        redis::cmd("HSET")
            .arg(inner.keys.settings())
            .arg(GLOBAL_STREAM)
            .arg(if on { "on" } else { "off" })
            .query_async::<()>(&mut inner.conn.clone())
            .await
            .map_err(|e| inner.server.error(&e, "HSET settings", None))?;
        store(inner, NamespaceSettings { global_stream: on });
        Ok(())
    }
}

/// Whether publishing writes the global stream, as cached (read again after
/// [`SETTINGS_TTL`]).
pub(crate) async fn global_stream(inner: &Inner) -> CoreResult<bool> {
    if let Some((global_stream, at)) = *lock(inner) {
        if at.elapsed() < SETTINGS_TTL {
            return Ok(global_stream);
        }
    }
    let settings = read(inner).await?;
    store(inner, settings);
    Ok(settings.global_stream)
}

/// Fails with a clear error when `topics` hold the global stream and the namespace does not
/// write it: such a subscription would wait forever.
pub(crate) async fn check_readable(inner: &Inner, topics: &[Topic]) -> CoreResult<()> {
    if topics.contains(&Topic::All) && !global_stream(inner).await? {
        return Err(CoreError::Config(format!(
            "namespace `{}` does not write the global stream ({} is `off`), so a \
             subscription to all events (`--all`, `on_all`, the router on Streams) would \
             never see an event; subscribe to event types, or turn it on with `eventbus \
             namespace set --global-stream on`",
            inner.keys.namespace(),
            inner.keys.settings()
        )));
    }
    Ok(())
}

async fn read(inner: &Inner) -> CoreResult<NamespaceSettings> {
    let value: Option<String> = redis::cmd("HGET")
        .arg(inner.keys.settings())
        .arg(GLOBAL_STREAM)
        .query_async(&mut inner.conn.clone())
        .await
        .map_err(|e| inner.server.error(&e, "HGET settings", None))?;
    Ok(NamespaceSettings {
        global_stream: value.as_deref() != Some("off"),
    })
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, Option<(bool, Instant)>> {
    inner.settings.lock().unwrap_or_else(|e| e.into_inner())
}

fn store(inner: &Inner, settings: NamespaceSettings) {
    *lock(inner) = Some((settings.global_stream, Instant::now()));
}
