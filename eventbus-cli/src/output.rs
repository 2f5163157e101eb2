//! What the CLI writes: events as JSON lines or pretty text to stdout, and the one-line
//! failures it reports.

use std::fmt;
use std::io::Write;

use clap::{Args, ValueEnum};
use eventbus_core::{Envelope, TransportErrorKind};
use serde_json::{json, Value};

use crate::format::{utc, Table};

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

/// Writes a table to stdout, header first.
pub(crate) fn print_table(table: &Table) -> CliResult {
    print_text(table.lines().join("\n"))
}

/// Writes a JSON value as one line to stdout and flushes it.
pub(crate) fn print_line(value: &Value) -> CliResult {
    print_text(value)
}

/// How events print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum EventFormat {
    /// One JSON object per line, for machines (`jq`, scripts).
    #[default]
    Json,
    /// A header line (time, type and version, ids) and the data as indented JSON, for people.
    Pretty,
}

/// The `--format` option of the commands that print events.
#[derive(Args, Clone, Copy)]
pub(crate) struct FormatArg {
    /// How to print events.
    #[arg(long, value_enum, default_value_t = EventFormat::Json)]
    pub(crate) format: EventFormat,
}

/// Prints an event read at `entry_id` in `format`.
pub(crate) fn print_event(format: EventFormat, entry_id: &str, e: &Envelope<Value>) -> CliResult {
    match format {
        EventFormat::Json => print_event_line(entry_id, e),
        EventFormat::Pretty => print_text(pretty_event(entry_id, e)),
    }
}

/// An event for people: `2026-12-03T17:40:01Z  OrderCreated v1  id=…  corr=…`, then its data
/// (and metadata, when there is some) as indented JSON, then a blank line.
fn pretty_event(entry_id: &str, e: &Envelope<Value>) -> String {
    let mut out = format!(
        "{}  {} v{}  id={}  entry={}  source={}",
        utc(e.timestamp),
        e.event_type,
        e.version,
        e.event_id,
        entry_id,
        e.source
    );
    for (name, value) in [("corr", &e.correlation_id), ("cause", &e.causation_id)] {
        if let Some(value) = value {
            out.push_str(&format!("  {name}={value}"));
        }
    }
    out.push('\n');
    out.push_str(&indented(&e.data));
    if !e.metadata.is_empty() {
        out.push_str("\n  metadata:\n");
        out.push_str(&indented(&json!(e.metadata)));
    }
    out.push('\n');
    out
}

/// Pretty JSON, every line indented by two spaces.
fn indented(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON line printed for an event, borrowed from it (fields in the order a JSON object
/// of them sorts: the line is the same as [`event_line`]'s value printed).
#[derive(serde::Serialize)]
struct EventLine<'a> {
    causation_id: &'a Option<String>,
    correlation_id: &'a Option<String>,
    data: &'a Value,
    event_id: &'a str,
    event_type: &'a str,
    metadata: &'a eventbus_core::Metadata,
    source: &'a str,
    stream_id: &'a str,
    timestamp: f64,
    version: u32,
}

impl<'a> EventLine<'a> {
    fn new(entry_id: &'a str, e: &'a Envelope<Value>) -> Self {
        EventLine {
            causation_id: &e.causation_id,
            correlation_id: &e.correlation_id,
            data: &e.data,
            event_id: &e.event_id,
            event_type: &e.event_type,
            metadata: &e.metadata,
            source: &e.source,
            stream_id: entry_id,
            timestamp: e.timestamp,
            version: e.version,
        }
    }
}

/// The JSON line printed for an event.
pub(crate) fn event_line(entry_id: &str, e: &Envelope<Value>) -> Value {
    serde_json::to_value(EventLine::new(entry_id, e)).unwrap_or(Value::Null)
}

/// Writes an event's JSON line to stdout and flushes it: serialized straight from the event
/// into one buffer, written with one call.
fn print_event_line(entry_id: &str, e: &Envelope<Value>) -> CliResult {
    let mut line = serde_json::to_vec(&EventLine::new(entry_id, e)).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_is_the_sorted_json_object_of_the_event() {
        let mut e = Envelope::new("OrderCreated", 2, "shop", json!({"order_id": "o1", "n": 1}))
            .with_correlation_id("corr-1");
        e.metadata.insert("tenant".into(), json!("t1"));
        let expected = json!({
            "stream_id": "1-0",
            "event_id": e.event_id,
            "event_type": e.event_type,
            "source": e.source,
            "timestamp": e.timestamp,
            "version": e.version,
            "correlation_id": e.correlation_id,
            "causation_id": e.causation_id,
            "metadata": e.metadata,
            "data": e.data,
        });
        let printed = serde_json::to_string(&EventLine::new("1-0", &e)).unwrap();
        assert_eq!(printed, expected.to_string());
        assert_eq!(event_line("1-0", &e), expected);
    }

    #[test]
    fn a_pretty_event_is_a_header_line_then_indented_data() {
        let mut e = Envelope::new("OrderCreated", 2, "shop", json!({"order_id": "o1", "n": 1}))
            .with_correlation_id("corr-1");
        e.timestamp = 1_796_319_601.25;
        e.event_id = "ev-1".into();
        let expected = [
            "2026-12-03T17:40:01Z  OrderCreated v2  id=ev-1  entry=1-0  source=shop  corr=corr-1",
            "  {",
            r#"    "n": 1,"#,
            r#"    "order_id": "o1""#,
            "  }",
            "",
        ];
        assert_eq!(pretty_event("1-0", &e), expected.join("\n"));
        let with_metadata = pretty_event("1-0", &e.with_metadata("tenant", "acme"));
        let tail = [
            "  }",
            "  metadata:",
            "  {",
            r#"    "tenant": "acme""#,
            "  }",
            "",
        ];
        assert!(with_metadata.ends_with(&tail.join("\n")), "{with_metadata}");
    }

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
