//! What the CLI writes: JSON lines to stdout, and the one-line failures it reports.

use std::fmt;
use std::io::Write;

use eventbus_core::{Envelope, TransportErrorKind};
use serde_json::{json, Value};

/// Why a command stopped early.
#[derive(Debug)]
pub(crate) enum CliError {
    /// A failure, reported on stderr as one line, exit status 1.
    Failed(String),
    /// Stdout was closed by its reader (`| head`): stop quietly, exit status 0.
    OutputClosed,
}

/// The result of a command.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Failed(message) => f.write_str(&one_line(message)),
            CliError::OutputClosed => f.write_str("stdout closed"),
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Failed(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::Failed(message.to_owned())
    }
}

impl From<eventbus_core::Error> for CliError {
    fn from(error: eventbus_core::Error) -> Self {
        let hint = match &error {
            // Garbage in reply to the handshake: most likely not a Redis server at all.
            eventbus_core::Error::Transport(e)
                if e.kind() == TransportErrorKind::Protocol
                    && matches!(e.operation(), "connect" | "PING") =>
            {
                " (is it a Redis server?)"
            }
            _ => "",
        };
        CliError::Failed(format!("{error}{hint}"))
    }
}

impl From<eventbus_redis::Error> for CliError {
    fn from(error: eventbus_redis::Error) -> Self {
        match error {
            eventbus_redis::Error::Transport(e) => eventbus_core::Error::Transport(e).into(),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::OutputClosed
        } else {
            CliError::Failed(format!("cannot write to stdout: {error}"))
        }
    }
}

/// A message on one line: lines joined with spaces (server replies may span several).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes one line to stdout and flushes it.
pub(crate) fn print_text(line: impl fmt::Display) -> CliResult {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Writes a JSON value as one line to stdout and flushes it.
pub(crate) fn print_line(value: &Value) -> CliResult {
    print_text(value)
}

/// The JSON line printed for an event.
pub(crate) fn event_line(entry_id: &str, e: &Envelope<Value>) -> Value {
    json!({
        "stream_id": entry_id,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "source": e.source,
        "timestamp": e.timestamp,
        "version": e.version,
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
        "metadata": e.metadata,
        "data": e.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_one_line_and_a_closed_pipe_is_not_one() {
        let e = CliError::from("unexpected response: Parse error\nUnexpected `84`\n\n".to_owned());
        assert_eq!(
            e.to_string(),
            "unexpected response: Parse error Unexpected `84`"
        );
        assert!(matches!(
            CliError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
            CliError::OutputClosed
        ));
        assert!(matches!(
            CliError::from(std::io::Error::other("disk full")),
            CliError::Failed(_)
        ));
    }
}
