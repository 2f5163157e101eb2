//! Throughput and latency of the Streams bus on Redis, next to `redis-benchmark` against the
//! same server in the same run. Redis only: a benchmark of the server never falls back to the
//! in-memory backend.
//!
//! ```text
//! cargo run --release --example bench -- --url redis://127.0.0.1:6379 --events 200000
//! cargo run --release --example bench -- --smoke     # a few seconds; CI runs this
//! cargo run --release --example bench -- cluster     # a local 3-master Redis Cluster
//! cargo run --release --example bench -- cluster --smoke
//! ```
//!
//! Every scenario runs in a fresh key namespace that it deletes afterwards (a run that fails
//! midway or is interrupted deletes what its scenarios left), and checks that
//! every event was handled exactly once and nothing is left pending: a run that loses or
//! duplicates events exits non-zero. Missed targets are reported, never fatal (timing
//! depends on the machine). The last line of output is one JSON object with every figure.

#[path = "bench/cluster.rs"]
mod cluster;
#[path = "bench/memory.rs"]
mod memory;
#[path = "bench/peer.rs"]
mod peer;
#[path = "bench/projection.rs"]
mod projection;
#[path = "bench/reference.rs"]
mod reference;
#[path = "bench/scenarios.rs"]
mod scenarios;
#[path = "bench/server_cost.rs"]
mod server_cost;
#[path = "bench/support.rs"]
mod support;

use clap::{Parser, Subcommand};
use serde_json::{json, Map};

