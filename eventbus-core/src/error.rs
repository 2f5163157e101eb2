//! Errors of the eventbus runtime.
//!
//! Business rejections, concurrency conflicts and infrastructure failures are kept apart;
//! whether an operation is worth retrying is a method ([`Error::is_retryable`]), never string
//! matching.

use std::fmt;

/// The result type of eventbus operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed error used as the source of wrapped failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the eventbus runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event payload could not be encoded as JSON. A bug in the event type's `Serialize`
    /// impl: not retryable.
    #[error("cannot serialize event `{event_type}`: {source}")]
    Serialize {
        /// The event type being serialized.
        event_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event could not be decoded into the requested type. Permanent for that entry;
    /// consumers send such entries to the dead-letter stream.
    #[error("cannot decode event `{event_type}`: {reason}")]
    Decode {
        /// The event type of the entry.
        event_type: String,
        /// What was wrong with it.
        reason: String,
    },

    /// The backend (Redis, or the in-memory transport) failed. Inspect
    /// [`TransportError::kind`]; [`Error::is_retryable`] says whether trying again may help.
    #[error(transparent)]
    Transport(#[from] TransportError),

    /// The consumer group does not exist (for example after `FLUSHALL` or a failover).
    /// Consumers recreate it with backoff.
    #[error("consumer group `{group}` does not exist on `{stream}`")]
    GroupMissing {
        /// The stream (topic) that lost its group.
        stream: String,
        /// The group name.
        group: String,
    },

    /// The object was configured wrongly (no handlers, an empty group name, …). Fix the
    /// wiring: not retryable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A routing pattern is not valid (empty, an empty segment, whitespace, or `*` inside a
    /// segment). Raised when the rule is registered, never at dispatch: fix the pattern.
    #[error("invalid routing pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Optimistic concurrency: an aggregate's stream was not at the version the writer
    /// loaded (another writer appended first). Nothing was written. Retryable: reload the
    /// aggregate, decide again on the new state and append with the new version (the command
    /// bus does so up to `Repository::max_retries` times).
    #[error(
        "concurrency conflict on aggregate `{aggregate_type}` `{aggregate_id}`: expected version {expected}, found {actual}"
    )]
    Conflict {
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate instance.
        aggregate_id: String,
        /// The version the writer expected (what it loaded).
        expected: u64,
        /// The version the store holds.
        actual: u64,
    },

    /// The component has been shut down and accepts no more work.
    #[error("shut down")]
    Shutdown,

    /// A stored read model could not be read back as its Rust type (a field is missing or
    /// doesn't parse). Permanent until the read model is rebuilt or its type fixed.
    #[error("cannot read read model `{key}`: {reason}")]
    ReadModel {
        /// The read model's key.
        key: String,
        /// What was wrong.
        reason: String,
    },

    /// A projection's writes cannot be applied to the stored read model (a key of another
    /// type, an increment of a field that is not an integer). Nothing was written; the entry
    /// is dead-lettered. Permanent until the stored data is fixed (then replay the dead
    /// letter).
    #[error("cannot write read model `{key}`: {reason}")]
    ReadModelWrite {
        /// The read model's key.
        key: String,
        /// What was wrong.
        reason: String,
    },

    /// The metrics endpoint could not listen on its address (in use, not local, not
    /// permitted). Nothing is served; not retryable as is: pick another address (port 0
    /// picks a free one).
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsListen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The I/O error of the bind.
        #[source]
        source: std::io::Error,
    },

    /// Another metrics recorder than eventbus's Prometheus one is installed in this process
    /// (the `metrics` facade takes one per process): scrape that one's exporter, or let
    /// eventbus install its recorder first. Not retryable.
    #[error("another metrics recorder is installed in this process; eventbus cannot install its Prometheus recorder")]
    MetricsRecorderTaken,

    /// OpenTelemetry export (feature `otel`, [`telemetry::otlp`](crate::telemetry::otlp))
    /// could not be set up (an invalid endpoint or header, a `metrics` recorder installed
    /// already) or could not flush what it held at a flush or shutdown (the collector is
    /// down or refused it). Fix the configuration, or check the collector: not retryable as
    /// such (the exporter retries transient failures itself).
    #[cfg(feature = "otel")]
    #[error("OTLP export: {reason}")]
    Otlp {
        /// What failed.
        reason: String,
        /// The OpenTelemetry error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether this is an optimistic-concurrency conflict ([`Error::Conflict`]).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Whether the same operation may succeed if tried again (after a backoff).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(e) => e.is_retryable(),
            Error::GroupMissing { .. } | Error::Conflict { .. } => true,
            Error::Serialize { .. }
            | Error::Decode { .. }
            | Error::Config(_)
            | Error::InvalidPattern { .. }
            | Error::Shutdown
            | Error::ReadModel { .. }
            | Error::ReadModelWrite { .. }
            | Error::MetricsListen { .. }
            | Error::MetricsRecorderTaken => false,
            #[cfg(feature = "otel")]
            Error::Otlp { .. } => false,
        }
    }
}

