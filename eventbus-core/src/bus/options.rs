//! [`SubscriptionOptions`]: how a subscription reads, orders, retries and stops.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::bus::backoff::Backoff;
use crate::bus::group_for_service;
use crate::envelope::Envelope;
use crate::transport::StartFrom;

/// Extracts an ordering key from an event.
pub type KeyFn = Arc<dyn Fn(&Envelope<Value>) -> Option<String> + Send + Sync>;

/// Which deliveries must be handled one after another, in stream order.
#[derive(Clone, Default)]
pub enum OrderBy {
    /// Entries of one stream are handled in order, one at a time; streams run concurrently.
    #[default]
    Stream,
    /// Entries with the same correlation id are handled in order; flows run concurrently.
    Correlation,
    /// Entries with the same key are handled in order (e.g. an order id from the payload);
    /// `None` keys are unordered.
    Key(KeyFn),
    /// No ordering: up to `concurrency` entries at once.
    Unordered,
}

impl fmt::Debug for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderBy::Stream => f.write_str("Stream"),
            OrderBy::Correlation => f.write_str("Correlation"),
            OrderBy::Key(_) => f.write_str("Key(..)"),
            OrderBy::Unordered => f.write_str("Unordered"),
        }
    }
}

/// Tuning of a subscription. Every field has a production default.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Consumer group; default `{service}-consumers`.
    pub group: String,
    /// This consumer's name, stable across restarts so that what it left pending is
    /// recovered; see [`default_consumer_name`].
    pub consumer: String,
    /// Where a new group starts.
    pub start_from: StartFrom,
    /// Entries read per round trip (`COUNT`).
    pub batch_size: usize,
    /// How long a read waits for new entries (`BLOCK`).
    pub block: Duration,
    /// Entries read but not yet finished, at most (reading pauses at this bound).
    pub prefetch: usize,
    /// Handlers running at once, at most.
    pub concurrency: usize,
    /// Which entries are handled in order.
    pub order_by: OrderBy,
    /// Deliveries before an entry is dead-lettered.
    pub max_deliveries: u32,
    /// Delay between attempts of a failing entry.
    pub retry_backoff: Backoff,
    /// Limit on one handler call; `None`: unlimited.
    pub handler_timeout: Option<Duration>,
    /// Entries pending longer than this in another consumer are reclaimed. This consumer
    /// renews its hold on every entry it read and has not settled each third of this, so a
    /// slow but live consumer keeps what it holds; every consumer of a group must use the
    /// same value. At least 100 ms.
    pub claim_idle: Duration,
    /// How often to look for such entries.
    pub claim_interval: Duration,
    /// Remove consumers of the group idle longer than this (only those with nothing
    /// pending); `None` keeps them.
    pub remove_idle_consumers_after: Option<Duration>,
    /// Backoff after a transport error (connection lost, group missing).
    pub reconnect_backoff: Backoff,
    /// Take at most this many entries in all, then stop reading (for tools like
    /// `eventbus consume --count N`); `None`: no limit.
    pub limit: Option<u64>,
    /// How long shutdown waits for in-flight handlers before abandoning them (their entries
    /// stay pending and are redelivered later).
    pub shutdown_timeout: Duration,
}

/// A consumer name stable for this host and service: `{service}-{hostname}`, or
/// `{service}-{hostname}-{suffix}` when `EVENTBUS_CONSUMER_SUFFIX` is set (several processes
/// of one service on one host must each set their own suffix, or set names explicitly).
pub fn default_consumer_name(service: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    match std::env::var("EVENTBUS_CONSUMER_SUFFIX") {
        Ok(suffix) if !suffix.is_empty() => format!("{service}-{host}-{suffix}"),
        _ => format!("{service}-{host}"),
    }
}

impl SubscriptionOptions {
    /// Defaults for a service.
    pub fn for_service(service: &str) -> Self {
        SubscriptionOptions {
            group: group_for_service(service),
            consumer: default_consumer_name(service),
            start_from: StartFrom::New,
            batch_size: 256,
            block: Duration::from_secs(2),
            prefetch: 512,
            concurrency: 32,
            order_by: OrderBy::Stream,
            max_deliveries: 5,
            retry_backoff: Backoff::default(),
            handler_timeout: None,
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            remove_idle_consumers_after: Some(Duration::from_secs(24 * 3600)),
            reconnect_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            limit: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}
