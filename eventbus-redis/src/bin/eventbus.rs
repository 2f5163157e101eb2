//! `eventbus`: publish, consume, inspect lag and manage dead letters on a Redis event bus.
//!
//! Data goes to stdout (one JSON object per line for events), progress and errors to stderr.
//! Failures exit non-zero with a one-line reason.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use eventbus_core::bus::default_consumer_name;
use eventbus_core::transport::{DeadLetter, GroupLag, StreamTransport, Topic};
use eventbus_core::{EntryId, Envelope, EventBus, HandlerError, OrderBy, StartFrom};
use eventbus_redis::{group_for_service, RedisConfig, RedisTransport};
use serde_json::{json, Value};
use tokio::sync::Notify;

#[path = "../cli/saga.rs"]
mod saga;

#[derive(Parser)]
#[command(
    name = "eventbus",
    version,
    about = "Inspect and drive an eventbus on Redis"
)]
struct Cli {
    /// Redis URL (`redis://[user:password@]host:port/db`, `rediss://` for TLS).
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    url: String,
    /// Key namespace.
    #[arg(long, global = true, default_value = "eventbus")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one event; prints its entry id in its type's stream.
    Publish {
        /// Event type, e.g. `OrderCreated`.
        event_type: String,
        /// The payload, as JSON.
        data: String,
        /// Producing service.
        #[arg(long, default_value = "eventbus-cli")]
        source: String,
        /// Correlation id (default: none).
        #[arg(long)]
        correlation_id: Option<String>,
        /// Causation id (default: none).
        #[arg(long)]
        causation_id: Option<String>,
        /// Schema version of the payload.
        #[arg(long, default_value_t = 1)]
        schema_version: u32,
    },
    /// Consume events as a member of a service's consumer group, printing one JSON line per
    /// event and acknowledging it after printing.
    Consume(ConsumeArgs),
    /// Lag, pending entries and consumers of every stream and group.
    Lag {
        /// Only this service's group.
        #[arg(long)]
        service: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters of a service's group.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Saga state and history by id, and sagas by state.
    Saga(saga::SagaArgs),
    /// Follow a stream without a consumer group, printing events as JSON lines.
    Tail {
        /// Event type, or `all` for the global stream.
        stream: String,
        /// Start from the beginning of the stream instead of new events.
        #[arg(long)]
        from_beginning: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Args)]
struct ConsumeArgs {
    /// The service whose group (`{service}-consumers`) to consume in.
    #[arg(long)]
    service: String,
    /// Event types to consume.
    #[arg(long = "type", required_unless_present = "all", conflicts_with = "all")]
    types: Vec<String>,
    /// Consume the global stream (every event).
    #[arg(long)]
    all: bool,
    /// A new group starts at the beginning of the stream instead of at new events.
    #[arg(long)]
    from_beginning: bool,
    /// Exit after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Reclaim entries other consumers left pending longer than this.
    #[arg(long, default_value_t = 30_000)]
    claim_idle_ms: u64,
    /// Consumer name (default: `{service}-cli-{hostname}`, stable across runs).
    #[arg(long)]
    consumer: Option<String>,
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead letters, oldest first.
    List(DlqArgs),
    /// Re-publish dead letters to their origin streams and remove them.
    Replay(DlqArgs),
    /// Delete dead letters.
    Purge(DlqArgs),
}

#[derive(Args)]
struct DlqArgs {
    /// The service whose group's dead letters to act on.
    #[arg(long)]
    service: String,
    /// Only this dead letter (repeatable); default: all.
    #[arg(long)]
    id: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// At most this many (list only).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

/// A failure to report in one line.
type CliResult<T = ()> = Result<T, String>;

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
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("eventbus: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let config = RedisConfig::new(&cli.url)
        .map_err(|e| e.to_string())?
        .namespace(cli.namespace.clone());
    let transport = RedisTransport::connect(config)
        .await
        .map_err(|e| e.to_string())?;
    match cli.command {
        Command::Publish {
            event_type,
            data,
            source,
            correlation_id,
            causation_id,
            schema_version,
        } => {
            let data: Value = serde_json::from_str(&data)
                .map_err(|e| format!("the event data is not valid JSON: {e}"))?;
            let mut envelope = Envelope::new(event_type, schema_version, source.clone(), data);
            envelope.correlation_id = correlation_id;
            envelope.causation_id = causation_id;
            let bus = EventBus::new(transport, source);
            let ids = bus
                .publish_raw(&[envelope])
                .await
                .map_err(|e| e.to_string())?;
            let id = ids.first().ok_or("the server returned no entry id")?;
            println!("{id}");
            Ok(())
        }
        Command::Consume(args) => consume(transport, args).await,
        Command::Lag { service, json } => {
            let group = service.as_deref().map(group_for_service);
            let lags = transport
                .lag(group.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            print_lag(&lags, json)
        }
        Command::Dlq { action } => dlq(transport, action).await,
        Command::Saga(args) => saga::run(transport, args).await,
        Command::Tail {
            stream,
            from_beginning,
            count,
        } => tail(transport, &stream, from_beginning, count).await,
    }
}

/// The JSON line printed for an event.
fn event_line(entry_id: &str, e: &Envelope<Value>) -> Value {
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

fn print_line(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()
}

async fn consume(transport: RedisTransport, args: ConsumeArgs) -> CliResult {
    let bus = EventBus::new(transport, args.service.clone());
    let printed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let limit = args.count;
    let handler = {
        let (printed, done) = (printed.clone(), done.clone());
        move |e: Envelope<Value>, ctx: eventbus_core::Context| {
            let (printed, done) = (printed.clone(), done.clone());
            async move {
                print_line(&event_line(&ctx.delivery().entry_id, &e)).map_err(|err| {
                    HandlerError::retryable(format!("cannot write to stdout: {err}"))
                })?;
                let n = printed.fetch_add(1, Ordering::SeqCst) + 1;
                if limit.is_some_and(|limit| n >= limit) {
                    done.notify_one();
                }
                Ok(())
            }
        }
    };
    let consumer = args
        .consumer
        .clone()
        .unwrap_or_else(|| default_consumer_name(&format!("{}-cli", args.service)));
    let mut builder = bus
        .subscribe()
        .consumer_name(consumer)
        .start_from(if args.from_beginning {
            StartFrom::Beginning
        } else {
            StartFrom::New
        })
        .claim_idle(Duration::from_millis(args.claim_idle_ms))
        .order_by(OrderBy::Stream)
        .concurrency(1)
        .configure(|o| {
            o.limit = limit;
            o.claim_interval = Duration::from_millis(args.claim_idle_ms.clamp(50, 5_000));
            o.block = Duration::from_millis(500);
        });
    if args.all {
        builder = builder.on_all(handler);
    } else {
        for t in &args.types {
            builder = builder.on_raw(t.clone(), handler.clone());
        }
    }
    let subscription = builder.start().await.map_err(|e| e.to_string())?;
    eprintln!(
        "eventbus: consuming as `{}` in group `{}`",
        args.consumer.as_deref().unwrap_or("(default name)"),
        group_for_service(&args.service)
    );
    tokio::select! {
        _ = done.notified() => {}
        _ = shutdown_signal() => eprintln!("eventbus: stopping"),
    }
    subscription.shutdown().await.map_err(|e| e.to_string())?;
    eprintln!(
        "eventbus: {} events consumed",
        printed.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_lag(lags: &[GroupLag], as_json: bool) -> CliResult {
    if as_json {
        let rows: Vec<Value> = lags
            .iter()
            .map(|l| {
                json!({
                    "stream": l.topic.to_string(),
                    "group": l.group,
                    "lag": l.lag,
                    "pending": l.pending,
                    "oldest_pending_idle_ms": l.oldest_pending_idle.map(|d| d.as_millis() as u64),
                    "consumers": l.consumers.iter().map(|c| json!({
                        "name": c.name, "pending": c.pending, "idle_ms": c.idle.as_millis() as u64,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_line(&Value::Array(rows)).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock<'_>, s: String| {
        writeln!(out, "{s}").map_err(|e| e.to_string())
    };
    w(
        &mut out,
        format!(
            "{:<28} {:<30} {:>9} {:>9} {:>14}  consumers",
            "STREAM", "GROUP", "LAG", "PENDING", "OLDEST IDLE"
        ),
    )?;
    for l in lags {
        let consumers = l
            .consumers
            .iter()
            .map(|c| {
                format!(
                    "{}({} pending, idle {}ms)",
                    c.name,
                    c.pending,
                    c.idle.as_millis()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        w(
            &mut out,
            format!(
                "{:<28} {:<30} {:>9} {:>9} {:>14}  {}",
                l.topic.to_string(),
                l.group,
                l.lag.map_or("unknown".to_string(), |n| n.to_string()),
                l.pending,
                l.oldest_pending_idle
                    .map_or("-".to_string(), |d| format!("{}ms", d.as_millis())),
                if consumers.is_empty() {
                    "-".to_string()
                } else {
                    consumers
                }
            ),
        )?;
    }
    Ok(())
}

fn dead_letter_json(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "origin_stream": d.origin_topic.to_string(),
        "origin_id": d.origin_id,
        "group": d.group,
        "consumer": d.reason.consumer,
        "error": d.reason.error,
        "delivery_count": d.reason.delivery_count,
        "dead_lettered_at": d.dead_lettered_at,
        "event": d.event.as_ref().map(|e| event_line(&d.origin_id, e)),
        "fields": d.fields.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
    })
}

async fn dlq(transport: RedisTransport, action: DlqAction) -> CliResult {
    let (args, verb) = match &action {
        DlqAction::List(a) => (a, "list"),
        DlqAction::Replay(a) => (a, "replay"),
        DlqAction::Purge(a) => (a, "purge"),
    };
    let group = group_for_service(&args.service);
    let ids: Option<Vec<EntryId>> = if args.id.is_empty() {
        None
    } else {
        Some(args.id.clone())
    };
    match verb {
        "list" => {
            let mut letters = transport
                .dead_letters(&group, args.limit)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(ids) = &ids {
                letters.retain(|d| ids.contains(&d.id));
            }
            if args.json {
                for d in &letters {
                    print_line(&dead_letter_json(d)).map_err(|e| e.to_string())?;
                }
            } else {
                for d in &letters {
                    println!(
                        "{}  {}:{}  {} deliveries  {}  {}",
                        d.id,
                        d.origin_topic,
                        d.origin_id,
                        d.reason.delivery_count,
                        d.event
                            .as_ref()
                            .map_or("(undecodable)", |e| e.event_type.as_str()),
                        d.reason.error
                    );
                }
                eprintln!("eventbus: {} dead letters in {group}", letters.len());
            }
        }
        "replay" => {
            let n = transport
                .replay_dead_letters(&group, ids.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            if args.json {
                print_line(&json!({"replayed": n})).map_err(|e| e.to_string())?;
            } else {
                println!("replayed {n}");
            }
        }
        _ => {
            let n = transport
                .purge_dead_letters(&group, ids.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            if args.json {
                print_line(&json!({"purged": n})).map_err(|e| e.to_string())?;
            } else {
                println!("purged {n}");
            }
        }
    }
    Ok(())
}

async fn tail(
    transport: RedisTransport,
    stream: &str,
    from_beginning: bool,
    count: Option<u64>,
) -> CliResult {
    let topic = if stream == "all" {
        Topic::All
    } else {
        Topic::of_type(stream)
    };
    let from = if from_beginning {
        StartFrom::Beginning
    } else {
        StartFrom::New
    };
    let mut tail = transport
        .tail(&topic, from)
        .await
        .map_err(|e| e.to_string())?;
    let mut printed = 0u64;
    loop {
        let want = count.map_or(256, |c| c.saturating_sub(printed).min(256) as usize);
        if want == 0 {
            return Ok(());
        }
        let read = tokio::select! {
            r = tail.next_batch(want, Duration::from_secs(1)) => r.map_err(|e| e.to_string())?,
            _ = shutdown_signal() => return Ok(()),
        };
        for (id, entry) in read {
            match entry {
                Ok(e) => print_line(&event_line(&id, &e)).map_err(|e| e.to_string())?,
                Err(m) => eprintln!("eventbus: entry {id} is malformed: {m}"),
            }
            printed += 1;
        }
    }
}
