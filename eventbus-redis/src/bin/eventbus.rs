//! `eventbus`: publish, consume, inspect lag and manage dead letters on a Redis event bus.
//!
//! Data goes to stdout (one JSON object per line for events), progress and errors to stderr.
//! Failures exit with status 1 and a one-line reason (usage errors: status 2). A closed
//! stdout (`eventbus consume … | head -n 3`) ends the command quietly with status 0; a
//! consumer then leaves what it did not print to its group.

use std::process::ExitCode;

#[path = "../cli/mod.rs"]
mod cli;

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