/// What kind of backend failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The server could not be reached, or the connection dropped. Retryable.
    Connection,
    /// The server did not answer in time. Retryable.
    Timeout,
    /// Authentication failed (wrong user or password). Not retryable: fix the credentials.
    Auth,
    /// The ACL user lacks a permission for a command or key. Not retryable.
    Permission,
    /// The server is loading, failing over, out of memory (`maxmemory` under `noeviction`)
    /// or otherwise busy. Retryable.
    Busy,
    /// The server answered with data the client did not expect. Not retryable.
    Protocol,
    /// Any other server-side error. Not retryable.
    Other,
}

impl TransportErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            TransportErrorKind::Connection => "connection failed",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::Auth => "authentication failed",
            TransportErrorKind::Permission => "permission denied",
            TransportErrorKind::Busy => "server busy",
            TransportErrorKind::Protocol => "unexpected response",
            TransportErrorKind::Other => "command failed",
        }
    }
}

/// A failure of the backend, naming the server (never its password) and the operation.
#[derive(Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    server: String,
    operation: String,
    message: String,
    source: Option<BoxError>,
}

impl TransportError {
    /// Creates an error. `server` must already be redacted (no password).
    pub fn new(
        kind: TransportErrorKind,
        server: impl Into<String>,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        TransportError {
            kind,
            server: server.into(),
            operation: operation.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The server it happened on, without credentials.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The operation that failed (`XADD`, `connect`, …).
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// Whether retrying after a backoff may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            TransportErrorKind::Connection | TransportErrorKind::Timeout | TransportErrorKind::Busy
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} ({})",
            self.kind.as_str(),
            self.server,
            self.operation
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Why a handler failed to process an event.
///
/// Any error converts into it with `?`, as a retryable failure. Use
/// [`HandlerError::permanent`] for failures that no retry can fix (the entry then goes to the
/// dead-letter stream at once instead of after `max_deliveries`).
pub struct HandlerError {
    message: String,
    source: Option<BoxError>,
    permanent: bool,
    abandon: bool,
}

impl HandlerError {
    /// A retryable failure with a message.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            source: None,
            permanent: false,
            abandon: false,
        }
    }

    /// Gives the entry back without a verdict: it is neither retried here nor
    /// dead-lettered, and no failure is counted; it stays pending for this group and is
    /// delivered again after a restart or by another consumer once it is idle. For a
    /// consumer that can no longer deliver what it reads (its output closed, say) and is
    /// about to stop.
    pub fn abandon(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            source: None,
            permanent: false,
            abandon: true,
        }
    }

    /// Whether the handler gave the entry back (see [`HandlerError::abandon`]).
    pub fn is_abandon(&self) -> bool {
        self.abandon
    }

    /// A failure that retrying cannot fix: the entry is dead-lettered immediately.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            source: None,
            permanent: true,
            abandon: false,
        }
    }

    /// Marks this failure as permanent.
    pub fn into_permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    /// Whether the failure is permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The message, including the sources' messages.
    pub fn message(&self) -> String {
        let mut out = self.message.clone();
        let mut next = self.source.as_deref().and_then(|s| s.source());
        while let Some(s) = next {
            out.push_str(": ");
            out.push_str(&s.to_string());
            next = s.source();
        }
        out
    }

    /// The underlying error, when there is one.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<BoxError>,
{
    fn from(e: E) -> Self {
        let source: BoxError = e.into();
        HandlerError {
            message: source.to_string(),
            source: Some(source),
            permanent: false,
            abandon: false,
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message())
            .field("permanent", &self.permanent)
            .field("abandon", &self.abandon)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_error_names_server_and_operation() {
        let e = TransportError::new(
            TransportErrorKind::Connection,
            "redis://127.0.0.1:1",
            "connect",
            "refused",
        );
        assert_eq!(
            e.to_string(),
            "connection failed on redis://127.0.0.1:1 (connect): refused"
        );
        assert!(Error::from(e).is_retryable());
    }

    #[test]
    fn handler_error_from_any_error_is_retryable() {
        fn fails() -> Result<(), HandlerError> {
            let _: u32 = "x".parse()?;
            Ok(())
        }
        let e = fails().unwrap_err();
        assert!(!e.is_permanent());
        assert!(e.message().contains("invalid digit"));
        assert!(HandlerError::permanent("bad").is_permanent());
    }
}
