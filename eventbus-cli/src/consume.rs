//! `eventbus consume`: print a group's events as JSON lines (or pretty text), acknowledging
//! each once printed.
//!
//! When stdout is closed (`| head -n 3`) the entry that could not be printed is abandoned
//! ([`HandlerError::abandon`]: it stays pending for the group, is neither retried nor
//! dead-lettered) and consumption stops; what was not read stays unread for the group.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use eventbus_core::bus::default_consumer_name;
use eventbus_core::telemetry::lag::{LagSampler, RunningLagSampler};
use eventbus_core::telemetry::prometheus::{self, MetricsServer};
use eventbus_core::transport::Topic;
use eventbus_core::{Context, Envelope, EventBus, HandlerError, OrderBy, StartFrom};
use eventbus_redis::{group_for_service, RedisTransport};
use serde_json::Value;
use tokio::sync::Notify;

use crate::format::count;
use crate::output::{print_event, CliError, CliResult, FormatArg};

#[derive(Args)]
pub(crate) struct ConsumeArgs {
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
    /// Exit after this many events (1 or more).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Reclaim entries other consumers left pending longer than this.
    #[arg(long, default_value_t = 30_000)]
    claim_idle_ms: u64,
    /// Consumer name (default: `{service}-cli-{hostname}`, stable across runs).
    #[arg(long)]
    consumer: Option<String>,
    /// Serve Prometheus metrics on `GET /metrics` at this address while consuming (what was
    /// consumed, handling durations, and the group's lag every 5 s; port 0 picks a free
    /// port, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    format: FormatArg,
}

impl ConsumeArgs {
    /// The streams the group reads.
    fn topics(&self) -> Vec<Topic> {
        if self.all {
            vec![Topic::All]
        } else {
            self.types.iter().map(Topic::of_type).collect()
        }
    }
}

/// Why the handler asked consumption to stop.
#[derive(Default)]
struct Stop {
    notify: Notify,
    error: Mutex<Option<CliError>>,
}

impl Stop {
    fn fail(&self, error: CliError) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(error);
        }
        self.notify.notify_one();
    }

    fn take_error(&self) -> Option<CliError> {
        self.error.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// How often `consume --metrics-addr` samples its group's lag.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) async fn run(transport: RedisTransport, args: ConsumeArgs) -> CliResult {
    let metrics = match args.metrics_addr {
        Some(addr) => Some(serve_metrics(&transport, addr, &args.service).await?),
        None => None,
    };
    let bus = EventBus::new(transport.clone(), args.service.clone());
    let printed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(Stop::default());
    let limit = args.count;
    let format = args.format.format;
    let handler = {
        let (printed, stop) = (printed.clone(), stop.clone());
        move |e: Envelope<Value>, ctx: Context| {
            let (printed, stop) = (printed.clone(), stop.clone());
            async move {
                if let Err(error) = print_event(format, &ctx.delivery().entry_id, &e) {
                    let message = format!("cannot print the event: {error}");
                    stop.fail(error);
                    return Err(HandlerError::abandon(message));
                }
                let n = printed.fetch_add(1, Ordering::SeqCst) + 1;
                if limit.is_some_and(|limit| n >= limit) {
                    stop.notify.notify_one();
                }
                Ok(())
            }
        }
    };
    let consumer = args
        .consumer
        .clone()
        .unwrap_or_else(|| default_consumer_name(&format!("{}-cli", args.service)));
    let group = group_for_service(&args.service);
    let skipped = if args.from_beginning {
        Vec::new()
    } else {
        skipped_by_a_new_group(&transport, &args.topics(), &group).await
    };
    let mut builder = bus
        .subscribe()
        .consumer_name(consumer.clone())
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
    let subscription = builder.start().await?;
    eprintln!("eventbus: consuming as `{consumer}` in group `{group}`");
    for (topic, length) in skipped {
        eprintln!(
            "eventbus: group `{group}` is new and starts at the end of stream `{topic}` \
             ({} before it); use --from-beginning to read them",
            count(length, "entry", "entries")
        );
    }
    tokio::select! {
        _ = stop.notify.notified() => {}
        _ = shutdown_signal() => eprintln!("eventbus: stopping"),
    }
    subscription.shutdown().await?;
    if let Some((server, sampler)) = metrics {
        sampler.shutdown().await;
        server.shutdown().await;
    }
    eprintln!(
        "eventbus: {} consumed",
        count(printed.load(Ordering::SeqCst), "event", "events")
    );
    match stop.take_error() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Serves `/metrics` on `addr` and samples the lag of `service`'s group into it.
async fn serve_metrics(
    transport: &RedisTransport,
    addr: SocketAddr,
    service: &str,
) -> CliResult<(MetricsServer, RunningLagSampler)> {
    let server = prometheus::serve(addr).await?;
    eprintln!(
        "eventbus: serving metrics on http://{}/metrics",
        server.local_addr()
    );
    let sampler = LagSampler::new(Arc::new(transport.clone()))
        .groups([group_for_service(service)])
        .every(LAG_INTERVAL)
        .start();
    Ok((server, sampler))
}

/// The streams of `topics` on which `group` does not exist yet, with their lengths when not
/// empty: a group created at their end (`StartFrom::New`) skips that many entries. Best
/// effort: a user without `XINFO GROUPS` or `XLEN` (the consumer ACL role) gets no hint.
async fn skipped_by_a_new_group(
    transport: &RedisTransport,
    topics: &[Topic],
    group: &str,
) -> Vec<(Topic, u64)> {
    let mut skipped = Vec::new();
    for topic in topics {
        if let Ok(Some(stream)) = transport.stream_summary(topic).await {
            if stream.length > 0 && !stream.groups.iter().any(|g| g == group) {
                skipped.push((topic.clone(), stream.length));
            }
        }
    }
    skipped
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
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
