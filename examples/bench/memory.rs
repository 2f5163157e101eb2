//! The consumer's peak memory: a child process (this binary, hidden `consume` subcommand)
//! consumes while the parent publishes; the child reports its own `VmHWM`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use eventbus_core::{EventBus, StreamAdmin};
use serde::{Deserialize, Serialize};

use crate::scenarios::{self, Scope, SERVICE, STALL};
use crate::support::{self, BenchEvent, Tracker};

/// Unread plus pending entries the producer allows before it waits for the consumer; the
/// streams' `MAXLEN` is twice that, so trimming never takes an unread entry.
const MAX_BACKLOG: u64 = 100_000;

/// What the child reports on its last line.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildReport {
    pub handled: u64,
    pub extra: u64,
    pub acked: u64,
    /// `VmHWM` once subscribed, before any event.
    pub baseline_hwm_kib: u64,
    /// `VmHWM` after the last event.
    pub peak_hwm_kib: u64,
    /// `VmRSS` after the last event.
    pub final_rss_kib: u64,
    pub error: Option<String>,
}

/// Figures of the memory scenario.
pub struct Memory {
    pub events: u64,
    pub peak_mib: f64,
    pub baseline_mib: f64,
    pub events_per_sec: f64,
}

/// The child: consume `n` events of `namespace`, then report.
pub async fn child(url: &str, namespace: &str, n: u64) -> anyhow::Result<()> {
    let transport = support::connect(url, namespace, 2 * MAX_BACKLOG).await?;
    let tracker = Arc::new(Tracker::new(n, false));
    let t = tracker.clone();
    let sub = EventBus::new(transport, SERVICE)
        .subscribe()
        .consumer_name("bench-memory")
        .start_from(eventbus_core::StartFrom::Beginning)
        .on(move |e: eventbus_core::Envelope<BenchEvent>| {
            t.record(&e.data);
            std::future::ready(Ok(()))
        })
        .start()
        .await?;
    let baseline_hwm_kib = support::proc_status_kib("self", "VmHWM").unwrap_or(0);
    println!("ready");
    let waited = support::wait_until(
        "memory consumer",
        STALL,
        || sub.stats().acked() + tracker.distinct(),
        || sub.stats().acked() >= n && tracker.distinct() >= n,
    )
    .await;
    let acked = sub.stats().acked();
    sub.shutdown().await?;
    let report = ChildReport {
        handled: tracker.distinct(),
        extra: tracker.extra(),
        acked,
        baseline_hwm_kib,
        peak_hwm_kib: support::proc_status_kib("self", "VmHWM").unwrap_or(0),
        final_rss_kib: support::proc_status_kib("self", "VmRSS").unwrap_or(0),
        error: waited.err().map(|e| e.to_string()),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The parent: start the child, publish `n` events in batches, collect its report.
pub async fn run(url: &str, n: u64, batch: u64) -> anyhow::Result<Memory> {
    let scenario = "memory";
    let scope = Scope::open(url, scenario, 2 * MAX_BACKLOG).await?;
    let namespace = scope.transport.keys().namespace().to_owned();
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut child = Command::new(exe)
        .args(["consume", "--url", url, "--namespace", &namespace])
        .args(["--events", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the consumer process")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(line)) if line == "ready" => {}
        other => {
            let _ = child.kill();
            bail!("memory: the consumer process did not start: {other:?}");
        }
    }

    let bus = EventBus::new(scope.transport.clone(), SERVICE);
    let group = scenarios::group();
    let start = Instant::now();
    let mut seq = 0;
    while seq < n {
        if seq % (20 * batch) == 0 {
            // Keep the backlog under the streams' MAXLEN.
            loop {
                let lag = scope.transport.lag(Some(&group)).await?;
                let backlog: u64 = lag.iter().map(|l| l.lag.unwrap_or(0) + l.pending).sum();
                if backlog < MAX_BACKLOG {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let end = (seq + batch).min(n);
        bus.publish_batch((seq..end).map(BenchEvent::new)).await?;
        seq = end;
    }
    let mut last = None;
    while let Some(line) = rx.recv().await {
        last = Some(line);
    }
    let elapsed = start.elapsed();
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    let report: ChildReport = serde_json::from_str(last.as_deref().unwrap_or(""))
        .with_context(|| format!("memory: no report from the consumer ({status})"))?;
    if let Some(error) = &report.error {
        bail!("memory: {error}");
    }
    ensure!(
        report.handled == n && report.extra == 0 && report.acked == n,
        "memory: {} of {n} events handled, {} extra runs, {} acked",
        report.handled,
        report.extra,
        report.acked
    );
    ensure!(status.success(), "memory: consumer exited with {status}");
    scope.finish(scenario, Some(&group)).await?;
    Ok(Memory {
        events: n,
        peak_mib: report.peak_hwm_kib as f64 / 1024.0,
        baseline_mib: report.baseline_hwm_kib as f64 / 1024.0,
        events_per_sec: n as f64 / elapsed.as_secs_f64(),
    })
}
