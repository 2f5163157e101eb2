//! `eventbus namespace show|set`: the settings every client of a namespace follows.

use clap::{Args, Subcommand, ValueEnum};
use eventbus_core::transport::Topic;
use eventbus_redis::RedisTransport;
use serde_json::json;

use crate::output::{print_line, print_text, CliError, CliResult};

#[derive(Subcommand)]
pub(crate) enum NamespaceAction {
    /// The namespace's settings.
    Show(ShowArgs),
    /// Change a setting; every client of the namespace follows within 5 s.
    Set(SetArgs),
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct SetArgs {
    /// Whether publishing also appends every event to the global stream (`{ns}:stream:all`).
    /// `off` halves the appends; subscriptions to all events (`consume --all`, `on_all`,
    /// the router on Streams) then refuse to start.
    #[arg(long, value_enum)]
    global_stream: Switch,
    /// Turn the global stream off even though consumer groups read it (they stop seeing
    /// new events).
    #[arg(long)]
    force: bool,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

pub(crate) async fn run(transport: RedisTransport, action: NamespaceAction) -> CliResult {
    let namespace = transport.keys().namespace().to_owned();
    match action {
        NamespaceAction::Show(args) => {
            let settings = transport.client().namespace_settings().await?;
            if args.json {
                print_line(&json!({
                    "namespace": namespace,
                    "global_stream": settings.global_stream,
                }))
            } else {
                print_text(format_args!(
                    "namespace `{namespace}`: global stream {}",
                    if settings.global_stream { "on" } else { "off" }
                ))
            }
        }
        NamespaceAction::Set(args) => {
            let on = args.global_stream == Switch::On;
            if !on && !args.force {
                // A group reading the global stream would silently stop seeing events.
                if let Some(stream) = transport.stream_summary(&Topic::All).await? {
                    if !stream.groups.is_empty() {
                        return Err(CliError::from(format!(
                            "consumer groups read the global stream of `{namespace}` ({}): they \
                             would stop seeing new events; stop them first, or pass --force",
                            stream.groups.join(", ")
                        )));
                    }
                }
            }
            transport.client().set_global_stream(on).await?;
            print_text(format_args!(
                "namespace `{namespace}`: global stream {}",
                if on { "on" } else { "off" }
            ))
        }
    }
}
