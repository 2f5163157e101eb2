//! Errors of the Redis backend, and the mapping of `redis::RedisError` into core errors.

use eventbus_core::{TransportError, TransportErrorKind};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The result type of this crate's own operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong setting up the Redis backend.
///
/// Converts into [`eventbus_core::Error`] with `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL could not be parsed. Fix the URL (`REDIS_URL`): not retryable. The URL
    /// in the message has its password redacted.
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The TLS certificate authority file could not be used (unreadable, not PEM, or given
    /// for a URL that is not `rediss://`). Fix the file or the URL: not retryable.
    #[error("cannot use TLS CA file `{path}`: {reason}")]
    TlsCaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A topic was asked for a partition count outside 1 to `max`. Ask for another count:
    /// not retryable. Nothing was changed.
    #[error("topic `{event_type}`: a topic has 1 to {max} partitions (asked for {asked})")]
    InvalidPartitionCount {
        /// The event type.
        event_type: String,
        /// The count asked for.
        asked: u32,
        /// The most partitions a topic may have.
        max: u32,
    },

    /// A topic was asked for fewer partitions than it has: a partition count only grows
    /// (fewer partitions would strand the entries of the dropped ones). Not retryable;
    /// nothing was changed.
    #[error(
        "topic `{event_type}` has {current} partitions; a partition count can only grow \
         (asked for {asked})"
    )]
    PartitionCountCannotShrink {
        /// The event type.
        event_type: String,
        /// Its partition count.
        current: u32,
        /// The count asked for.
        asked: u32,
    },

    /// A topic was asked for another partition count, but an event-sourced aggregate type
    /// has stored its events on a Redis Cluster: its aggregates' keys are placed by that
    /// count, so it can never change (see the README's "Event store on a cluster"). Not
    /// retryable; nothing was changed. Publish new events under another type instead.
    #[error(
        "topic `{event_type}` has {current} partitions and is co-partitioned with aggregate \
         type `{aggregate_type}`, whose stored aggregates are placed by that count: it cannot \
         change (asked for {asked})"
    )]
    TopicPinned {
        /// The event type.
        event_type: String,
        /// Its partition count, for good.
        current: u32,
        /// The count asked for.
        asked: u32,
        /// The aggregate type that pinned it.
        aggregate_type: String,
    },

    /// An aggregate type appended events whose types have different partition counts, or
    /// a count other than the one its aggregates were placed by, on a Redis Cluster: the
    /// events of one aggregate type are co-partitioned with it (all in the partition of the
    /// aggregate id, one slot). Not retryable; nothing was appended. Give the event types
    /// the aggregate type's count (`eventbus topic create`) before their first append.
    #[error(
        "aggregate type `{aggregate_type}`{}: its event types must have that same partition \
         count, but {}",
        .partitions.map(|p| format!(" is placed by {p} partitions")).unwrap_or_default(),
        .event_types.iter().map(|(t, n)| format!("`{t}` has {n}")).collect::<Vec<_>>().join(", ")
    )]
    AggregatePartitionsDiffer {
        /// The aggregate type.
        aggregate_type: String,
        /// The partition count stored for it, if any.
        partitions: Option<u32>,
        /// The event types of the append, with their partition counts.
        event_types: Vec<(String, u32)>,
    },

    /// The configuration contradicts itself (say, a replica wait longer than the response
    /// timeout, which would give up on the reply before it comes). Fix the configuration:
    /// not retryable.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, and what to change.
        reason: String,
    },

    /// Redis could not be reached or refused the connection (unreachable, wrong password,
    /// missing permission). [`TransportError::kind`] and [`Error::is_retryable`] tell which.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl Error {
    /// Whether trying again after a backoff may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::InvalidUrl { .. }
            | Error::InvalidConfig { .. }
            | Error::TlsCaFile { .. }
            | Error::InvalidPartitionCount { .. }
            | Error::PartitionCountCannotShrink { .. }
            | Error::TopicPinned { .. }
            | Error::AggregatePartitionsDiffer { .. } => false,
            Error::Transport(e) => e.is_retryable(),
        }
    }
}

