//! The Redis Cluster scenario (`bench cluster`): a partitioned topic on a cluster, by
//! default a local one of 3 masters and 3 replicas that it starts and stops itself
//! (`eventbus_tests::RedisCluster`, every node stopped by pid when dropped: at the end, on
//! an error, on Ctrl-C and while a panic unwinds), else the one at `--url
//! redis+cluster://…`.
//!
//! It measures, next to `redis-benchmark --cluster` on the same cluster: batched publishing
//! of keyed events, without and with `WAIT 1` after each partition's `EXEC`
//! ([`RedisConfig::publish_wait_for_replicas`]), with each batch's latency; and end to end
//! with three consumers of one group sharing the partitions, checking that every event was
//! handled exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use eventbus_core::{EventBus, StartFrom, Subscription, Topic};
use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::RedisCluster;

use crate::reference::{self, Reference};
use crate::scenarios::{self, Scope, SERVICE, STALL};
use crate::support::{self, BenchEvent, Tracker};
use crate::Figure;

/// The event type of the scenario's topic.
const EVENT_TYPE: &str = "BenchEvent";
/// Consumers of the end-to-end run.
const CONSUMERS: usize = 3;
/// What a publish waits for in the `WAIT` run: one replica, for at most a second.
const WAIT: (u32, Duration) = (1, Duration::from_secs(1));
/// The scenarios' namespaces (under [`support::namespace`]), for cleanup after a failure.
const SCENARIOS: [&str; 4] = [
    "cluster-ref",
    "cluster-publish",
    "cluster-publish-wait",
    "cluster-e2e",
];

/// CPU use of a run, percent of one core: (the cluster's nodes, the bench process).
type Cpu = (Option<f64>, Option<f64>);

/// What to run.
pub struct Options {
    /// `redis+cluster://…` to use, else a local cluster is started.
    pub url: Option<String>,
    /// Events of each run.
    pub events: u64,
    /// Events per `publish_raw` batch.
    pub batch: u64,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Publish runs without and with `WAIT`, alternating; the median is reported.
    pub rounds: u32,
    /// Requests of the redis-benchmark reference.
    pub reference_requests: u64,
    /// Tiny sizes: a smoke run.
    pub smoke: bool,
}

/// Whether `url` names a cluster.
pub fn is_cluster_url(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.ends_with("+cluster"))
}

