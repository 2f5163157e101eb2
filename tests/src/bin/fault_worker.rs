//! The worker process of the fault-injection suite (`tests/tests/faults.rs`): a publisher or
//! a consumer against a real Redis, killed and restarted by the suite.
//!
//! ```text
//! fault-worker publish --url URL --ns NS --from A --to B --poison 3,17 --batch 20
//! fault-worker consume --url URL --ns NS --name c1 --log FILE [--work-ms MS]
//!                      [--slow-every N --slow-ms MS] [--claim-idle-ms MS]
//!                      [--claim-interval-ms MS] [--shutdown-timeout-ms MS] [--max-deliveries N]
//! ```
//!
//! `publish` publishes the events with sequence numbers `A..B` (`FaultEvent { seq, poison }`)
//! in batches of one `MULTI`/`EXEC` each. It is resumable: before its first batch and after
//! every failed one it reads the stream back and skips the sequence numbers already there,
//! so a publisher that was killed, or whose batch failed after the server applied it,
//! usually doesn't publish a number twice. Publishing is at-least-once all the same: when
//! the read-back fails too (the server is still down) the batch is retried as it was, and a
//! batch the server applied before its reply was lost is then in the stream twice (new
//! envelopes, so new event ids). Every failed batch is logged to stderr as
//! `publish failed (N), retrying seqs 3,4,5: error`, which is what excuses such duplicates
//! in the checks. It exits 0 once every number of its range is in the stream.
//!
//! `consume` runs a subscription of the group `faults-group` under a stable consumer name,
//! and the projection [`Applied`] (one counter per sequence number, incremented once per
//! applied event, and one per event id in the hash `applied-events:{seq}`, so that the
//! checks tell the entries of a number published twice apart). Its handler appends `seq event_id entry_id consumer pid` to the log file
//! with one `write(2)` before returning `Ok` (a line written survives `SIGKILL`), sleeps past
//! the claim idle time on every `--slow-every`-th event (`--work-ms` on the others), and aborts the process on a poison
//! event. On `SIGTERM` it shuts down gracefully and exits 0.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::projection::ProjectionRunner;
use eventbus_core::projection::ReadModelOp;
use eventbus_core::transport::{StartFrom, Topic};
use eventbus_core::{event, projection, Context, Envelope, EventBus, HandlerError, OrderBy};
use eventbus_core::{Backoff, ReadModel, ReadModels};
use eventbus_redis::{RedisConfig, RedisReadModels, RedisTransport};

/// The event the suite publishes.
#[event(name = "FaultEvent")]
#[derive(Debug, Clone)]
struct FaultEvent {
    /// Its sequence number, unique in the stream.
    seq: u64,
    /// Whether handling it kills the consumer.
    poison: bool,
}

/// One counter per sequence number: `applied:{seq}` is the number of entries of that
/// number the projection applied (1 unless it was published twice).
#[projection(counter = "applied:{seq}", on = FaultEvent)]
struct AppliedSeqs;

/// The projection run: [`AppliedSeqs`]'s counter, and `HINCRBY applied-events:{seq}
/// {event_id} 1`, so that each entry of a number published twice (by a retried batch: new
/// envelopes, new event ids) is counted on its own.
struct Applied;

impl ReadModel for Applied {
    const NAME: &'static str = "Applied";

    fn event_types() -> Vec<&'static str> {
        AppliedSeqs::event_types()
    }

    fn apply(event: &Envelope<serde_json::Value>) -> Result<Vec<ReadModelOp>, HandlerError> {
        let mut ops = AppliedSeqs::apply(event)?;
        let seq = event.data["seq"]
            .as_u64()
            .ok_or_else(|| HandlerError::permanent("FaultEvent without a seq"))?;
        ops.push(ReadModelOp::HashIncr {
            key: format!("applied-events:{seq}"),
            field: event.event_id.clone(),
            by: 1,
        });
        Ok(ops)
    }
}

/// The consumer group of the handlers.
const GROUP: &str = "faults-group";
/// The service name (the projection's group is `faults-projection-…`).
const SERVICE: &str = "faults";

type Args = HashMap<String, String>;

