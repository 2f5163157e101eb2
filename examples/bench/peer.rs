//! The peers measured in the same run: the article's Python `StreamEventBus`
//! (`examples/bench/python/article_bus.py`, as the article prints it, driven by `peer.py`),
//! and the `eventbus` CLI's `consume`, each next to the other.
//!
//! The article's bus needs `python3` with redis-py: the one importable as it is, or the one
//! installed into `target/bench-python` by
//! `pip install --target target/bench-python -r examples/bench/python/requirements.txt`
//! (what `.ci/run` does). Without it the peer's columns stay empty and the bench says why.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use eventbus_core::{EventBus, StreamAdmin};
use serde::Deserialize;

use crate::scenarios::{Scope, SERVICE};
use crate::support::{self, BenchEvent};

/// The folder of the peer's Python files.
fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/python")
}

/// The article's bus, when Python with redis-py is there.
pub struct Article {
    pythonpath: String,
}

/// The peer's end-to-end figures.
#[derive(Deserialize)]
pub struct ArticleEndToEnd {
    pub events_per_sec: f64,
    pub publish_per_sec: f64,
}

/// The peer's latency figures (µs).
#[derive(Deserialize)]
pub struct ArticleLatency {
    pub achieved_rate: f64,
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Article {
    /// Finds `python3` able to import redis-py (from `target/bench-python` first), or says
    /// why not.
    pub fn detect() -> Result<Article, String> {
        let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-python");
        let pythonpath = match std::env::var("EVENTBUS_BENCH_PYTHONPATH") {
            Ok(path) => path,
            Err(_) => installed.to_string_lossy().into_owned(),
        };
        let probe = Command::new("python3")
            .args(["-c", "import redis"])
            .env("PYTHONPATH", &pythonpath)
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(status) if status.success() => Ok(Article { pythonpath }),
            Ok(_) => Err(
                "python3 has no redis-py: `pip install --target target/bench-python \
                          -r examples/bench/python/requirements.txt`"
                    .into(),
            ),
            Err(e) => Err(format!("no python3: {e}")),
        }
    }

    fn command(&self, scenario: &str, url: &str, namespace: &str) -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg(python_dir().join("peer.py"))
            .args([scenario, "--url", url, "--namespace", namespace])
            .env("PYTHONPATH", &self.pythonpath)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a scenario that prints one JSON object.
    fn run<T: for<'de> Deserialize<'de>>(&self, mut cmd: Command, what: &str) -> anyhow::Result<T> {
        let output = cmd
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running the article's bus ({what})"))?;
        ensure!(
            output.status.success(),
            "the article's bus ({what}) failed: {}",
            output.status
        );
        let line = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(line.trim())
            .with_context(|| format!("the article's bus ({what}) printed {line:?}"))
    }

    /// End to end: the article's `publish`, one event at a time, to its consumer.
    pub fn end_to_end(&self, url: &str, events: u64) -> anyhow::Result<ArticleEndToEnd> {
        let mut cmd = self.command("e2e", url, &support::namespace("article-e2e"));
        cmd.args(["--events", &events.to_string()]);
        self.run(cmd, "end to end")
    }

    /// Publish-to-handler latency at `rate` events/s for `secs` seconds.
    pub fn latency(&self, url: &str, rate: u64, secs: f64) -> anyhow::Result<ArticleLatency> {
        let mut cmd = self.command("latency", url, &support::namespace("article-latency"));
        cmd.args(["--rate", &rate.to_string(), "--secs", &secs.to_string()]);
        self.run(cmd, "latency")
    }

    /// Seconds its consumer process takes, from spawn to exit, to print `n` entries of the
    /// `BenchEvent` stream of `namespace` as JSON lines.
    fn consume(&self, url: &str, namespace: &str, n: u64, service: &str) -> anyhow::Result<f64> {
        let mut cmd = self.command("consume", url, namespace);
        cmd.args(["--events", &n.to_string(), "--service", service])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let start = Instant::now();
        let status = cmd.status().context("running the article's consumer")?;
        let took = start.elapsed().as_secs_f64();
        ensure!(status.success(), "the article's consumer failed: {status}");
        Ok(took)
    }
}

/// Figures of the `eventbus consume` scenario.
pub struct Consume {
    /// Events/s of `eventbus consume`, process start to exit.
    pub cli_per_sec: f64,
    /// The same for the article's consumer, when it ran.
    pub article_per_sec: Option<f64>,
}

/// `eventbus consume --count n` of `n` pre-filled entries, from spawn to exit, printing JSON
/// lines to /dev/null; then the article's consumer on the same entries (another group).
/// `cli` is the `eventbus` binary.
pub async fn consume(
    url: &str,
    cli: &Path,
    n: u64,
    article: Option<&Article>,
) -> anyhow::Result<Consume> {
    let scope = Scope::open(url, "consume", n + 1000).await?;
    let namespace = scope.transport.keys().namespace().to_owned();
    let bus = EventBus::new(scope.transport.clone(), SERVICE);
    let mut seq = 0;
    while seq < n {
        let end = (seq + 1000).min(n);
        bus.publish_batch((seq..end).map(BenchEvent::new)).await?;
        seq = end;
    }
    let service = "bench-cli";
    let start = Instant::now();
    let status = Command::new(cli)
        .args(["--url", url, "--namespace", &namespace, "consume"])
        .args([
            "--service",
            service,
            "--type",
            "BenchEvent",
            "--from-beginning",
        ])
        .args(["--count", &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", cli.display()))?;
    let cli_secs = start.elapsed().as_secs_f64();
    ensure!(status.success(), "eventbus consume failed: {status}");
    let mut checked = vec![eventbus_core::bus::group_for_service(service)];
    let article_per_sec = match article {
        Some(article) => {
            let service = "article-consume";
            let secs = article.consume(url, &namespace, n, service)?;
            checked.push(eventbus_core::bus::group_for_service(service));
            Some(n as f64 / secs)
        }
        None => None,
    };
    for group in &checked {
        let lag = scope.transport.lag(Some(group)).await?;
        let pending: u64 = lag.iter().map(|l| l.pending).sum();
        let unread: u64 = lag.iter().map(|l| l.lag.unwrap_or(0)).sum();
        if pending != 0 || unread != 0 || lag.is_empty() {
            scope.finish("consume", None).await?;
            bail!("consume: group {group} left {pending} pending and {unread} unread");
        }
    }
    scope.finish("consume", None).await?;
    Ok(Consume {
        cli_per_sec: n as f64 / cli_secs,
        article_per_sec,
    })
}

/// The `eventbus` binary next to this one (built by `cargo build --release -p eventbus-cli`,
/// which this builds first when it is missing or the bench runs under cargo).
pub fn cli_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    // target/<profile>/examples/bench -> target/<profile>/eventbus
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench binary is not in target/<profile>/examples")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "eventbus-cli", "--bin", "eventbus"]);
        // What `cargo run` set for the bench itself: left in, build scripts that watch it
        // (ring's) would rebuild much of the workspace.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name == "CARGO_MANIFEST_DIR"
                || name == "CARGO_MANIFEST_PATH"
                || name.starts_with("CARGO_PKG_")
            {
                build.env_remove(name.as_ref());
            }
        }
        if release {
            build.arg("--release");
        }
        let status = build.status().context("building the eventbus CLI")?;
        ensure!(
            status.success(),
            "building the eventbus CLI failed: {status}"
        );
    }
    let cli = profile_dir.join("eventbus");
    ensure!(
        cli.exists(),
        "{} missing: build it with `cargo build --release -p eventbus-cli`",
        cli.display()
    );
    Ok(cli)
}