impl From<Error> for eventbus_core::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidUrl { .. }
            | Error::InvalidConfig { .. }
            | Error::TlsCaFile { .. }
            | Error::InvalidPartitionCount { .. }
            | Error::PartitionCountCannotShrink { .. }
            | Error::TopicPinned { .. }
            | Error::AggregatePartitionsDiffer { .. } => {
                eventbus_core::Error::Config(error.to_string())
            }
            Error::Transport(e) => eventbus_core::Error::Transport(e),
        }
    }
}

/// The server an error happened on: its redacted URL, and the password to scrub from any
/// message that might echo it.
#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) redacted_url: String,
    password: Option<String>,
}

impl Server {
    pub(crate) fn new(redacted_url: impl Into<String>, password: Option<&str>) -> Self {
        Server {
            redacted_url: redacted_url.into(),
            password: password.map(str::to_owned),
        }
    }

    /// Maps a Redis error of `operation` to a core transport error.
    pub(crate) fn transport(&self, error: &RedisError, operation: &str) -> TransportError {
        TransportError::new(
            kind_of(error),
            &self.redacted_url,
            operation,
            self.scrub(error.to_string()),
        )
    }

    /// Maps a Redis error of `operation` on `topic`/`group`: `NOGROUP` becomes
    /// [`eventbus_core::Error::GroupMissing`], anything else a transport error.
    pub(crate) fn error(
        &self,
        error: &RedisError,
        operation: &str,
        group_of: Option<(&str, &str)>,
    ) -> eventbus_core::Error {
        if let Some((stream, group)) = group_of {
            if has_code(error, "NOGROUP") {
                return eventbus_core::Error::GroupMissing {
                    stream: stream.to_owned(),
                    group: group.to_owned(),
                };
            }
        }
        eventbus_core::Error::Transport(self.transport(error, operation))
    }

    /// A reply that does not have the expected shape.
    pub(crate) fn protocol(
        &self,
        operation: &str,
        message: impl Into<String>,
    ) -> eventbus_core::Error {
        eventbus_core::Error::Transport(TransportError::new(
            TransportErrorKind::Protocol,
            &self.redacted_url,
            operation,
            message,
        ))
    }

    /// A timeout measured by this crate (not by redis-rs).
    pub(crate) fn timeout(
        &self,
        operation: &str,
        message: impl Into<String>,
    ) -> eventbus_core::Error {
        eventbus_core::Error::Transport(TransportError::new(
            TransportErrorKind::Timeout,
            &self.redacted_url,
            operation,
            message,
        ))
    }

    fn scrub(&self, message: String) -> String {
        match &self.password {
            Some(password) if !password.is_empty() => message.replace(password.as_str(), "***"),
            _ => message,
        }
    }
}

/// The error codes in a Redis error (`NOGROUP`, `WRONGPASS`, …), including those of every
/// failed command of a pipeline or transaction.
pub(crate) fn codes(error: &RedisError) -> Vec<String> {
    let mut codes: Vec<String> = error.code().map(str::to_owned).into_iter().collect();
    if let Some(errors) = error.clone().into_server_errors() {
        codes.extend(errors.iter().map(|(_, e)| e.code().to_owned()));
    }
    // Errors raised inside a Lua script may carry the code in their detail.
    if let Some(detail) = error.detail() {
        if let Some(first) = detail.split_whitespace().next() {
            if first.len() > 2 && first.chars().all(|c| c.is_ascii_uppercase()) {
                codes.push(first.to_owned());
            }
        }
    }
    codes
}

/// Whether a Redis error carries `code`.
pub(crate) fn has_code(error: &RedisError, code: &str) -> bool {
    codes(error).iter().any(|c| c == code)
}