fn parse_args() -> Result<(String, Args), String> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("usage: fault-worker publish|consume --key value…")?;
    let mut map = HashMap::new();
    while let Some(key) = args.next() {
        let key = key
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --key, got `{key}`"))?
            .to_owned();
        let value = args
            .next()
            .ok_or_else(|| format!("--{key} needs a value"))?;
        map.insert(key, value);
    }
    Ok((mode, map))
}

fn arg<'a>(args: &'a Args, key: &str) -> Result<&'a str, String> {
    args.get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("missing --{key}"))
}

fn num(args: &Args, key: &str, default: u64) -> Result<u64, String> {
    match args.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| format!("--{key} {v}: {e}")),
    }
}

fn main() -> ExitCode {
    // The loop's warnings (reclaims, losses, dead letters) go to stderr, kept with the logs.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fault-worker: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (mode, args) = parse_args()?;
        match mode.as_str() {
            "publish" => publish(&args).await,
            "consume" => consume(&args).await,
            other => Err(format!("unknown mode `{other}`")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fault-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, retrying while the server is down or restarting.
async fn connect(url: &str, ns: &str) -> Result<RedisTransport, String> {
    let config = RedisConfig::new(url)
        .map_err(|e| e.to_string())?
        .namespace(ns.to_owned());
    let mut delay = Duration::from_millis(50);
    loop {
        match RedisTransport::connect(config.clone()).await {
            Ok(t) => return Ok(t),
            Err(e) => {
                eprintln!("fault-worker: connect: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The sequence numbers already in the stream, read back with `XRANGE`.
async fn published_seqs(url: &str, ns: &str) -> Result<HashSet<u64>, String> {
    let key = eventbus_redis::Keys::new(ns).stream(&Topic::of_type("FaultEvent"));
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut seqs = HashSet::new();
    let mut start = "-".to_owned();
    loop {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = reply.ids.last() else {
            return Ok(seqs);
        };
        start = format!("({}", last.id);
        for entry in &reply.ids {
            let fields: Vec<(String, Vec<u8>)> = entry
                .map
                .iter()
                .map(|(k, v)| {
                    let bytes = redis::from_redis_value::<Vec<u8>>(v.clone()).unwrap_or_default();
                    (k.clone(), bytes)
                })
                .collect();
            let seq = eventbus_redis::codec::decode(&fields)
                .ok()
                .and_then(|e| e.data.get("seq").and_then(serde_json::Value::as_u64));
            if let Some(seq) = seq {
                seqs.insert(seq);
            }
        }
    }
}

async fn publish(args: &Args) -> Result<(), String> {
    let (url, ns) = (arg(args, "url")?, arg(args, "ns")?);
    let (from, to) = (num(args, "from", 0)?, num(args, "to", 0)?);
    let batch = num(args, "batch", 20)?.max(1) as usize;
    let pause_every = num(args, "pause-every", 0)?;
    let pause_ms = num(args, "pause-ms", 0)?;
    let poison: HashSet<u64> = args
        .get("poison")
        .map(|p| p.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default();
    let bus = EventBus::new(connect(url, ns).await?, SERVICE);

    let mut done = loop {
        match published_seqs(url, ns).await {
            Ok(seqs) => break seqs,
            Err(e) => {
                eprintln!("fault-worker: read back: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut failures = 0u32;
    let mut since_pause = 0u64;
    loop {
        let todo: Vec<u64> = (from..to)
            .filter(|s| !done.contains(s))
            .take(batch)
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let events = todo.iter().map(|&seq| FaultEvent {
            seq,
            poison: poison.contains(&seq),
        });
        match bus.publish_batch(events).await {
            Ok(_) => {
                done.extend(&todo);
                failures = 0;
                since_pause += todo.len() as u64;
                if pause_every > 0 && since_pause >= pause_every {
                    since_pause = 0;
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
            }
            Err(e) => {
                failures += 1;
                // One line, parsed by the checks: the numbers this retry may publish twice.
                let list: Vec<String> = todo.iter().map(u64::to_string).collect();
                eprintln!(
                    "fault-worker: publish failed ({failures}), retrying seqs {}: {e}",
                    list.join(",")
                );
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10)))).await;
                // The batch may have been applied before the error reached us: read back.
                match published_seqs(url, ns).await {
                    Ok(seqs) => done = seqs,
                    Err(e) => eprintln!(
                        "fault-worker: read back after the failed publish: {e}; retrying the \
                         batch as it was"
                    ),
                }
            }
        }
    }
}

/// Appends one line per handled event with a single `write(2)`.
struct Log {
    file: Mutex<std::fs::File>,
}

impl Log {
    fn line(&self, line: &str) -> std::io::Result<()> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("log lock poisoned"))?;
        file.write_all(line.as_bytes())
    }
}

async fn consume(args: &Args) -> Result<(), String> {
    let (url, ns) = (arg(args, "url")?, arg(args, "ns")?);
    let name = arg(args, "name")?.to_owned();
    let log_path = arg(args, "log")?;
    let work = Duration::from_millis(num(args, "work-ms", 0)?);
    let slow_every = num(args, "slow-every", 0)?;
    let slow = Duration::from_millis(num(args, "slow-ms", 0)?);
    let claim_idle = Duration::from_millis(num(args, "claim-idle-ms", 1000)?);
    let claim_interval = Duration::from_millis(num(args, "claim-interval-ms", 200)?);
    let shutdown_timeout = Duration::from_millis(num(args, "shutdown-timeout-ms", 5000)?);
    let max_deliveries = num(args, "max-deliveries", 5)? as u32;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("open {log_path}: {e}"))?;
    let log = Arc::new(Log {
        file: Mutex::new(file),
    });
    let transport = connect(url, ns).await?;
    let bus = EventBus::new(transport.clone(), SERVICE);
    let pid = std::process::id();

    let tune = |o: &mut eventbus_core::SubscriptionOptions| {
        o.consumer = name.clone();
        o.start_from = StartFrom::Beginning;
        o.block = Duration::from_millis(200);
        o.claim_idle = claim_idle;
        o.claim_interval = claim_interval;
        o.reconnect_backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        o.shutdown_timeout = shutdown_timeout;
    };

    let handler = {
        let (log, name) = (log.clone(), name.clone());
        move |e: Envelope<FaultEvent>, ctx: Context| {
            let (log, name) = (log.clone(), name.clone());
            async move {
                if e.data.poison {
                    eprintln!("fault-worker {name}: poison event {}: aborting", e.data.seq);
                    std::process::abort();
                }
                if slow_every > 0 && e.data.seq.is_multiple_of(slow_every) {
                    tokio::time::sleep(slow).await;
                } else if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                let line = format!(
                    "{} {} {} {name} {pid}\n",
                    e.data.seq,
                    e.event_id,
                    ctx.delivery().entry_id
                );
                log.line(&line)
                    .map_err(|e| HandlerError::retryable(format!("log: {e}")))?;
                Ok::<(), HandlerError>(())
            }
        }
    };

    let models = ReadModels::new(RedisReadModels::new(&transport).with_prefix(format!("{ns}:")));
    let (subscription, projection) = loop {
        let subscription = bus
            .subscribe()
            .group(GROUP)
            .order_by(OrderBy::Unordered)
            .concurrency(16)
            .max_deliveries(max_deliveries)
            .configure(tune)
            .on(handler.clone())
            .start()
            .await;
        let subscription = match subscription {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fault-worker {name}: subscribe: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match ProjectionRunner::new(&bus, &models, Applied::projection())
            .configure(tune)
            .start()
            .await
        {
            Ok(p) => break (subscription, p),
            Err(e) => {
                eprintln!("fault-worker {name}: projection: {e}; retrying");
                let _ = subscription.shutdown().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    eprintln!("fault-worker {name}: consuming (pid {pid})");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    term.recv().await;
    eprintln!("fault-worker {name}: SIGTERM, shutting down");
    let (a, b) = tokio::join!(subscription.shutdown(), projection.shutdown());
    a.map_err(|e| format!("subscription shutdown: {e}"))?;
    b.map_err(|e| format!("projection shutdown: {e}"))?;
    Ok(())
}
