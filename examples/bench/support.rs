//! What every scenario shares: the event, the exactly-once tracker, connections and
//! percentiles.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use eventbus_core::event;
use eventbus_redis::{RedisConfig, RedisTransport};

/// The benchmark's event. Its JSON (`data`) is about 75 bytes.
#[event(name = "BenchEvent")]
#[derive(Debug, Clone)]
pub struct BenchEvent {
    /// 0..N: which event of the run this is.
    pub seq: u64,
    /// When it was published, in µs since the process started ([`now_us`]).
    pub sent_us: u64,
    /// Padding shaped like a business id.
    pub order_id: String,
    /// Padding shaped like an amount.
    pub amount: f64,
}

impl BenchEvent {
    /// Event `seq`, stamped now.
    pub fn new(seq: u64) -> Self {
        BenchEvent {
            seq,
            sent_us: now_us(),
            order_id: format!("ord-{seq:08}"),
            amount: 99.5,
        }
    }
}

/// Microseconds since the first call in this process (a monotonic clock).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Records which events were handled, to prove each was handled exactly once, and
/// optionally each one's publish-to-handler latency.
pub struct Tracker {
    n: u64,
    bits: Vec<AtomicU64>,
    distinct: AtomicU64,
    duplicates: AtomicU64,
    out_of_range: AtomicU64,
    latencies_us: Vec<AtomicU32>,
}

impl Tracker {
    /// A tracker of events `0..n`; with `latencies`, one latency slot per event.
    pub fn new(n: u64, latencies: bool) -> Self {
        let words = usize::try_from(n.div_ceil(64)).unwrap_or(0);
        let slots = if latencies { n as usize } else { 0 };
        Tracker {
            n,
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            distinct: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            out_of_range: AtomicU64::new(0),
            latencies_us: (0..slots).map(|_| AtomicU32::new(u32::MAX)).collect(),
        }
    }

    /// Notes that the handler ran for `event`.
    pub fn record(&self, event: &BenchEvent) {
        let seq = event.seq;
        let Some(word) = self.bits.get((seq / 64) as usize).filter(|_| seq < self.n) else {
            self.out_of_range.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << (seq % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(slot) = self.latencies_us.get(seq as usize) {
            let us = now_us().saturating_sub(event.sent_us);
            slot.store(u32::try_from(us).unwrap_or(u32::MAX - 1), Ordering::Relaxed);
        }
        self.distinct.fetch_add(1, Ordering::Release);
    }

    /// Events handled at least once.
    pub fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Acquire)
    }

    /// Handler runs beyond the first, plus events not of this run.
    pub fn extra(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed) + self.out_of_range.load(Ordering::Relaxed)
    }

    /// Fails unless every event was handled exactly once.
    pub fn verify(&self, scenario: &str) -> anyhow::Result<()> {
        let missing = self.n - self.distinct();
        let dup = self.duplicates.load(Ordering::Relaxed);
        let foreign = self.out_of_range.load(Ordering::Relaxed);
        if missing != 0 || dup != 0 || foreign != 0 {
            bail!(
                "{scenario}: {missing} of {} events lost, {dup} handled twice, {foreign} not of \
                 this run",
                self.n
            );
        }
        Ok(())
    }

    /// Latencies (µs) of events `from..`, sorted.
    pub fn sorted_latencies(&self, from: u64) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .latencies_us
            .iter()
            .skip(from as usize)
            .map(|l| l.load(Ordering::Relaxed))
            .collect();
        v.sort_unstable();
        v
    }
}

/// The `q`-quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Waits until `done()` (polling every millisecond), failing when `progress()` stops moving
/// for `stall`: events were lost.
pub async fn wait_until(
    what: &str,
    stall: Duration,
    mut progress: impl FnMut() -> u64,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let mut last = progress();
    let mut last_change = Instant::now();
    while !done() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = progress();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall {
            bail!("{what}: no progress for {stall:?} (at {now})");
        }
    }
    Ok(())
}

