//! Connection settings: URL (TLS, ACL user, database), key namespace, stream limits, timeouts.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use redis::{Client, ConnectionAddr};

use crate::error::{Error, Result};
use crate::keys::{Keys, DEFAULT_CHANNEL_PREFIX, DEFAULT_NAMESPACE};

/// The URL used when `REDIS_URL` is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Default approximate length limit of a per-type stream (as in the reference article).
pub const DEFAULT_STREAM_MAXLEN: u64 = 100_000;
/// Default approximate length limit of the global stream (as in the reference article).
pub const DEFAULT_GLOBAL_MAXLEN: u64 = 500_000;
/// Default approximate length limit of a dead-letter stream.
pub const DEFAULT_DEAD_LETTER_MAXLEN: u64 = 100_000;

/// How to reach Redis and lay out the bus in it.
///
/// Built from a URL: `redis://host:port/db`, `redis://user:password@host`, `rediss://host`
/// (TLS, certificate verified against the webpki roots) or `rediss://host#insecure` (TLS
/// without verification, for self-signed test servers).
///
/// Streams are trimmed with `MAXLEN ~` on every append. Trimming ignores consumer groups: a
/// group that falls further behind than the limit loses entries, so size the limits for the
/// slowest consumer. `0` disables trimming.
///
/// ```
/// use std::time::Duration;
/// use eventbus_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://app:s3cret@cache.internal:6380/2")?
///     .namespace("shop")
///     .maxlen_for("OrderCreated", 1_000_000)
///     .response_timeout(Duration::from_secs(2));
/// assert_eq!(config.redacted_url(), "redis://app:***@cache.internal:6380/2");
/// assert_eq!(config.stream_maxlen("OrderCreated"), 1_000_000);
/// assert_eq!(config.stream_maxlen("OrderShipped"), 100_000);
/// # Ok::<(), eventbus_redis::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    client: Client,
    redacted_url: String,
    namespace: String,
    channel_prefix: String,
    stream_maxlen: u64,
    global_maxlen: u64,
    dead_letter_maxlen: u64,
    maxlen_overrides: HashMap<String, u64>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl RedisConfig {
    /// Parses a Redis URL; every other setting has its default.
    pub fn new(url: &str) -> Result<Self> {
        let client = Client::open(url).map_err(|e| Error::InvalidUrl {
            url: redact_raw(url),
            reason: e.to_string(),
        })?;
        let redacted_url = redact(&client);
        Ok(RedisConfig {
            client,
            redacted_url,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            channel_prefix: DEFAULT_CHANNEL_PREFIX.to_owned(),
            stream_maxlen: DEFAULT_STREAM_MAXLEN,
            global_maxlen: DEFAULT_GLOBAL_MAXLEN,
            dead_letter_maxlen: DEFAULT_DEAD_LETTER_MAXLEN,
            maxlen_overrides: HashMap::new(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
        })
    }

    /// Reads `REDIS_URL`, or uses `redis://127.0.0.1:6379` when it is unset or empty.
    pub fn from_env() -> Result<Self> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => RedisConfig::new(url.trim()),
            _ => RedisConfig::new(DEFAULT_URL),
        }
    }

    /// Sets the key namespace (default `eventbus`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the prefix of Pub/Sub channels (default `events:`, as in the reference article;
    /// channels are not namespaced, so that article-style services hear ours).
    pub fn channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = prefix.into();
        self
    }

    /// The prefix of Pub/Sub channels.
    pub fn pubsub_channel_prefix(&self) -> &str {
        &self.channel_prefix
    }

    /// The key layout of this configuration.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.namespace).with_channel_prefix(&self.channel_prefix)
    }

    /// Sets the default `MAXLEN ~` of per-type streams (default 100 000; `0`: no trimming).
    pub fn default_stream_maxlen(mut self, maxlen: u64) -> Self {
        self.stream_maxlen = maxlen;
        self
    }

    /// Sets the `MAXLEN ~` of one event type's stream, overriding the default.
    pub fn maxlen_for(mut self, event_type: impl Into<String>, maxlen: u64) -> Self {
        self.maxlen_overrides.insert(event_type.into(), maxlen);
        self
    }

    /// Sets the `MAXLEN ~` of the global stream (default 500 000; `0`: no trimming).
    pub fn global_maxlen(mut self, maxlen: u64) -> Self {
        self.global_maxlen = maxlen;
        self
    }

    /// Sets the `MAXLEN ~` of dead-letter streams (default 100 000; `0`: no trimming).
    pub fn dead_letter_maxlen(mut self, maxlen: u64) -> Self {
        self.dead_letter_maxlen = maxlen;
        self
    }

    /// Sets how long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long a command may wait for its reply (default 5 s). Blocking reads wait
    /// this long on top of their block time.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The URL with the password replaced by `***`, e.g. `redis://user:***@host:6379/0`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// The key namespace.
    pub fn key_namespace(&self) -> &str {
        &self.namespace
    }

    /// The `MAXLEN ~` of an event type's stream (`0`: no trimming).
    pub fn stream_maxlen(&self, event_type: &str) -> u64 {
        self.maxlen_overrides
            .get(event_type)
            .copied()
            .unwrap_or(self.stream_maxlen)
    }

    /// The `MAXLEN ~` of the global stream (`0`: no trimming).
    pub fn global_stream_maxlen(&self) -> u64 {
        self.global_maxlen
    }

    /// The `MAXLEN ~` of dead-letter streams (`0`: no trimming).
    pub fn dead_letter_stream_maxlen(&self) -> u64 {
        self.dead_letter_maxlen
    }

    /// How long connecting may take.
    pub fn connect_timeout_duration(&self) -> Duration {
        self.connect_timeout
    }

    /// How long a command may wait for its reply.
    pub fn response_timeout_duration(&self) -> Duration {
        self.response_timeout
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        matches!(
            self.client.get_connection_info().addr(),
            ConnectionAddr::TcpTls { .. }
        )
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The password, only to scrub it from messages.
    pub(crate) fn password(&self) -> Option<&str> {
        self.client
            .get_connection_info()
            .redis_settings()
            .password()
            .filter(|p| !p.is_empty())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url)
            .field("namespace", &self.namespace)
            .field("channel_prefix", &self.channel_prefix)
            .field("stream_maxlen", &self.stream_maxlen)
            .field("global_maxlen", &self.global_maxlen)
            .field("dead_letter_maxlen", &self.dead_letter_maxlen)
            .field("maxlen_overrides", &self.maxlen_overrides)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

/// Rebuilds a URL from the parsed connection info, without the password.
fn redact(client: &Client) -> String {
    let info = client.get_connection_info();
    let settings = info.redis_settings();
    let credentials = match (settings.username(), settings.password()) {
        (Some(user), Some(_)) => format!("{user}:***@"),
        (None, Some(_)) => ":***@".to_owned(),
        (Some(user), None) => format!("{user}@"),
        (None, None) => String::new(),
    };
    let db = settings.db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            format!("redis://{credentials}{}:{port}/{db}", bracket(host))
        }
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => {
            let fragment = if *insecure { "#insecure" } else { "" };
            format!(
                "rediss://{credentials}{}:{port}/{db}{fragment}",
                bracket(host)
            )
        }
        ConnectionAddr::Unix(path) => format!("unix://{}?db={db}", path.display()),
        other => format!("{other}"),
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Redacts a URL that could not be parsed: drops everything between `://` and the last `@`
/// of the authority, keeping only the user name when there is one.
fn redact_raw(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            "<unparsable URL>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        None => url.to_owned(),
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{host}{tail}")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn redacted(url: &str) -> String {
        RedisConfig::new(url).unwrap().redacted_url().to_owned()
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redacted("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://localhost"), "redis://localhost:6379/0");
        assert_eq!(
            redacted("redis://user:pa55@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redacted("redis://:pa55@host/3"), "redis://:***@host:6379/3");
        assert_eq!(redacted("redis://user@host"), "redis://user@host:6379/0");
        assert_eq!(
            redacted("rediss://u:pa55@h:6380"),
            "rediss://u:***@h:6380/0"
        );
        assert_eq!(
            redacted("rediss://h#insecure"),
            "rediss://h:6379/0#insecure"
        );
        assert_eq!(redacted("redis://[::1]:7000"), "redis://[::1]:7000/0");
    }

    #[test]
    fn tls_is_detected() {
        assert!(RedisConfig::new("rediss://h").unwrap().is_tls());
        assert!(!RedisConfig::new("redis://h").unwrap().is_tls());
    }

    #[test]
    fn invalid_urls_never_show_the_password() {
        for url in [
            "http://user:pa55@host",
            "redis://user:pa55@host/notadb",
            "rediss://u:pa55@h#other",
        ] {
            let err = RedisConfig::new(url).unwrap_err().to_string();
            assert!(!err.contains("pa55"), "{err}");
            assert!(err.contains("***") || err.contains("<unparsable"), "{err}");
        }
        assert_eq!(
            redact_raw("redis://u:p@h:1/2?x#y"),
            "redis://u:***@h:1/2?x#y"
        );
        assert_eq!(redact_raw("u:p@h"), "<unparsable URL>");
    }

    #[test]
    fn limits_and_defaults() {
        let config = RedisConfig::new(DEFAULT_URL).unwrap();
        assert_eq!(config.key_namespace(), "eventbus");
        assert_eq!(config.stream_maxlen("X"), 100_000);
        assert_eq!(config.global_stream_maxlen(), 500_000);
        assert_eq!(config.dead_letter_stream_maxlen(), 100_000);
        let config = config
            .default_stream_maxlen(10)
            .maxlen_for("Y", 0)
            .global_maxlen(20);
        assert_eq!(config.stream_maxlen("X"), 10);
        assert_eq!(config.stream_maxlen("Y"), 0);
        assert_eq!(config.global_stream_maxlen(), 20);
    }

    #[test]
    fn debug_hides_the_password() {
        let config = RedisConfig::new("redis://u:pa55@h").unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("pa55") && debug.contains("u:***@h"),
            "{debug}"
        );
    }
}
