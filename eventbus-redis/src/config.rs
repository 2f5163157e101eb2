//! Connection settings: URL (TLS, ACL user, database), key namespace, stream limits, timeouts.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::{Client, ConnectionAddr, TlsCertificates};

use crate::error::{Error, Result};
use crate::keys::{Keys, DEFAULT_CHANNEL_PREFIX, DEFAULT_NAMESPACE};

/// The URL used when `REDIS_URL` is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Default approximate length limit of a per-type stream (as in the reference article).
pub const DEFAULT_STREAM_MAXLEN: u64 = 100_000;
/// Default approximate length limit of the global stream (as in the reference article).
pub const DEFAULT_GLOBAL_MAXLEN: u64 = 500_000;
/// Default time to live of partition leases and group memberships.
pub const DEFAULT_PARTITION_LEASE: Duration = Duration::from_secs(10);

/// Default approximate length limit of a dead-letter stream.
pub const DEFAULT_DEAD_LETTER_MAXLEN: u64 = 100_000;

/// How to reach Redis and lay out the bus in it.
///
/// Built from a URL: `redis://host:port/db`, `redis://user:password@host`, `rediss://host`
/// (TLS, certificate verified against the webpki roots, or against a private CA with
/// [`RedisConfig::tls_ca_file`]) or `rediss://host#insecure` (TLS without verification, for
/// throwaway test servers only).
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
    tls_ca_file: Option<PathBuf>,
    /// The seed nodes of a cluster (`redis+cluster://`), `None` for a single node.
    cluster: Option<Vec<redis::ConnectionInfo>>,
    /// Replicas a publish waits for (`WAIT`), and for how long.
    publish_replicas: Option<(u32, Duration)>,
    /// Time to live of partition leases and group memberships.
    partition_lease: Duration,
}