/// A transport in its own namespace, with stream limits above what the scenario writes so
/// that verification can count every entry.
pub async fn connect(url: &str, namespace: &str, maxlen: u64) -> anyhow::Result<RedisTransport> {
    match RedisTransport::connect(config(url, namespace, maxlen)?).await {
        Ok(t) => Ok(t),
        Err(e) => {
            eprintln!(
                "error: {e}\nstart Redis with `redis-server --save '' --appendonly no` or pass \
                 --url"
            );
            std::process::exit(2);
        }
    }
}

/// The configuration of [`connect`]: `namespace`, and stream limits of `maxlen`.
pub fn config(url: &str, namespace: &str, maxlen: u64) -> anyhow::Result<RedisConfig> {
    Ok(RedisConfig::new(url)?
        .namespace(namespace)
        .default_stream_maxlen(maxlen)
        .global_maxlen(maxlen))
}

/// A fresh namespace for one scenario of this run.
pub fn namespace(scenario: &str) -> String {
    format!("bench-{}-{scenario}", std::process::id())
}

/// Deletes every key of this run's namespaces: what scenarios that failed midway left.
pub async fn delete_run_keys(url: &str) -> anyhow::Result<u64> {
    scan_keys(url, &format!("{}:*", namespace("*")), true).await
}

/// Counts (and with `delete`, unlinks) the keys matching `pattern`.
pub async fn scan_keys(url: &str, pattern: &str, delete: bool) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("raw connection")?;
    let (mut cursor, mut count) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        count += keys.len() as u64;
        if delete && !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(count);
        }
        cursor = next;
        tokio::time::sleep(Duration::ZERO).await;
    }
}

/// `XLEN` of a key.
pub async fn xlen(url: &str, key: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("raw connection")?;
    let n: u64 = redis::cmd("XLEN").arg(key).query_async(&mut conn).await?;
    Ok(n)
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// CPU time of redis-server (when it runs on this machine; summed over the nodes of a
/// cluster) and of this process (with its waited-for children), to tell which side bounds a
/// figure.
#[derive(Clone)]
pub struct CpuMeter {
    redis_pids: Vec<u32>,
    ticks_per_sec: f64,
}

/// A reading of a [`CpuMeter`].
#[derive(Clone, Copy)]
pub struct CpuSnap {
    at: Instant,
    redis: Option<u64>,
    bench: Option<u64>,
}

impl CpuMeter {
    /// Finds the server's pid (`INFO server`); readable only when the server is local.
    pub async fn new(url: &str) -> Self {
        CpuMeter::of_servers(&[url.to_owned()]).await
    }

    /// Finds the pids of several servers (the nodes of a cluster, by their `redis://` URLs);
    /// their CPU is summed.
    pub async fn of_servers(urls: &[String]) -> Self {
        let mut redis_pids = Vec::new();
        for url in urls {
            redis_pids.extend(server_pid(url).await);
        }
        let ticks_per_sec = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        CpuMeter {
            redis_pids,
            ticks_per_sec,
        }
    }

    /// Reads the counters now.
    pub fn snap(&self) -> CpuSnap {
        CpuSnap {
            at: Instant::now(),
            redis: (!self.redis_pids.is_empty())
                .then(|| {
                    self.redis_pids
                        .iter()
                        .map(|p| proc_ticks(&p.to_string(), false))
                        .sum::<Option<u64>>()
                })
                .flatten(),
            bench: proc_ticks("self", true),
        }
    }

    /// CPU use since `from` as percent of one core: (redis-server, this process).
    pub fn since(&self, from: CpuSnap) -> (Option<f64>, Option<f64>) {
        let now = self.snap();
        let wall = now.at.duration_since(from.at).as_secs_f64().max(1e-9);
        let pct = |a: Option<u64>, b: Option<u64>| {
            Some((b? - a?) as f64 / self.ticks_per_sec / wall * 100.0)
        };
        (pct(from.redis, now.redis), pct(from.bench, now.bench))
    }
}

/// The pid of the server at `url` (`INFO server`), when it runs on this machine.
async fn server_pid(url: &str) -> Option<u32> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|pid| proc_ticks(&pid.to_string(), false).is_some())
}

/// utime + stime (+ children's) of a process, in clock ticks.
fn proc_ticks(pid: &str, children: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let own = f.first()? + f.get(1)?;
    Some(if children {
        own + f.get(2)? + f.get(3)?
    } else {
        own
    })
}