/// The kind of failure a Redis error is.
pub(crate) fn kind_of(error: &RedisError) -> TransportErrorKind {
    if error.is_timeout() {
        return TransportErrorKind::Timeout;
    }
    match error.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => {
            return TransportErrorKind::Connection
        }
        ErrorKind::AuthenticationFailed => return TransportErrorKind::Auth,
        ErrorKind::Server(ServerErrorKind::NoPerm) => return TransportErrorKind::Permission,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown,
        ) => return TransportErrorKind::Busy,
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => return TransportErrorKind::Protocol,
        _ => {}
    }
    let codes = codes(error);
    let any = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(&c.as_str()));
    if any(&["WRONGPASS", "NOAUTH"]) {
        TransportErrorKind::Auth
    } else if any(&["NOPERM"]) {
        TransportErrorKind::Permission
    } else if any(&[
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "OOM",
    ]) {
        // (OOM: `maxmemory` reached under `noeviction`; writes succeed again once memory
        // is freed or the limit raised.)
        TransportErrorKind::Busy
    } else if error.is_connection_dropped() || error.is_connection_refusal() {
        TransportErrorKind::Connection
    } else {
        TransportErrorKind::Other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io;

    fn server() -> Server {
        Server::new("redis://app:***@db:6379/0", Some("hunter2"))
    }

    fn kind(error: RedisError) -> TransportErrorKind {
        server().transport(&error, "test").kind()
    }

    fn ext(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
    }

    #[test]
    fn kinds() {
        use TransportErrorKind as K;
        assert_eq!(
            kind(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
            K::Connection
        );
        assert_eq!(
            kind(io::Error::from(io::ErrorKind::BrokenPipe).into()),
            K::Connection
        );
        assert_eq!(
            kind(io::Error::from(io::ErrorKind::TimedOut).into()),
            K::Timeout
        );
        assert_eq!(
            kind(
                (
                    ErrorKind::AuthenticationFailed,
                    "Password authentication failed"
                )
                    .into()
            ),
            K::Auth
        );
        assert_eq!(
            kind(ext("WRONGPASS", "invalid username-password pair")),
            K::Auth
        );
        assert_eq!(kind(ext("NOAUTH", "Authentication required.")), K::Auth);
        assert_eq!(
            kind((ErrorKind::Server(ServerErrorKind::NoPerm), "no").into()),
            K::Permission
        );
        assert_eq!(
            kind(ext("NOPERM", "this user has no permissions")),
            K::Permission
        );
        assert_eq!(
            kind((ErrorKind::Server(ServerErrorKind::BusyLoading), "l").into()),
            K::Busy
        );
        assert_eq!(kind(ext("BUSY", "Redis is busy running a script")), K::Busy);
        assert_eq!(
            kind((ErrorKind::Server(ServerErrorKind::TryAgain), "t").into()),
            K::Busy
        );
        assert_eq!(
            kind((ErrorKind::Server(ServerErrorKind::MasterDown), "m").into()),
            K::Busy
        );
        assert_eq!(
            kind((ErrorKind::Server(ServerErrorKind::ClusterDown), "c").into()),
            K::Busy
        );
        assert_eq!(kind(ext("WRONGTYPE", "Operation against a key")), K::Other);
        assert_eq!(
            kind((ErrorKind::Server(ServerErrorKind::ResponseError), "x").into()),
            K::Other
        );
    }

    #[test]
    fn nogroup_becomes_group_missing() {
        let e = ext("NOGROUP", "No such key 'k' or consumer group 'g'");
        match server().error(&e, "XREADGROUP", Some(("OrderCreated", "g"))) {
            eventbus_core::Error::GroupMissing { stream, group } => {
                assert_eq!((stream.as_str(), group.as_str()), ("OrderCreated", "g"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = ext(
            "ERR",
            "NOGROUP No such key 'k' or consumer group 'g' script: abc",
        );
        assert!(matches!(
            server().error(&e, "EVALSHA", Some(("t", "g"))),
            eventbus_core::Error::GroupMissing { .. }
        ));
    }

    #[test]
    fn messages_name_server_and_operation_never_the_password() {
        let e = ext("ERR", "something mentioning hunter2");
        let message = server().error(&e, "XADD", None).to_string();
        assert!(message.contains("redis://app:***@db:6379/0"), "{message}");
        assert!(message.contains("XADD"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn converts_into_core_errors() {
        let e = Error::InvalidUrl {
            url: "x".into(),
            reason: "bad".into(),
        };
        assert!(!e.is_retryable());
        assert!(matches!(
            eventbus_core::Error::from(e),
            eventbus_core::Error::Config(_)
        ));
    }
}