impl RedisConfig {
    /// Parses a Redis URL; every other setting has its default.
    ///
    /// A password holding `#`, `/`, `?` or `@` must be percent-encoded (`%23`, `%2F`, `%3F`,
    /// `%40`): an `@` after the host is refused, so that such a password is never taken for
    /// a port, a path or a fragment. Error messages never show the password.
    pub fn new(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_raw(url),
            reason: scrub_userinfo(url, &reason),
        };
        if misplaced_at(url) {
            return Err(invalid(
                "an `@` after the host: percent-encode `#`, `/`, `?` and `@` in the user name \
                 and password (`%23`, `%2F`, `%3F`, `%40`)"
                    .to_owned(),
            ));
        }
        let (client, redacted_url, cluster) = match cluster_nodes(url) {
            Some((scheme, nodes)) => {
                let clients = nodes
                    .iter()
                    .map(|node| Client::open(node.as_str()).map_err(|e| invalid(e.to_string())))
                    .collect::<Result<Vec<_>>>()?;
                let hosts: Vec<String> = clients
                    .iter()
                    .map(|c| c.get_connection_info().addr().to_string())
                    .collect();
                let infos = clients
                    .iter()
                    .map(|c| c.get_connection_info().clone())
                    .collect();
                let first = clients
                    .into_iter()
                    .next()
                    .ok_or_else(|| invalid("a cluster URL names at least one node".to_owned()))?;
                let redacted = format!("{scheme}+cluster://{}", hosts.join(","));
                (first, redacted, Some(infos))
            }
            None => {
                let client = Client::open(url).map_err(|e| invalid(e.to_string()))?;
                let redacted_url = redact(&client);
                (client, redacted_url, None)
            }
        };
        Ok(RedisConfig {
            cluster,
            publish_replicas: None,
            partition_lease: DEFAULT_PARTITION_LEASE,
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
            tls_ca_file: None,
        })
    }

    /// Reads `REDIS_URL`, or uses `redis://127.0.0.1:6379` when it is unset or empty; for a
    /// `rediss://` URL, trusts the CA file named by `REDIS_TLS_CA_FILE` or `SSL_CERT_FILE`
    /// (see [`RedisConfig::tls_ca_from_env`]).
    pub fn from_env() -> Result<Self> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => RedisConfig::new(url.trim()),
            _ => RedisConfig::new(DEFAULT_URL),
        }?
        .tls_ca_from_env()
    }

    /// Verifies the server's TLS certificate against the certificate authorities in a PEM
    /// file (a private CA) instead of the webpki roots. The URL must be `rediss://`.
    ///
    /// Fails with [`Error::TlsCaFile`] when the URL is not `rediss://`, or the file cannot be
    /// read or holds no PEM certificate.
    pub fn tls_ca_file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fail = |reason: String| Error::TlsCaFile {
            path: path.display().to_string(),
            reason,
        };
        if !self.is_tls() {
            return Err(fail(format!(
                "a CA file is for TLS, but `{}` is not a `rediss://` URL",
                self.redacted_url
            )));
        }
        let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
        if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
            return Err(fail("it holds no PEM certificate".to_owned()));
        }
        let certificates = TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        self.client =
            Client::build_with_tls(self.client.get_connection_info().clone(), certificates)
                .map_err(|e| fail(e.to_string()))?;
        self.tls_ca_file = Some(path.to_owned());
        Ok(self)
    }

    /// For a `rediss://` URL, trusts the CA file named by `REDIS_TLS_CA_FILE`, or else by
    /// `SSL_CERT_FILE` (the variable OpenSSL and rustls-native-certs read), when one is set
    /// and not empty (see [`RedisConfig::tls_ca_file`]). Anything else is left unchanged.
    pub fn tls_ca_from_env(self) -> Result<Self> {
        if !self.is_tls() {
            return Ok(self);
        }
        for variable in ["REDIS_TLS_CA_FILE", "SSL_CERT_FILE"] {
            if let Ok(path) = std::env::var(variable) {
                if !path.trim().is_empty() {
                    return self.tls_ca_file(path.trim());
                }
            }
        }
        Ok(self)
    }

    /// The CA file the server's certificate is verified against, if one was set.
    pub fn tls_ca_path(&self) -> Option<&Path> {
        self.tls_ca_file.as_deref()
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

    /// Makes every publish, and every event-store append, wait until `replicas` replicas
    /// of the master that took it have acknowledged the write (`WAIT replicas timeout`,
    /// pipelined right after the publish's or the append's script call, on the same
    /// connection to the same master), failing it when fewer did within `timeout`.
    ///
    /// Redis replicates asynchronously: without this, a master that dies before its
    /// replicas received an acknowledged publish or append loses it on failover. With it,
    /// the loss window closes for acknowledged writes, at the cost of a round trip to the
    /// replicas per publish (measure it with `cargo run --release --example bench --
    /// cluster`; the README's "Redis Cluster" figures). A failed wait does not undo the
    /// write: the events are in the streams, and may or may not survive a failover; a retried
    /// publish appends them again (same event ids), a retried append conflicts (the
    /// aggregate's stream has them).
    pub fn publish_wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.publish_replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Replicas a publish waits for, and for how long (see
    /// [`publish_wait_for_replicas`](Self::publish_wait_for_replicas)).
    pub fn publish_replicas(&self) -> Option<(u32, Duration)> {
        self.publish_replicas
    }

    /// Sets how long a partition lease (and a group membership) outlives its last renewal
    /// (default 10 s, at least 1 s): how long the partitions of a consumer that died wait
    /// before the group's other consumers take them over, with its pending entries. Renewals
    /// run every tenth of it (at most every second). Every consumer of a group should use
    /// the same value. Shorter takes over sooner, at the cost of more renewals and of
    /// hand-overs when a consumer is paused (a long GC-like stall, a slow link).
    pub fn partition_lease(mut self, ttl: Duration) -> Self {
        self.partition_lease = ttl.max(Duration::from_secs(1));
        self
    }

    /// The time to live of partition leases (see [`partition_lease`](Self::partition_lease)).
    pub fn partition_lease_ttl(&self) -> Duration {
        self.partition_lease
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

    /// Whether the URL names a cluster (`redis+cluster://`, `rediss+cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The seed nodes of a cluster URL (`redis+cluster://…`), `None` for a single node: for
    /// tools that read keys directly, as another service would (the examples show the
    /// read models a Python service reads).
    pub fn cluster_seeds(&self) -> Option<&[redis::ConnectionInfo]> {
        self.cluster.as_deref()
    }

    /// A cluster client on the configured seed nodes, with this configuration's timeouts
    /// (and private CA), or `None` for a single node.
    pub(crate) fn cluster_client(
        &self,
    ) -> Option<redis::RedisResult<redis::cluster::ClusterClient>> {
        self.cluster_client_with(|builder| builder)
    }

    /// A cluster client for a Pub/Sub subscription: [`cluster_client`](Self::cluster_client)
    /// speaking RESP3, whose push messages (`smessage`, `pmessage`, and `disconnection` when
    /// a node's connection drops) go to `pushes`; `None` for a single node.
    pub(crate) fn cluster_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Option<redis::RedisResult<redis::cluster::ClusterClient>> {
        self.cluster_client_with(|builder| {
            builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
        })
    }

    fn cluster_client_with(
        &self,
        configure: impl FnOnce(
            redis::cluster::ClusterClientBuilder,
        ) -> redis::cluster::ClusterClientBuilder,
    ) -> Option<redis::RedisResult<redis::cluster::ClusterClient>> {
        let nodes = self.cluster.as_ref()?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout);
        if let Some(path) = &self.tls_ca_file {
            match std::fs::read(path) {
                Ok(pem) => {
                    builder = builder.certs(TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    })
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
        Some(configure(builder).build())
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
            .field("tls_ca_file", &self.tls_ca_file)
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

/// Whether an `@` comes after the end of the authority as a URL parser sees it (the first
/// `/`, `?` or `#` after `://`): the sign of a password holding one of those characters.
fn misplaced_at(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[authority_end..].contains('@')
}

/// The user information of a URL (between `://` and the last `@`), if any.
fn userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    rest.rfind('@').map(|at| &rest[..at])
}

/// Redacts a URL that could not be parsed: drops everything between `://` and the last `@`
/// anywhere in it (a password may hold `/`, `?` or `#`, which end the authority for a
/// parser), keeping only the user name when there is one.
fn redact_raw(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            "<unparsable URL>".to_owned()
        } else {
            url.to_owned()
        };
    };
    match rest.rfind('@') {
        None => url.to_owned(),
        Some(at) => {
            let (userinfo, host) = rest.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) if !user.contains(['/', '?', '#']) => {
                    format!("{scheme}://{user}:***{host}")
                }
                _ => format!("{scheme}://***{host}"),
            }
        }
    }
}

