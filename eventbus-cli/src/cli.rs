//! The `eventbus` command line: global arguments, connecting, and dispatching to the module
//! of each command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use eventbus_redis::{RedisConfig, RedisTransport, DEFAULT_URL};

use crate::output::{CliError, CliResult};
use crate::{console, consume, dlq, lag, monitor, namespace, publish, saga, tail, topic};

/// The help heading of the options every command takes, apart from the command's own.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "eventbus",
    version,
    about = "Inspect and drive an eventbus on Redis"
)]
struct Cli {
    /// Redis URL (`redis://[user:password@]host:port/db`, `rediss://` for TLS,
    /// `redis+cluster://host:port[,host:port…]` for a cluster); unset or
    /// empty: `redis://127.0.0.1:6379`. Percent-encode `#`, `/`, `?` and `@` in a password.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    url: Option<String>,
    /// Trust the certificate authorities in this PEM file for `rediss://` (a private CA).
    /// Default: `REDIS_TLS_CA_FILE`, else `SSL_CERT_FILE`, else the webpki roots.
    #[arg(long, global = true, value_name = "PEM", help_heading = GLOBAL)]
    tls_ca_file: Option<PathBuf>,
    /// Key namespace.
    #[arg(long, global = true, default_value = "eventbus", help_heading = GLOBAL)]
    namespace: String,
    /// How log records (`EVENTBUS_LOG`, `warn` by default) are written to stderr: text, or
    /// one JSON object per line. Data and progress lines are unchanged.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "EVENTBUS_LOG_FORMAT",
        help_heading = GLOBAL
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, spans).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one event; prints its entry id in its type's stream.
    Publish(publish::PublishArgs),
    /// Consume events as a member of a service's consumer group, printing each (a JSON line,
    /// or `--format pretty`) and acknowledging it after printing.
    Consume(consume::ConsumeArgs),
    /// Lag, pending entries and consumers of every stream and group.
    Lag(lag::LagArgs),
    /// Dead letters of a service's group.
    Dlq {
        #[command(subcommand)]
        action: dlq::DlqAction,
    },
    /// Saga state and history by id, and sagas by state.
    Saga(saga::SagaArgs),
    /// Follow a stream without a consumer group, printing events as JSON lines (or
    /// `--format pretty`).
    Tail(tail::TailArgs),
    /// Partitioned topics: create one, list them with where their partitions live.
    Topic {
        #[command(subcommand)]
        action: topic::TopicAction,
    },
    /// The namespace's settings, which every client follows: show them, or turn the global
    /// stream off (or on).
    Namespace {
        #[command(subcommand)]
        action: namespace::NamespaceAction,
    },
    /// Serve Prometheus metrics of every stream and group of the namespace (lag, pending
    /// entries, oldest pending age), sampled every interval: a sidecar exporter for services
    /// in any language.
    Monitor(monitor::MonitorArgs),
    /// Serve the operator console, a web page of the namespace: streams, groups and lag,
    /// dead letters (replay, purge), sagas, projections, and event flows by correlation id.
    /// Read-only unless `--allow-writes`; binds 127.0.0.1 by default.
    Console(console::ConsoleArgs),
}

/// Parses the arguments, runs the command and reports how it went.
pub(crate) async fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::init_logging(cli.log_format);
    match run(cli).await {
        Ok(()) | Err(CliError::OutputClosed) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eventbus: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    // Checked before connecting: nothing is sent for an event consumers would reject.
    if let Command::Publish(args) = &cli.command {
        args.check()?;
    }
    let transport = connect(&cli).await?;
    match cli.command {
        Command::Publish(args) => publish::run(transport, args).await,
        Command::Consume(args) => consume::run(transport, args).await,
        Command::Lag(args) => lag::run(transport, args).await,
        Command::Dlq { action } => dlq::run(transport, action).await,
        Command::Saga(args) => saga::run(transport, args).await,
        Command::Tail(args) => tail::run(transport, args).await,
        Command::Topic { action } => topic::run(transport, action).await,
        Command::Namespace { action } => namespace::run(transport, action).await,
        Command::Monitor(args) => monitor::run(transport, args).await,
        Command::Console(args) => console::run(transport, args).await,
    }
}

/// The configuration of the global options.
fn config(cli: &Cli) -> CliResult<RedisConfig> {
    let url = cli
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or(DEFAULT_URL);
    let config = RedisConfig::new(url)?.namespace(cli.namespace.clone());
    Ok(match &cli.tls_ca_file {
        Some(path) => config.tls_ca_file(path)?,
        None => config.tls_ca_from_env()?,
    })
}

async fn connect(cli: &Cli) -> CliResult<RedisTransport> {
    Ok(RedisTransport::connect(config(cli)?).await?)
}
