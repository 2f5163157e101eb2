//! [`ServerInfo`]: which server a client is connected to — Redis or Valkey, and its version —
//! as `INFO server` reported it when connecting.
//!
//! Valkey answers `redis_version` with the Redis version it is compatible with (`7.2.4` for
//! Valkey 8.1) and gives its own in `valkey_version`, next to `server_name:valkey`; Redis
//! has neither field.

use std::fmt;

/// The server a [`RedisClient`](crate::RedisClient) is connected to, from `INFO server` when
/// connecting. Fields are empty when the ACL user may not run `INFO`.
///
/// ```
/// use eventbus_redis::ServerInfo;
///
/// let valkey = ServerInfo::parse("# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n");
/// assert!(valkey.is_valkey());
/// assert_eq!((valkey.name.as_str(), valkey.version.as_str()), ("valkey", "8.1.8"));
/// assert_eq!(valkey.redis_version, "7.2.4");
/// assert_eq!(valkey.to_string(), "Valkey 8.1.8");
///
/// let redis = ServerInfo::parse("# Server\r\nredis_version:7.0.15\r\n");
/// assert_eq!(redis.to_string(), "Redis 7.0.15");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// `redis` or `valkey` (Valkey's `server_name`; Redis reports none); empty when unknown.
    pub name: String,
    /// The server's own version: `valkey_version` on Valkey, `redis_version` on Redis.
    pub version: String,
    /// `redis_version`: on Redis its version, on Valkey the Redis version it is compatible
    /// with (`7.2.4` for Valkey 8), which says which Redis commands and replies it has.
    pub redis_version: String,
}

impl ServerInfo {
    /// Reads the text of `INFO server` (or of all of `INFO`).
    pub fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        let redis_version = field("redis_version").unwrap_or_default();
        let name = field("server_name")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                if redis_version.is_empty() {
                    String::new()
                } else {
                    "redis".to_owned()
                }
            });
        let version = field(&format!("{name}_version"))
            .filter(|_| !name.is_empty())
            .unwrap_or_else(|| redis_version.clone());
        ServerInfo {
            name,
            version,
            redis_version,
        }
    }

    /// Whether the server is Valkey.
    pub fn is_valkey(&self) -> bool {
        self.name == "valkey"
    }
}

/// `Redis 7.0.15`, `Valkey 8.1.8`; `unknown server` when `INFO` could not be read.
impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.name.as_str() {
            "" => return f.write_str("unknown server"),
            "redis" => "Redis",
            "valkey" => "Valkey",
            other => other,
        };
        write!(f, "{name} {}", self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_valkey_and_unknown() {
        let redis = ServerInfo::parse("# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n");
        assert_eq!(
            redis,
            ServerInfo {
                name: "redis".into(),
                version: "7.0.15".into(),
                redis_version: "7.0.15".into(),
            }
        );
        assert!(!redis.is_valkey());

        let valkey = ServerInfo::parse(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n",
        );
        assert_eq!(
            (valkey.name.as_str(), valkey.version.as_str()),
            ("valkey", "8.1.8")
        );
        assert!(valkey.is_valkey());

        let unknown = ServerInfo::parse("");
        assert_eq!(unknown, ServerInfo::default());
        assert_eq!(unknown.to_string(), "unknown server");
    }

    #[test]
    fn a_field_is_matched_whole() {
        // `redis_version_x` is not `redis_version`.
        let info = ServerInfo::parse("redis_version_x:1\r\nredis_version:7.0.0\r\n");
        assert_eq!(info.version, "7.0.0");
    }

    #[test]
    fn another_server_name_keeps_its_version_when_it_has_one() {
        let info = ServerInfo::parse("redis_version:7.2.4\r\nserver_name:other\r\n");
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("other", "7.2.4")
        );
        assert_eq!(info.to_string(), "other 7.2.4");
    }
}