/// Runs the scenario and prints its report.
pub async fn run(opts: &Options) -> anyhow::Result<()> {
    let (local, url) = match &opts.url {
        Some(url) => (None, url.clone()),
        None => {
            let started = Instant::now();
            // The harness panics when a node does not come up; on a task of its own the
            // panic becomes an error here, and unwinding has stopped the nodes it started.
            let cluster = tokio::spawn(RedisCluster::start())
                .await
                .context("starting a local Redis Cluster (redis-server and redis-cli on PATH)")?;
            let url = cluster.url();
            println!(
                "local cluster: 3 masters + 3 replicas on ports {:?}, up in {:.1} s",
                cluster.ports(),
                started.elapsed().as_secs_f64()
            );
            (Some(cluster), url)
        }
    };
    let nodes = node_urls(&url)?;
    let probe = connect(&config(&url, "probe", opts.events)?).await?;
    let version = probe.server_version().to_owned();
    let server = probe.config().redacted_url().to_owned();
    drop(probe);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = support::load_average();
    println!(
        "eventbus bench, cluster: Redis {version} at {server}; {} partitions; {cores} cores; load \
         {load_before}{}",
        opts.partitions,
        if opts.smoke { "; SMOKE sizes" } else { "" }
    );
    // Every node of a local cluster (masters and replicas: replication is part of the
    // cost); of another, the seeds that run on this machine.
    let cpu = match &local {
        Some(cluster) => {
            let all: Vec<String> = cluster
                .ports()
                .iter()
                .map(|port| format!("redis://127.0.0.1:{port}"))
                .collect();
            support::CpuMeter::of_servers(&all).await
        }
        None => support::CpuMeter::of_servers(&nodes).await,
    };

    let reference = reference_run(&url, &nodes, opts).await?;
    let r = reference.ops_per_sec;
    println!("reference: {}\n  -> {r:.0} XADD/s", reference.command);
    let ratio = |v: f64| Some(v / r).filter(|r| r.is_finite());

    let mut figures = Vec::new();
    // Without and with WAIT in alternation, so that both see the same background load.
    let variants = [
        ("cluster_publish", None),
        ("cluster_publish_wait", Some(WAIT)),
    ];
    let mut runs: [Vec<(Publish, Cpu)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..opts.rounds {
        for ((_, wait), out) in variants.iter().zip(&mut runs) {
            let from = cpu.snap();
            let p = publish(&url, opts, *wait).await?;
            let used = cpu.since(from);
            eprintln!(
                "  round {}: publish{}: {:.0} events/s",
                round + 1,
                if wait.is_some() { " + WAIT" } else { "" },
                p.events_per_sec
            );
            out.push((p, used));
        }
    }
    for ((key, wait), runs) in variants.iter().zip(&runs) {
        let how = match wait {
            None => String::new(),
            Some((n, t)) => format!(", WAIT {n} {}", t.as_millis()),
        };
        let mut rates: Vec<f64> = runs.iter().map(|(p, _)| p.events_per_sec).collect();
        let label = format!(
            "a. cluster publish, keyed, batches of {}{how} ({} × {} events, {} partitions; \
             median of {})",
            opts.batch,
            opts.rounds,
            opts.events,
            opts.partitions,
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        rates.sort_by(f64::total_cmp);
        let median = rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN);
        let mean = |f: fn(&Cpu) -> Option<f64>| {
            let v: Option<Vec<f64>> = runs.iter().map(|(_, used)| f(used)).collect();
            v.map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
        };
        let used = (mean(|u| u.0), mean(|u| u.1));
        figures.push(Figure {
            key: (*key).into(),
            label: label.clone(),
            value: median,
            unit: "events/s",
            ratio: ratio(median),
            target: None,
            article: None,
            cpu: used,
        });
        crate::progress(&figures);
        let mut latencies: Vec<u32> = runs
            .iter()
            .flat_map(|(p, _)| p.latencies_us.iter().copied())
            .collect();
        latencies.sort_unstable();
        for (suffix, q) in [("p50", 0.50), ("p99", 0.99)] {
            figures.push(Figure {
                key: format!("{key}_batch_{suffix}_ms"),
                label: format!(
                    "{label}, per-batch latency (all {} batches) {suffix}",
                    latencies.len()
                ),
                value: f64::from(support::quantile(&latencies, q)) / 1000.0,
                unit: "ms",
                ratio: None,
                target: None,
                article: None,
                cpu: used,
            });
            crate::progress(&figures);
        }
    }

    let from = cpu.snap();
    let e2e = end_to_end(&url, opts).await?;
    let used = cpu.since(from);
    figures.push(Figure {
        key: "cluster_e2e_3_consumers".into(),
        label: format!(
            "b. cluster end to end, {CONSUMERS} consumers sharing {} partitions ({} events; \
             producer {:.0}/s; handled {})",
            opts.partitions,
            opts.events,
            e2e.publish_per_sec,
            e2e.handled
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        ),
        value: e2e.events_per_sec,
        unit: "events/s",
        ratio: ratio(e2e.events_per_sec),
        target: None,
        article: None,
        cpu: used,
    });
    crate::progress(&figures);

    let load_after = support::load_average();
    crate::print_table(&reference, &figures, &load_before, &load_after);
    let line = serde_json::json!({
        "scenario": "cluster",
        "redis_version": version,
        "cores": cores,
        "partitions": opts.partitions,
        "load_before": load_before,
        "load_after": load_after,
        "smoke": opts.smoke,
        "reference_cluster_xadd_p16_ops": Some(crate::round(r)).filter(|r| r.is_finite()),
        "figures": crate::json_figures(&figures),
    });
    println!("{line}");
    Ok(())
}

/// Deletes what the scenarios of this run left on the cluster at `url` (after a failure).
pub async fn delete_run_keys(url: &str) -> anyhow::Result<()> {
    for scenario in SCENARIOS {
        connect(&config(url, scenario, 0)?)
            .await?
            .delete_namespace()
            .await?;
    }
    Ok(())
}

/// `redis://host:port` of each node named by a `redis+cluster://` URL (seeds only, which
/// for a local cluster are its masters).
fn node_urls(url: &str) -> anyhow::Result<Vec<String>> {
    let Some((scheme, rest)) = url.split_once("+cluster://") else {
        bail!("not a redis+cluster:// URL: {url}");
    };
    Ok(rest
        .split(',')
        .map(|node| format!("{scheme}://{}", node.trim_end_matches('/')))
        .collect())
}

/// The configuration of a scenario's transports: its namespace, no trimming below `events`.
fn config(url: &str, scenario: &str, events: u64) -> anyhow::Result<RedisConfig> {
    support::config(url, &support::namespace(scenario), events + 1000)
}

async fn connect(config: &RedisConfig) -> anyhow::Result<RedisTransport> {
    RedisTransport::connect(config.clone())
        .await
        .with_context(|| format!("connecting to {}", config.redacted_url()))
}

/// `redis-benchmark --cluster -P 16 … XADD {ns}:{tag} MAXLEN ~ … * {our fields}` against the
/// first node, then deletes its keys (one per master).
async fn reference_run(url: &str, nodes: &[String], opts: &Options) -> anyhow::Result<Reference> {
    let config = config(url, "cluster-ref", 0)?;
    let key = format!("{}:{{tag}}", config.key_namespace());
    let first = nodes.first().context("a cluster URL names a node")?;
    let info = redis::Client::open(first.as_str())?
        .get_connection_info()
        .clone();
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => bail!("redis-benchmark --cluster needs a plain TCP node, not {other:?}"),
    };
    let (n, maxlen) = (opts.reference_requests, 100_000);
    let measured =
        tokio::task::spawn_blocking(move || reference::run_cluster(&host, port, &key, n, maxlen))
            .await?;
    connect(&config).await?.delete_namespace().await?;
    match measured {
        Ok(reference) => Ok(reference),
        // A smoke run checks delivery, not speed: it goes on without the reference.
        Err(e) if opts.smoke => {
            eprintln!("warning: no reference figure: {e:#}");
            Ok(Reference {
                ops_per_sec: f64::NAN,
                command: "(redis-benchmark --cluster unavailable)".into(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Figures of a publish run.
struct Publish {
    events_per_sec: f64,
    /// How long each batch's `publish_raw` took (µs).
    latencies_us: Vec<u32>,
}

/// Creates the partitioned topic (and its partition streams, by creating a group on it, so
/// that the first timed batch does not pay for them).
async fn create_topic(transport: &RedisTransport, partitions: u32) -> anyhow::Result<()> {
    use eventbus_core::StreamTransport;
    let count = transport.create_topic(EVENT_TYPE, partitions).await?;
    ensure!(
        count == partitions,
        "the topic has {count} partitions, not {partitions} (an older namespace?)"
    );
    transport
        .ensure_group(
            &Topic::of_type(EVENT_TYPE),
            &scenarios::group(),
            StartFrom::Beginning,
        )
        .await?;
    Ok(())
}

/// Publishes events `0..n` in batches, each keyed by its order id; returns how long each
/// batch's `publish_raw` took (µs).
async fn publish_keyed(bus: &EventBus, n: u64, batch: u64) -> anyhow::Result<Vec<u32>> {
    let mut latencies = Vec::with_capacity(n.div_ceil(batch.max(1)) as usize);
    let mut seq = 0;
    while seq < n {
        let end = (seq + batch.max(1)).min(n);
        let raw = (seq..end)
            .map(|s| {
                let event = BenchEvent::new(s);
                let key = event.order_id.clone();
                bus.envelope(event).with_partition_key(key).into_raw()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        bus.publish_raw(&raw).await?;
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        seq = end;
    }
    Ok(latencies)
}

/// One publisher, batches of keyed events, optionally `WAIT`ing for replicas; checks that
/// the partitions of the type stream and of the global stream hold exactly `n` entries.
async fn publish(
    url: &str,
    opts: &Options,
    wait: Option<(u32, Duration)>,
) -> anyhow::Result<Publish> {
    let scenario = if wait.is_some() {
        "cluster-publish-wait"
    } else {
        "cluster-publish"
    };
    let mut config = config(url, scenario, opts.events)?;
    if let Some((replicas, timeout)) = wait {
        config = config.publish_wait_for_replicas(replicas, timeout);
    }
    let transport = connect(&config).await?;
    create_topic(&transport, opts.partitions).await?;
    let bus = EventBus::new(transport.clone(), SERVICE);
    let started = Instant::now();
    let latencies = publish_keyed(&bus, opts.events, opts.batch).await?;
    let elapsed = started.elapsed();
    let layout = partition_layout(url, &transport, opts.partitions).await?;
    Scope::from_transport(url, transport, opts.events + 1000)
        .finish(scenario, None)
        .await?;
    for (stream, lengths) in ["type", "global"].iter().zip(&layout.lengths) {
        let total: u64 = lengths.iter().sum();
        ensure!(
            total == opts.events,
            "{scenario}: the {stream} stream's partitions hold {total} entries, not {} \
             ({lengths:?})",
            opts.events
        );
    }
    println!(
        "  {scenario}: entries per partition {:?}, on masters {:?}",
        layout.lengths[0], layout.masters
    );
    Ok(Publish {
        events_per_sec: opts.events as f64 / elapsed.as_secs_f64(),
        latencies_us: latencies,
    })
}

/// Where a topic's partitions are, read on the cluster directly (not through the code under
/// test).
struct Layout {
    /// `XLEN` of every partition of the type stream, then of the global stream.
    lengths: [Vec<u64>; 2],
    /// The master (`host:port`) of each partition.
    masters: Vec<String>,
}

async fn partition_layout(
    url: &str,
    transport: &RedisTransport,
    partitions: u32,
) -> anyhow::Result<Layout> {
    let client = redis::cluster::ClusterClient::new(node_urls(url)?)?;
    let mut conn = client
        .get_async_connection()
        .await
        .context("cluster connection")?;
    let keys = transport.keys();
    let tags: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.partition_tags())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    ensure!(
        tags.len() == partitions as usize,
        "{} partition tags for {partitions} partitions",
        tags.len()
    );
    let mut lengths = [Vec::new(), Vec::new()];
    for (topic, out) in [Topic::of_type(EVENT_TYPE), Topic::All]
        .iter()
        .zip(&mut lengths)
    {
        for tag in &tags {
            let n: u64 = redis::cmd("XLEN")
                .arg(keys.partition_stream(topic, tag))
                .query_async(&mut conn)
                .await?;
            out.push(n);
        }
    }
    let slots = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    let ranges = slot_ranges(&slots).context("unexpected CLUSTER SLOTS reply")?;
    let mut masters = Vec::new();
    for tag in &tags {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(keys.partition_stream(&Topic::All, tag))
            .query_async(&mut conn)
            .await?;
        let master = ranges
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .map_or_else(|| "?".to_owned(), |(_, _, master)| master.clone());
        masters.push(master);
    }
    Ok(Layout { lengths, masters })
}

/// `(first slot, last slot, master host:port)` of each range of a `CLUSTER SLOTS` reply.
fn slot_ranges(reply: &redis::Value) -> Option<Vec<(i64, i64, String)>> {
    use redis::Value;
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(range) = range else {
                return None;
            };
            let (Value::Int(from), Value::Int(to), Value::Array(master)) =
                (range.first()?, range.get(1)?, range.get(2)?)
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
                Value::SimpleString(host) => host.clone(),
                _ => return None,
            };
            let Value::Int(port) = master.get(1)? else {
                return None;
            };
            Some((*from, *to, format!("{host}:{port}")))
        })
        .collect()
}

/// Figures of the end-to-end run.
struct EndToEnd {
    events_per_sec: f64,
    publish_per_sec: f64,
    /// Events each consumer handled.
    handled: Vec<u64>,
}

/// Three consumers of one group share the partitions (waits until each holds some); one
/// producer publishes keyed batches; measured from the first publish to the last ack.
async fn end_to_end(url: &str, opts: &Options) -> anyhow::Result<EndToEnd> {
    let scenario = "cluster-e2e";
    let config = config(url, scenario, opts.events)?;
    let transport = connect(&config).await?;
    create_topic(&transport, opts.partitions).await?;
    let tracker = Arc::new(Tracker::new(opts.events, false));
    let mut subs = Vec::new();
    for i in 0..CONSUMERS {
        let consumer = connect(&config).await?;
        subs.push(scenarios::subscribe(consumer, &format!("bench-{i}"), &tracker).await?);
    }
    let shared = settle_leases(&transport, opts.partitions).await?;
    println!("  {scenario}: partition leases {shared:?}");
    let scope = Scope::from_transport(url, transport, opts.events + 1000);
    let bus = EventBus::new(scope.transport.clone(), SERVICE);
    let acked = |subs: &[Subscription]| subs.iter().map(|s| s.stats().acked()).sum::<u64>();
    let n = opts.events;

    let started = Instant::now();
    publish_keyed(&bus, n, opts.batch).await?;
    let published = started.elapsed();
    support::wait_until(
        scenario,
        STALL,
        || acked(&subs) + tracker.distinct(),
        || acked(&subs) >= n && tracker.distinct() >= n,
    )
    .await?;
    let elapsed = started.elapsed();

    let handled: Vec<u64> = subs.iter().map(|s| s.stats().acked()).collect();
    for sub in subs {
        ensure!(
            sub.stats().dead_lettered() == 0 && sub.stats().failed_attempts() == 0,
            "{scenario}: handler failures"
        );
        sub.shutdown().await?;
    }
    tracker.verify(scenario)?;
    let total: u64 = handled.iter().sum();
    ensure!(total == n, "{scenario}: {total} acks for {n} events");
    scope.finish(scenario, Some(&scenarios::group())).await?;
    Ok(EndToEnd {
        events_per_sec: n as f64 / elapsed.as_secs_f64(),
        publish_per_sec: n as f64 / published.as_secs_f64(),
        handled,
    })
}

/// Waits (up to 15 s) until every partition's lease is held and every consumer holds one;
/// returns the holder of each partition.
async fn settle_leases(transport: &RedisTransport, partitions: u32) -> anyhow::Result<Vec<String>> {
    let topic = Topic::of_type(EVENT_TYPE);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let owners = transport
            .partition_owners(&scenarios::group(), &topic)
            .await?;
        let held: Vec<String> = owners.iter().flatten().cloned().collect();
        let mut distinct = held.clone();
        distinct.sort();
        distinct.dedup();
        if held.len() == partitions as usize && distinct.len() == CONSUMERS {
            return Ok(held);
        }
        if Instant::now() > deadline {
            bail!("the {CONSUMERS} consumers did not share the partitions in 15 s: {owners:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