/// Removes a URL's user information (and its password part) from a message about it.
fn scrub_userinfo(url: &str, message: &str) -> String {
    let Some(userinfo) = userinfo(url).filter(|u| !u.is_empty()) else {
        return message.to_owned();
    };
    let mut out = message.replace(userinfo, "***");
    if let Some((_, password)) = userinfo.split_once(':') {
        if !password.is_empty() {
            out = out.replace(password, "***");
        }
    }
    out
}

/// The scheme and per-node URLs of a cluster URL:
/// `redis+cluster://[user:password@]host:port[,host:port…][/…][#insecure]` becomes
/// `redis://[user:password@]host:port[…]` for every node (`rediss` with `rediss+cluster`).
fn cluster_nodes(url: &str) -> Option<(&'static str, Vec<String>)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix("rediss+cluster://")?)
    };
    let (userinfo, hosts_and_tail) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let end = hosts_and_tail
        .find(['/', '?', '#'])
        .unwrap_or(hosts_and_tail.len());
    let (hosts, tail) = hosts_and_tail.split_at(end);
    let nodes = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{tail}"))
        .collect();
    Some((scheme, nodes))
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
    fn a_ca_file_needs_tls_and_a_certificate() {
        let err = RedisConfig::new("redis://u:pa55@h")
            .unwrap()
            .tls_ca_file("/nonexistent/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rediss://") && !err.contains("pa55"), "{err}");
        let err = RedisConfig::new("rediss://h")
            .unwrap()
            .tls_ca_file("/nonexistent/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let not_pem = std::env::temp_dir().join(format!("cli-not-pem-{}", std::process::id()));
        std::fs::write(&not_pem, "hello").unwrap();
        let err = RedisConfig::new("rediss://h")
            .unwrap()
            .tls_ca_file(&not_pem)
            .unwrap_err()
            .to_string();
        std::fs::remove_file(&not_pem).unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
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
        assert_eq!(redact_raw("redis://u:p/q@h"), "redis://u:***@h");
        assert_eq!(redact_raw("redis://p/q:r@h"), "redis://***@h");
        assert_eq!(redact_raw("u:p@h"), "<unparsable URL>");
    }

    #[test]
    fn passwords_with_reserved_characters_never_show() {
        for (url, password) in [
            ("redis://u:pa#ss@h", "pa#ss"),
            ("redis://u:12#x@h", "12#x"),
            ("redis://u:p/ss@h:6379", "p/ss"),
            ("redis://u:p?ss@h", "p?ss"),
            ("rediss://admin:s3cr/et#?@host:6380/0", "s3cr/et#?"),
            ("redis://:p/w#d@h", "p/w#d"),
            ("redis://u:p#w@h/0?x=1", "p#w"),
        ] {
            let err = RedisConfig::new(url).unwrap_err().to_string();
            assert!(!err.contains(password), "{url}: {err}");
            // Not even the part before the reserved character.
            let head = password.split(['#', '/', '?', '@']).next().unwrap();
            assert!(
                head.is_empty() || !err.contains(&format!(":{head}")),
                "{url}: {err}"
            );
            assert!(err.contains("***"), "{url}: {err}");
        }
        // An `@` inside the user information parses (the last `@` ends it).
        let config = RedisConfig::new("redis://u:p@ss@h").unwrap();
        assert_eq!(config.password(), Some("p@ss"));
        assert_eq!(config.redacted_url(), "redis://u:***@h:6379/0");
        // Percent-encoded, the same password works.
        let config = RedisConfig::new("redis://u:pa%23ss@h").unwrap();
        assert_eq!(config.password(), Some("pa#ss"));
        assert_eq!(config.redacted_url(), "redis://u:***@h:6379/0");
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
