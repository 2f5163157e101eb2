//! The reference figure: `redis-benchmark` appending entries shaped like ours with `XADD`,
//! 16 commands pipelined, against the same server.

use std::process::Command;

use anyhow::{bail, Context as _};
use eventbus_redis::codec;
use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::support::BenchEvent;

/// What redis-benchmark did.
pub struct Reference {
    /// `XADD` per second.
    pub ops_per_sec: f64,
    /// The command line, password masked.
    pub command: String,
}

/// The arguments of a `redis-benchmark` run, and the same with the password masked.
#[derive(Default)]
struct Args {
    args: Vec<String>,
    shown: Vec<String>,
}

impl Args {
    fn push(&mut self, a: &str, secret: bool) {
        self.args.push(a.to_owned());
        self.shown
            .push(if secret { "***".into() } else { a.to_owned() });
    }
}

/// Runs `redis-benchmark -P 16 --csv XADD {key} MAXLEN ~ {maxlen} * {our fields}` with `n`
/// requests against the server of `url`, deletes the key, and parses the requests/s.
pub fn run(url: &str, key: &str, n: u64, maxlen: u64) -> anyhow::Result<Reference> {
    let info = url.into_connection_info().context("parsing --url")?;
    let mut args = Args::default();
    let mut push = |a: &str, secret: bool| args.push(a, secret);
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            push("-h", false);
            push(host, false);
            push("-p", false);
            push(&port.to_string(), false);
        }
        ConnectionAddr::TcpTls { host, port, .. } => {
            push("--tls", false);
            push("-h", false);
            push(host, false);
            push("-p", false);
            push(&port.to_string(), false);
        }
        ConnectionAddr::Unix(path) => {
            push("-s", false);
            push(&path.to_string_lossy(), false);
        }
        other => bail!("unsupported address for redis-benchmark: {other:?}"),
    }
    let settings = info.redis_settings();
    if let Some(user) = settings.username() {
        push("--user", false);
        push(user, false);
    }
    if let Some(password) = settings.password() {
        push("-a", false);
        push(password, true);
    }
    if settings.db() != 0 {
        push("--dbnum", false);
        push(&settings.db().to_string(), false);
    }
    let measured = measure(args, key, n, maxlen);
    cleanup(url, key);
    measured
}

/// The same against a Redis Cluster, with `redis-benchmark --cluster` (which finds every
/// master from the node at `host:port` and spreads its clients over them): `key` must hold
/// `{tag}`, which redis-benchmark replaces with a hash tag of each client's master. The
/// caller deletes the keys (one per master).
pub fn run_cluster(
    host: &str,
    port: u16,
    key: &str,
    n: u64,
    maxlen: u64,
) -> anyhow::Result<Reference> {
    let mut args = Args::default();
    for a in ["--cluster", "-h", host, "-p", &port.to_string()] {
        args.push(a, false);
    }
    measure(args, key, n, maxlen)
}

/// Adds the benchmark to `args` (which name the server), runs it and parses the requests/s.
fn measure(mut args: Args, key: &str, n: u64, maxlen: u64) -> anyhow::Result<Reference> {
    let mut push = |a: &str, secret: bool| args.push(a, secret);
    for a in ["-P", "16", "-n", &n.to_string(), "--csv", "XADD", key] {
        push(a, false);
    }
    for a in ["MAXLEN", "~", &maxlen.to_string(), "*"] {
        push(a, false);
    }
    // Exactly the fields our publish writes for a BenchEvent.
    let envelope = eventbus_core::Envelope::from_event("bench", BenchEvent::new(123_456))
        .to_raw()
        .context("encoding the sample event")?;
    for (field, value) in codec::encode(&envelope)? {
        push(&field, false);
        push(&value, false);
    }

    let output = Command::new("redis-benchmark")
        .args(&args.args)
        .output()
        .context("running redis-benchmark (is it on the PATH?)")?;
    let command = format!("redis-benchmark {}", args.shown.join(" "));
    if !output.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let ops_per_sec = parse_csv_rps(&stdout)
        .with_context(|| format!("no requests/s in redis-benchmark's output: {stdout}"))?;
    Ok(Reference {
        ops_per_sec,
        command,
    })
}

/// The `rps` column of the last CSV row. The command column is not escaped (it holds our
/// JSON with its quotes), so columns are counted from the end: `rps` is the 7th last.
fn parse_csv_rps(csv: &str) -> Option<f64> {
    let row = csv.lines().rev().find(|l| l.starts_with("\"XADD"))?;
    let cols: Vec<&str> = row.split("\",\"").collect();
    let rps = cols.get(cols.len().checked_sub(7)?)?;
    rps.trim_matches('"').parse().ok()
}

fn cleanup(url: &str, key: &str) {
    let deleted = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("DEL").arg(key).query::<u64>(&mut c));
    if let Err(e) = deleted {
        eprintln!("warning: could not delete {key}: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"XADD k * data {\"a\":1}\",\"423728.81\",\"1.742\",\"0.376\",\"1.559\",\"3.239\",\"5.607\",\"5.975\"\n";
        assert_eq!(super::parse_csv_rps(csv), Some(423728.81));
    }
}
