//! The fault-injection harness: runs `fault-worker` publishers and consumers against a
//! private `redis-server`, injects one fault while they run, waits for quiescence, stops the
//! consumers and checks the invariants (see [`check::check`]).

pub mod check;
pub mod procs;
pub mod server;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use eventbus_core::transport::{StreamAdmin, Topic};

use check::check;
use eventbus_redis::{RedisConfig, RedisTransport};

use procs::{Procs, Role};
use server::Server;

/// The consumer group of the workers' handlers.
pub const GROUP: &str = "faults-group";

/// `EVENTBUS_FAULTS_LONG=1`: ten times the events, five times the fault window.
pub fn long() -> bool {
    std::env::var("EVENTBUS_FAULTS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The fault injected while the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `SIGKILL` a consumer every `every` (round robin), and a publisher every other time
    /// (each about twice).
    KillProcesses {
        /// Between two consumer kills.
        every: Duration,
    },
    /// Stop a consumer gracefully (`SIGTERM`) every `every`, round robin, while handlers run
    /// longer than its shutdown timeout; it restarts under the same name.
    TerminateConsumers {
        /// Between two stops.
        every: Duration,
    },
    /// `CLIENT KILL TYPE normal SKIPME yes` every 200 ms.
    ClientKillStorm,
    /// `SIGKILL` the server and restart it (AOF, `appendfsync always`) every `every`.
    ServerRestart {
        /// Between two restarts.
        every: Duration,
    },
    /// `CONFIG SET timeout 2`: the server closes connections idle for 2 s.
    ServerTimeout,
    /// `maxmemory` below the used memory with `noeviction` for `hold`, then unlimited.
    MaxMemory {
        /// How long writes are refused.
        hold: Duration,
    },
    /// Nothing but the workload (slow handlers, poison events).
    None,
}

/// One scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (namespace and temp directory).
    pub name: &'static str,
    /// Events published (sequence numbers `0..events`), split between the publishers.
    pub events: u64,
    /// Publisher processes.
    pub publishers: usize,
    /// Consumer processes (`c1`…).
    pub consumers: usize,
    /// Events per publish batch (one `MULTI`/`EXEC`).
    pub batch: u64,
    /// A publisher sleeps `pause` after every `pause_every` events it published.
    pub pause_every: u64,
    /// See `pause_every`.
    pub pause: Duration,
    /// Sequence numbers of poison events (handling one aborts the consumer).
    pub poison: Vec<u64>,
    /// Consumers are stopped (`SIGSTOP`) from the first instant to the second (`SIGCONT`), so
    /// that a backlog meets the fault.
    pub freeze_consumers: Option<(Duration, Duration)>,
    /// Consumers reclaim entries idle this long in another consumer.
    pub claim_idle: Duration,
    /// How long a consumer's graceful shutdown waits for handlers in flight.
    pub shutdown_timeout: Duration,
    /// How often consumers look for idle entries to reclaim (which also keeps their shared
    /// connection busy).
    pub claim_interval: Duration,
    /// Every event takes this long to handle (so that kills hit handlers in flight).
    pub work: Duration,
    /// Every `slow_every`-th event takes `slow` to handle (0: none).
    pub slow_every: u64,
    /// See `slow_every`.
    pub slow: Duration,
    /// Deliveries before an entry is dead-lettered: the production default (5), or fewer
    /// where poison is the point. Under a storm of random `SIGKILL`s an innocent entry could
    /// in principle be in flight at that many deaths (the last one while it ran alone) and
    /// be dead-lettered as poison: a supervisor's kill looks like the entry's doing.
    pub max_deliveries: u32,
    /// The fault.
    pub fault: Fault,
    /// How long the fault lasts, from the start.
    pub fault_for: Duration,
}

impl Scenario {
    /// A scenario with the defaults: 600 events (6000 in the long mode) by two paced
    /// publishers, three consumers, no poison, no slow handlers, a 6 s fault window (30 s).
    pub fn new(name: &'static str, fault: Fault) -> Scenario {
        let scale = if long() { 10 } else { 1 };
        Scenario {
            name,
            events: 600 * scale,
            publishers: 2,
            consumers: 3,
            batch: 10,
            pause_every: 10,
            pause: Duration::from_millis(150 / scale),
            poison: Vec::new(),
            freeze_consumers: None,
            claim_interval: Duration::from_millis(200),
            claim_idle: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            work: Duration::ZERO,
            slow_every: 0,
            slow: Duration::ZERO,
            max_deliveries: 5,
            fault,
            fault_for: Duration::from_secs(6 * if long() { 5 } else { 1 }),
        }
    }
}

/// How long publishing may take, and then draining.
fn limits() -> (Duration, Duration) {
    if long() {
        (Duration::from_secs(300), Duration::from_secs(120))
    } else {
        (Duration::from_secs(40), Duration::from_secs(25))
    }
}