#[derive(Parser)]
#[command(about = "eventbus benchmark against one Redis server")]
struct Args {
    /// Redis URL (host, port, user and password are passed to redis-benchmark too).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    url: String,
    /// Events of the batched-publish and end-to-end scenarios.
    #[arg(long, default_value_t = 200_000, global = true)]
    events: u64,
    /// Events published one at a time.
    #[arg(long, default_value_t = 20_000)]
    sequential_events: u64,
    /// Events per `publish_batch` of the end-to-end, memory and cluster scenarios.
    #[arg(long, default_value_t = 500, global = true)]
    batch: u64,
    /// Seconds of each fixed-rate latency run.
    #[arg(long, default_value_t = 10.0)]
    latency_secs: f64,
    /// Events the separate consumer process of the memory scenario handles.
    #[arg(long, default_value_t = 1_000_000)]
    memory_events: u64,
    /// Commands of the command → projection scenario (plus 1,000 latency samples).
    #[arg(long, default_value_t = 20_000)]
    projection_commands: u64,
    /// Requests of the redis-benchmark reference.
    #[arg(long, default_value_t = 1_000_000, global = true)]
    reference_requests: u64,
    /// Entries `eventbus consume` (and the article's consumer) print in the consume scenario.
    #[arg(long, default_value_t = 50_000)]
    consume_events: u64,
    /// Events of the article's bus end to end (it publishes one event at a time).
    #[arg(long, default_value_t = 50_000)]
    article_events: u64,
    /// Run only these scenarios (comma-separated: publish, e2e, latency, consume, projection,
    /// memory, tracing).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Tiny sizes everywhere (a few seconds): proves nothing is lost, measures nothing.
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// A partitioned topic on a Redis Cluster: a local one of 3 masters + 3 replicas that
    /// the bench starts and stops, or the one at `--url redis+cluster://…`. Publish
    /// (without and with `WAIT 1`) and end to end with 3 consumers sharing the partitions,
    /// next to `redis-benchmark --cluster`.
    Cluster {
        /// Partitions of the topic.
        #[arg(long, default_value_t = 6)]
        partitions: u32,
        /// Publish runs without and with `WAIT`, in alternation (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// The memory scenario's consumer process.
    #[command(hide = true)]
    Consume {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        events: u64,
    },
}

/// One figure of the report.
struct Figure {
    key: String,
    label: String,
    value: f64,
    unit: &'static str,
    /// Value ÷ the redis-benchmark reference, for throughputs.
    ratio: Option<f64>,
    /// The target, and whether this run met it.
    target: Option<(String, bool)>,
    /// The same figure of the article's Python bus in this run.
    article: Option<f64>,
    /// CPU use while it ran, percent of one core: (redis-server, the bench process).
    cpu: (Option<f64>, Option<f64>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Cmd::Consume { namespace, events }) = &args.command {
        return memory::child(&args.url, namespace, *events).await;
    }
    if let Some(Cmd::Cluster { partitions, rounds }) = &args.command {
        return run_cluster(&args, *partitions, *rounds).await;
    }
    if args.smoke {
        args.events = args.events.min(2_000);
        args.sequential_events = args.sequential_events.min(500);
        args.latency_secs = args.latency_secs.min(0.5);
        args.memory_events = args.memory_events.min(5_000);
        args.projection_commands = args.projection_commands.min(500);
        args.reference_requests = args.reference_requests.min(20_000);
        args.consume_events = args.consume_events.min(2_000);
        args.article_events = args.article_events.min(2_000);
    }
    let outcome = tokio::select! {
        outcome = run(&args) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if outcome.is_err() {
        if let Err(e) = support::delete_run_keys(&args.url).await {
            eprintln!("warning: keys of this run not deleted: {e:#}");
        }
    }
    outcome
}

/// The cluster scenario: on the cluster at `--url` when it is a `redis+cluster://` URL,
/// else on a local cluster of its own (stopped on return, error, Ctrl-C or panic).
async fn run_cluster(args: &Args, partitions: u32, rounds: u32) -> anyhow::Result<()> {
    let opts = cluster::Options {
        url: cluster::is_cluster_url(&args.url).then(|| args.url.clone()),
        events: if args.smoke {
            args.events.min(2_000)
        } else {
            args.events
        },
        batch: args.batch,
        partitions,
        rounds: if args.smoke { 1 } else { rounds.max(1) },
        reference_requests: if args.smoke {
            args.reference_requests.min(20_000)
        } else {
            args.reference_requests
        },
        smoke: args.smoke,
    };
    let outcome = tokio::select! {
        outcome = cluster::run(&opts) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let (Err(_), Some(url)) = (&outcome, &opts.url) {
        if let Err(e) = cluster::delete_run_keys(url).await {
            eprintln!("warning: keys of this run not deleted: {e:#}");
        }
    }
    outcome
}

/// Runs the scenarios and prints the report.
async fn run(args: &Args) -> anyhow::Result<()> {
    support::now_us();
    let load_before = support::load_average();
    let probe = support::connect(&args.url, &support::namespace("probe"), 0).await?;
    let redis_version = probe.server_version().to_owned();
    let server_name = probe.client().server().to_string();
    let server = probe.config().redacted_url().to_owned();
    drop(probe);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "eventbus bench: {server_name} at {server}; {cores} cores; load {load_before}{}",
        if args.smoke { "; SMOKE sizes" } else { "" }
    );

    let ref_key = format!("{}:reference", support::namespace("ref"));
    let reference = match reference::run(&args.url, &ref_key, args.reference_requests, 100_000) {
        Ok(reference) => reference,
        // A smoke run checks delivery, not speed: it goes on without the reference.
        Err(e) if args.smoke => {
            eprintln!("warning: no reference figure: {e:#}");
            reference::Reference {
                ops_per_sec: f64::NAN,
                command: "(redis-benchmark unavailable)".into(),
            }
        }
        Err(e) => return Err(e),
    };
    let r = reference.ops_per_sec;
    println!("reference: {}\n  -> {r:.0} XADD/s", reference.command);

    let mut figures = Vec::new();
    let throughput = |key: &str, label: String, value: f64, target: Option<f64>| Figure {
        key: key.to_owned(),
        label,
        value,
        unit: "events/s",
        ratio: Some(value / r).filter(|r| r.is_finite()),
        target: target.map(|t| (format!("≥ {t:.2} ×"), value / r >= t)),
        article: None,
        cpu: (None, None),
    };
    let cpu = support::CpuMeter::new(&args.url).await;
    let article = peer::Article::detect();
    match &article {
        Ok(_) => {
            println!("peer: the article's StreamEventBus (examples/bench/python/article_bus.py)")
        }
        Err(why) => println!("peer: the article's bus is not measured: {why}"),
    }
    let runs = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

    let publish_runs = [
        ("publish_sequential", 1, 1, args.sequential_events, None),
        ("publish_batch_100", 100, 1, args.events, None),
        ("publish_batch_500", 500, 1, args.events, Some(0.40)),
        ("publish_batch_500_2_publishers", 500, 2, args.events, None),
        ("publish_batch_500_no_global", 500, 1, args.events, None),
    ];
    for (key, batch, publishers, n, target) in publish_runs.into_iter().filter(|_| runs("publish"))
    {
        let global = !key.ends_with("no_global");
        let from = cpu.snap();
        let eps = scenarios::publish(&args.url, n, batch, publishers, global).await?;
        let label = match (batch, publishers, global) {
            (1, _, _) => format!("a. publish, one at a time ({n} events)"),
            (_, 1, true) => format!("a. publish, batches of {batch} ({n} events)"),
            (_, 1, false) => {
                format!("a. publish, batches of {batch}, without the global stream ({n} events)")
            }
            _ => format!("a. publish, batches of {batch}, {publishers} publishers ({n} events)"),
        };
        figures.push(Figure {
            cpu: cpu.since(from),
            ..throughput(key, label, eps, target)
        });
        progress(&figures);
    }

    let mut e2e_max = 60_000.0;
    let mut server = server_cost::connect(&args.url).await?;
    let e2e_runs = [
        ("e2e_1_consumer", 1, Some(0.25), true),
        ("e2e_2_consumers", 2, None, true),
        ("e2e_1_consumer_no_global", 1, Some(0.35), false),
    ];
    for (key, consumers, target, global) in e2e_runs.into_iter().filter(|_| runs("e2e")) {
        let from = cpu.snap();
        let server_from = server_cost::cpu_us(&mut server).await?;
        let e2e =
            scenarios::end_to_end(&args.url, args.events, args.batch, consumers, global).await?;
        let used = cpu.since(from);
        let server_us =
            (server_cost::cpu_us(&mut server).await? - server_from) / args.events as f64;
        let article = match (key, &article) {
            ("e2e_1_consumer", Ok(article)) => {
                Some(article.end_to_end(&args.url, args.article_events)?)
            }
            _ => None,
        };
        if key == "e2e_1_consumer" {
            e2e_max = e2e.events_per_sec;
        }
        if let Some(a) = &article {
            eprintln!(
                "  (the article's bus: {:.0} events/s end to end, its producer {:.0}/s, {} events)",
                a.events_per_sec, a.publish_per_sec, args.article_events
            );
        }
        let label = format!(
            "b. end to end, {consumers} consumer{}{} ({} events; producer {:.0}/s)",
            if consumers == 1 { "" } else { "s" },
            if global {
                ""
            } else {
                ", without the global stream"
            },
            args.events,
            e2e.publish_per_sec
        );
        figures.push(Figure {
            cpu: used,
            article: article.as_ref().map(|a| a.events_per_sec),
            ..throughput(key, label, e2e.events_per_sec, target)
        });
        progress(&figures);
        if consumers == 1 {
            let bare = server_cost::bare(&args.url, args.events, args.batch, global).await?;
            let (suffix, xadds) = if global {
                ("", "×2")
            } else {
                ("_no_global", "")
            };
            figures.push(Figure {
                key: format!("server_cpu_us_per_event{suffix}"),
                label: format!(
                    "g. Redis CPU per event, {} (bare XADD{xadds} + XREADGROUP + XACK in batches of {}: {bare:.2} µs)",
                    if global { "end to end with 1 consumer" } else { "end to end without the global stream" },
                    args.batch
                ),
                value: server_us,
                unit: "µs",
                ratio: None,
                target: None,
                article: None,
                cpu: used,
            });
            figures.push(Figure {
                key: format!("server_cpu_us_per_event_bare{suffix}"),
                label: format!(
                    "g. Redis CPU per event, the bare commands alone{}",
                    if global { "" } else { ", one stream" }
                ),
                value: bare,
                unit: "µs",
                ratio: None,
                target: None,
                article: None,
                cpu: (None, None),
            });
            progress(&figures);
        }
    }

    let half = ((e2e_max / 2.0) as u64).max(1);
    let latency_runs = [("latency_2000", 2_000), ("latency_half_max", half)];
    for (key, rate) in latency_runs.into_iter().filter(|_| runs("latency")) {
        let from = cpu.snap();
        let lat = scenarios::latency(&args.url, rate, args.latency_secs).await?;
        let used = cpu.since(from);
        let article = match (key, &article) {
            ("latency_2000", Ok(article)) => {
                Some(article.latency(&args.url, rate, args.latency_secs)?)
            }
            _ => None,
        };
        let ms = |us: u32| f64::from(us) / 1000.0;
        let label = format!(
            "c. latency at {} events/s (achieved {:.0}/s, {} samples)",
            lat.rate, lat.achieved_rate, lat.samples
        );
        for (suffix, value, theirs) in [
            ("p50", lat.p50_us, article.as_ref().map(|a| a.p50_us)),
            ("p99", lat.p99_us, article.as_ref().map(|a| a.p99_us)),
            ("p999", lat.p999_us, article.as_ref().map(|a| a.p999_us)),
            ("max", lat.max_us, article.as_ref().map(|a| a.max_us)),
        ] {
            let theirs = theirs.map(|us| us / 1000.0);
            let target = match (key, suffix) {
                ("latency_half_max", "p99") => Some(("≤ 1 ms".to_string(), ms(value) <= 1.0)),
                ("latency_2000", "p50" | "p99") => {
                    theirs.map(|t| (format!("≤ the article's ({t:.2} ms)"), ms(value) <= t))
                }
                _ => None,
            };
            figures.push(Figure {
                key: format!("{key}_{suffix}_ms"),
                label: format!("{label} {suffix}"),
                value: ms(value),
                unit: "ms",
                ratio: None,
                target,
                article: theirs,
                cpu: used,
            });
            progress(&figures);
        }
        if let Some(a) = &article {
            eprintln!(
                "  (the article's bus achieved {:.0}/s, {} samples)",
                a.achieved_rate, a.samples
            );
        }
    }

    if runs("consume") {
        let cli = peer::cli_binary()?;
        let from = cpu.snap();
        let c = peer::consume(&args.url, &cli, args.consume_events, article.as_ref().ok()).await?;
        let target = c.article_per_sec.map(|a| {
            (
                "≥ 20 × the article's".to_string(),
                c.cli_per_sec >= 20.0 * a,
            )
        });
        figures.push(Figure {
            cpu: cpu.since(from),
            article: c.article_per_sec,
            target,
            ..throughput(
                "cli_consume",
                format!(
                    "h. `eventbus consume` of {} pre-filled entries, JSON lines to /dev/null, process start to exit",
                    args.consume_events
                ),
                c.cli_per_sec,
                None,
            )
        });
        progress(&figures);
    }

    if runs("projection") {
        let samples = if args.smoke { 100 } else { 1_000 };
        let from = cpu.snap();
        let p = projection::run(&args.url, args.projection_commands, samples).await?;
        let used = cpu.since(from);
        figures.push(Figure {
            cpu: used,
            unit: "commands/s",
            ..throughput(
                "command_to_projection",
                format!(
                    "d. command → projection read model, dispatch awaited one at a time ({} commands)",
                    p.commands
                ),
                p.commands_per_sec,
                None,
            )
        });
        progress(&figures);
        for (suffix, value) in [("p50", p.p50_us), ("p99", p.p99_us), ("p999", p.p999_us)] {
            figures.push(Figure {
                key: format!("command_to_projection_{suffix}_ms"),
                label: format!(
                    "d. command → read model readable, latency ({} samples) {suffix}",
                    p.samples
                ),
                value: f64::from(value) / 1000.0,
                unit: "ms",
                ratio: None,
                target: None,
                article: None,
                cpu: used,
            });
            progress(&figures);
        }
    }

    if runs("memory") {
        let from = cpu.snap();
        let mem = memory::run(&args.url, args.memory_events, args.batch).await?;
        figures.push(Figure {
            key: "consumer_peak_mib".into(),
            label: format!(
            "e. consumer peak memory (VmHWM) over {} events (baseline {:.1} MiB; {:.0} events/s)",
            mem.events, mem.baseline_mib, mem.events_per_sec
        ),
            value: mem.peak_mib,
            unit: "MiB",
            ratio: None,
            target: Some(("≤ 16 MiB".into(), mem.peak_mib <= 16.0)),
            article: None,
            cpu: cpu.since(from),
        });
        progress(&figures);
    }

    // Last, because a global subscriber stays: the end-to-end run again with one installed
    // (fmt at INFO, to a sink), against figure b's, which ran with none (spans on, nobody
    // listening). The difference is what tracing costs.
    if runs("tracing") {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .finish();
        if tracing::subscriber::set_global_default(subscriber).is_ok() {
            let from = cpu.snap();
            let e2e = scenarios::end_to_end(&args.url, args.events, args.batch, 1, true).await?;
            let used = cpu.since(from);
            let label = format!(
                "f. end to end, 1 consumer, with a tracing subscriber (fmt, INFO, to a sink; {} events)",
                args.events
            );
            figures.push(Figure {
                cpu: used,
                ..throughput("e2e_1_consumer_subscriber", label, e2e.events_per_sec, None)
            });
            progress(&figures);
        }
    }

    let load_after = support::load_average();
    print_table(&reference, &figures, &load_before, &load_after);
    let line = json!({
        "redis_version": redis_version,
        "server": server_name,
        "cores": cores,
        "load_before": load_before,
        "load_after": load_after,
        "smoke": args.smoke,
        "reference_xadd_p16_ops": Some(round(r)).filter(|r| r.is_finite()),
        "figures": json_figures(&figures),
    });
    println!("{line}");
    Ok(())
}

/// The figures of the report's JSON line, by key.
fn json_figures(figures: &[Figure]) -> Map<String, serde_json::Value> {
    let mut json_figures = Map::new();
    for f in figures {
        json_figures.insert(
            f.key.clone(),
            json!({
                "value": round(f.value),
                "unit": f.unit,
                "ratio": f.ratio.map(round),
                "target": f.target.as_ref().map(|t| &t.0),
                "met": f.target.as_ref().map(|t| t.1),
                "article": f.article.map(round),
                "vs_article": f.article.map(|a| round(f.value / a)),
                "cpu_redis_pct": f.cpu.0.map(|c| c.round()),
                "cpu_bench_pct": f.cpu.1.map(|c| c.round()),
            }),
        );
    }
    json_figures
}

fn progress(figures: &[Figure]) {
    if let Some(f) = figures.last() {
        eprintln!("  {}: {:.1} {}", f.label, f.value, f.unit);
    }
}

fn print_table(reference: &reference::Reference, figures: &[Figure], before: &str, after: &str) {
    println!();
    println!(
        "| scenario | figure | ratio to XADD -P16 ({:.0}/s) | the article's bus | ÷ article's | target | met | CPU redis / bench |",
        reference.ops_per_sec
    );
    println!("|---|---:|---:|---:|---:|---|---|---|");
    for f in figures {
        let (target, met) = match &f.target {
            Some((t, met)) => (t.as_str(), if *met { "yes" } else { "NO" }),
            None => ("", ""),
        };
        let value = if f.unit.ends_with("/s") {
            format!("{:.0} {}", f.value, f.unit)
        } else {
            format!("{:.2} {}", f.value, f.unit)
        };
        let ratio = f.ratio.map_or(String::new(), |r| format!("{r:.3}"));
        let article = f.article.map_or(String::new(), |a| {
            if f.unit.ends_with("/s") {
                format!("{a:.0} {}", f.unit)
            } else {
                format!("{a:.2} {}", f.unit)
            }
        });
        let versus = f
            .article
            .map_or(String::new(), |a| format!("{:.2}", f.value / a));
        let pct = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.0}%"));
        println!(
            "| {} | {value} | {ratio} | {article} | {versus} | {target} | {met} | {} / {} |",
            f.label,
            pct(f.cpu.0),
            pct(f.cpu.1)
        );
    }
    println!("load average (1 min): {before} before, {after} after");
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
