//! Waiting for replicas after a write ([`RedisConfig::publish_wait_for_replicas`]): `WAIT`
//! pipelined right behind the write, on the same connection and so to the same master.
//!
//! `WAIT` waits for the replication offset of its connection's own last write, which is past
//! every write that master took before it: it must follow the write it guards on the
//! connection that sent it, never on another (a connection that wrote nothing gets its
//! answer at once).
//!
//! [`RedisConfig::publish_wait_for_replicas`]: crate::RedisConfig::publish_wait_for_replicas

use std::time::Duration;

use eventbus_core::{Error as CoreError, Result as CoreResult, TransportError, TransportErrorKind};
use redis::Pipeline;

use crate::client::Inner;

/// Replicas to wait for, and for how long.
pub(crate) type Wait = (u32, Duration);

/// Adds `WAIT replicas timeout` to `pipe`, after the write it guards.
pub(crate) fn add_wait(pipe: &mut Pipeline, (replicas, timeout): Wait) {
    pipe.cmd("WAIT").arg(replicas).arg(
        u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
    );
}

/// `Ok` when `acked` replicas are enough; otherwise a timeout of `operation` that says what
/// was written (`written`) and what it means.
pub(crate) fn check(
    inner: &Inner,
    operation: &'static str,
    written: &str,
    acked: i64,
    (replicas, timeout): Wait,
) -> CoreResult<()> {
    if acked >= i64::from(replicas) {
        return Ok(());
    }
    Err(CoreError::Transport(TransportError::new(
        TransportErrorKind::Timeout,
        &inner.server.redacted_url,
        operation,
        format!(
            "{written}, but only {acked} of {replicas} replicas acknowledged within {} ms: it \
             may be lost if the master fails now",
            timeout.as_millis()
        ),
    )))
}
