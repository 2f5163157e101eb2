//! `eventbus`: publish, consume, inspect lag, manage dead letters and look at sagas on a Redis
//! event bus.
//!
//! ```sh
//! cargo install --path eventbus-cli        # or: cargo run -p eventbus-cli -- …
//! eventbus publish OrderCreated '{"order_id":"ord_1"}'
//! eventbus consume --service billing --type OrderCreated --format pretty
//! eventbus lag
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
mod consume;
mod dlq;
mod format;
mod lag;
mod output;
mod publish;
mod saga;
mod tail;
mod topic;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTBUS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    cli::main().await
}