/// Runs a scenario and panics with every violated invariant.
pub async fn run(scenario: Scenario) {
    let started = Instant::now();
    let mut server = Server::start().await;
    let url = server.url();
    let ns = format!("faults:{}", scenario.name);
    let dir = std::env::temp_dir().join(format!(
        "faults-{}-{}",
        scenario.name,
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create the scenario's directory");
    let mut procs = Procs::new(&dir, if long() { 200 } else { 40 });

    for i in 1..=scenario.consumers {
        let slot = format!("c{i}");
        let log = procs.log_path(&slot).display().to_string();
        let mut args = vec![
            "consume", "--url", &url, "--ns", &ns, "--name", &slot, "--log", &log,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend([
            "--claim-interval-ms".to_owned(),
            scenario.claim_interval.as_millis().to_string(),
            "--claim-idle-ms".to_owned(),
            scenario.claim_idle.as_millis().to_string(),
            "--shutdown-timeout-ms".to_owned(),
            scenario.shutdown_timeout.as_millis().to_string(),
            "--max-deliveries".to_owned(),
            scenario.max_deliveries.to_string(),
        ]);
        if !scenario.work.is_zero() {
            args.extend([
                "--work-ms".to_owned(),
                scenario.work.as_millis().to_string(),
            ]);
        }
        if scenario.slow_every > 0 {
            args.extend([
                "--slow-every".to_owned(),
                scenario.slow_every.to_string(),
                "--slow-ms".to_owned(),
                scenario.slow.as_millis().to_string(),
            ]);
        }
        procs.add(&slot, Role::Consumer, args);
    }
    let poison = scenario
        .poison
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let share = scenario.events.div_ceil(scenario.publishers.max(1) as u64);
    for p in 0..scenario.publishers as u64 {
        let (from, to) = (p * share, ((p + 1) * share).min(scenario.events));
        let args = [
            "publish",
            "--url",
            &url,
            "--ns",
            &ns,
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--batch",
            &scenario.batch.to_string(),
            "--pause-every",
            &scenario.pause_every.to_string(),
            "--pause-ms",
            &scenario.pause.as_millis().to_string(),
            "--poison",
            &poison,
        ];
        procs.add(
            &format!("p{p}"),
            Role::Publisher,
            args.iter().map(|s| (*s).to_owned()).collect(),
        );
    }

    // The fault, while publishing.
    let (publish_limit, drain_limit) = limits();
    let mut injected = Vec::new();
    let mut next_fault = Duration::from_millis(1000);
    let mut victim = 0usize;
    let mut publishers_killed = 0usize;
    let mut memory_limited: Option<Duration> = None;
    let mut frozen: Option<Vec<u32>> = None;
    let mut oom_refused: Option<u64> = None;
    let restart_delay = Duration::from_millis(300);
    loop {
        procs.supervise(true, restart_delay);
        let t = procs.elapsed();
        match scenario.freeze_consumers {
            Some((from, _)) if t >= from && frozen.is_none() => {
                frozen = Some(procs.running(Role::Consumer));
                signal(frozen.iter().flatten(), "STOP");
                injected.push(format!("{t:.1?}: SIGSTOP consumers"));
            }
            Some((_, until)) if t >= until && frozen.as_ref().is_some_and(|f| !f.is_empty()) => {
                signal(frozen.iter().flatten(), "CONT");
                frozen = Some(Vec::new());
                injected.push(format!("{t:.1?}: SIGCONT consumers"));
            }
            _ => {}
        }
        let faulting = t < scenario.fault_for;
        match scenario.fault {
            Fault::KillProcesses { every } if faulting && t >= next_fault => {
                next_fault = t + every;
                let consumers = procs.running(Role::Consumer);
                if !consumers.is_empty() {
                    let pid = consumers[victim % consumers.len()];
                    victim += 1;
                    procs.kill(pid);
                    injected.push(format!("{t:.1?}: SIGKILL consumer {pid}"));
                }
                let publishers = procs.running(Role::Publisher);
                if publishers_killed < 2 * scenario.publishers && victim.is_multiple_of(2) {
                    if let Some(&pid) = publishers.first() {
                        procs.kill(pid);
                        publishers_killed += 1;
                        injected.push(format!("{t:.1?}: SIGKILL publisher {pid}"));
                    }
                }
            }
            Fault::TerminateConsumers { every } if faulting && t >= next_fault => {
                next_fault = t + every;
                let consumers = procs.running(Role::Consumer);
                if !consumers.is_empty() {
                    let pid = consumers[victim % consumers.len()];
                    victim += 1;
                    procs.terminate(pid);
                    injected.push(format!("{t:.1?}: SIGTERM consumer {pid}"));
                }
            }
            Fault::ClientKillStorm if faulting && t >= next_fault => {
                next_fault = t + Duration::from_millis(200);
                let killed =
                    server::command(&url, &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
                        .await;
                if let Ok(redis::Value::Int(n)) = killed {
                    injected.push(format!("{t:.1?}: CLIENT KILL closed {n} connections"));
                }
            }
            Fault::ServerRestart { every } if faulting && t >= next_fault => {
                next_fault = t + every;
                server.kill();
                tokio::time::sleep(Duration::from_millis(300)).await;
                server.restart().await;
                injected.push(format!("{t:.1?}: server SIGKILLed and restarted"));
            }
            Fault::ServerTimeout if injected.is_empty() => {
                server::command(&url, &["CONFIG", "SET", "timeout", "2"])
                    .await
                    .expect("CONFIG SET timeout 2");
                injected.push(format!("{t:.1?}: CONFIG SET timeout 2"));
            }
            Fault::MaxMemory { hold } if t >= next_fault => match memory_limited {
                None => {
                    let used = server::used_memory(&url).await.unwrap_or(1 << 20);
                    let limit = (used / 2).to_string();
                    server::command(&url, &["CONFIG", "SET", "maxmemory-policy", "noeviction"])
                        .await
                        .expect("CONFIG SET maxmemory-policy");
                    server::command(&url, &["CONFIG", "SET", "maxmemory", &limit])
                        .await
                        .expect("CONFIG SET maxmemory");
                    injected.push(format!(
                        "{t:.1?}: maxmemory {limit} (used {used}), noeviction"
                    ));
                    memory_limited = Some(t);
                    next_fault = t + hold;
                }
                Some(since) if since != Duration::MAX => {
                    oom_refused = server::oom_errors(&url).await;
                    server::command(&url, &["CONFIG", "SET", "maxmemory", "0"])
                        .await
                        .expect("CONFIG SET maxmemory 0");
                    injected.push(format!("{t:.1?}: maxmemory 0 (unlimited) again"));
                    memory_limited = Some(Duration::MAX);
                    next_fault = Duration::MAX;
                }
                Some(_) => {}
            },
            _ => {}
        }
        let memory_restored = !matches!(scenario.fault, Fault::MaxMemory { .. })
            || memory_limited == Some(Duration::MAX);
        if procs.publishers_done() && !faulting && memory_restored {
            break;
        }
        if t > publish_limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published_in = procs.elapsed();
    if matches!(scenario.fault, Fault::MaxMemory { .. }) && memory_limited != Some(Duration::MAX) {
        let _ = server::command(&url, &["CONFIG", "SET", "maxmemory", "0"]).await;
    }

    // Quiescence: every group has read everything and holds nothing pending, twice in a row.
    let transport = connect(&url, &ns).await;
    let deadline = Instant::now() + drain_limit;
    let mut quiet = 0;
    while Instant::now() < deadline && quiet < 2 {
        procs.supervise(true, restart_delay);
        quiet = if drained(&transport).await {
            quiet + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_in = procs.elapsed();
    procs.stop_consumers(Duration::from_secs(10)).await;

    let mut report = check(&scenario, &url, &ns, &transport, &procs).await;
    let publish_failures: usize = (0..scenario.publishers)
        .map(|p| {
            std::fs::read_to_string(dir.join(format!("p{p}.stderr")))
                .unwrap_or_default()
                .matches("publish failed")
                .count()
        })
        .sum();
    report.notes.push(format!(
        "publishers saw {publish_failures} failed publishes (and retried them)"
    ));
    if matches!(scenario.fault, Fault::MaxMemory { .. }) {
        report.notes.push(format!(
            "the server refused {} commands with OOM",
            oom_refused.map_or("?".to_owned(), |n| n.to_string())
        ));
        if oom_refused.unwrap_or(0) == 0 {
            report
                .violations
                .push("the fault did not bite: the server refused no command with OOM".to_owned());
        }
    }
    let mut summary = format!(
        "scenario {}: {} events, published in {published_in:.1?}, quiet at {drained_in:.1?} \
         (quiet: {}), total {:.1?}\n  processes: {} lifetimes, restarts {:?}\n",
        scenario.name,
        scenario.events,
        quiet >= 2,
        started.elapsed(),
        procs.lives.len(),
        procs.restarts(),
    );
    let shown = injected.len().min(12);
    let _ = writeln!(
        summary,
        "  faults ({} injected): {}{}",
        injected.len(),
        injected[..shown].join("; "),
        if injected.len() > shown { "; …" } else { "" }
    );
    for note in procs.notes.iter().chain(&report.notes) {
        let _ = writeln!(summary, "  note: {note}");
    }
    if report.violations.is_empty() {
        eprintln!("{summary}");
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        panic!(
            "{summary}  worker logs kept in {}\n  VIOLATED:\n  - {}",
            dir.display(),
            report.violations.join("\n  - ")
        );
    }
}

/// Sends `SIGSTOP` or `SIGCONT` to processes.
fn signal<'a>(pids: impl Iterator<Item = &'a u32>, name: &str) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status();
    }
}

async fn connect(url: &str, ns: &str) -> RedisTransport {
    let config = RedisConfig::new(url)
        .expect("server URL")
        .namespace(ns.to_owned());
    RedisTransport::connect(config)
        .await
        .expect("connect the checker to the private server")
}

/// Whether both groups exist, have read every entry and hold nothing pending.
async fn drained(transport: &RedisTransport) -> bool {
    match transport.lag(None).await {
        Ok(lags) => {
            let on_stream: Vec<_> = lags
                .iter()
                .filter(|l| l.topic == Topic::of_type("FaultEvent"))
                .collect();
            on_stream.len() >= 2 && on_stream.iter().all(|l| l.pending == 0 && l.lag == Some(0))
        }
        Err(_) => false,
    }
}
