//! `eventbus`: publish, consume, inspect lag, manage dead letters and look at sagas on a Redis
//! event bus.
//!
//! ```sh
//! cargo install --path eventbus-cli        # or: cargo run -p eventbus-cli -- …
//! eventbus publish OrderCreated '{"order_id":"ord_1"}'
//! eventbus consume --service billing --type OrderCreated --format pretty
//! eventbus lag
//! eventbus monitor --metrics-addr 0.0.0.0:9464   # Prometheus exporter of every group's lag
//! eventbus console                               # the operator console on http://127.0.0.1:7474/
//! ```
//!
//! Data goes to stdout (one JSON object per line for events), progress, hints and errors to
//! stderr. Failures exit with status 1 and a one-line reason (usage errors: status 2). A
//! closed stdout (`eventbus consume … | head -n 3`) ends the command quietly with status 0; a
//! consumer then leaves what it did not print to its group.
//!
//! The tool lives in a crate of its own so that a library user of `eventbus-redis` doesn't
//! compile `clap`; it uses only `eventbus-redis`'s public API.

mod cli;
mod console;
mod consume;
mod dlq;
mod format;
mod lag;
mod monitor;
mod namespace;
mod output;
mod publish;
mod saga;
mod tail;
mod topic;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    cli::main().await
}

/// Log records (filtered by `EVENTBUS_LOG`, `warn` by default) go to stderr as text, or as
/// one JSON object per line.
pub(crate) fn init_logging(format: cli::LogFormat) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("EVENTBUS_LOG")
            .unwrap_or_else(|_| "warn".into())
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter());
    match format {
        cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        cli::LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}
