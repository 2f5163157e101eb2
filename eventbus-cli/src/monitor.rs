//! `eventbus monitor`: a Prometheus exporter of the namespace's consumer groups, for services
//! that don't export their own metrics (the reference article's Python services, or any
//! other language): every interval it samples the lag, pending entries and oldest pending
//! age of every stream and group (every partition, every master of a cluster) into the group
//! gauges, served on `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use eventbus_core::telemetry::lag::LagSampler;
use eventbus_core::telemetry::prometheus::{PrometheusExporter, DEFAULT_GAUGE_IDLE};
use eventbus_redis::{group_for_service, RedisTransport};

use crate::consume::shutdown_signal;
use crate::format::{count, duration};
use crate::output::CliResult;

#[derive(Args)]
pub(crate) struct MonitorArgs {
    /// Where to serve `GET /metrics` (`0.0.0.0:9464` for every interface; port 0 picks a free
    /// port, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: SocketAddr,
    /// Seconds between two samples (fractions allowed).
    #[arg(long, value_name = "S", default_value = "15", value_parser = seconds)]
    interval: Duration,
    /// Only this service's group (`{service}-consumers`).
    #[arg(long)]
    service: Option<String>,
}

/// A positive number of seconds.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("`{text}`: give a positive number of seconds")),
    }
}

pub(crate) async fn run(transport: RedisTransport, args: MonitorArgs) -> CliResult {
    let namespace = transport.keys().namespace().to_owned();
    // A deleted group's gauges leave the scrape once not set for a few intervals.
    let server = PrometheusExporter::new(args.metrics_addr)
        .gauge_idle(DEFAULT_GAUGE_IDLE.max(args.interval * 4))
        .serve()
        .await?;
    eprintln!(
        "eventbus: serving metrics on http://{}/metrics",
        server.local_addr()
    );
    let mut sampler = LagSampler::new(Arc::new(transport)).every(args.interval);
    if let Some(service) = &args.service {
        sampler = sampler.groups([group_for_service(service)]);
    }
    // The first sample here, to say at once what is watched or what fails; then on a task.
    match sampler.sample().await {
        Ok(rows) => {
            let mut groups: Vec<&str> = rows.iter().map(|r| r.group.as_str()).collect();
            groups.sort_unstable();
            groups.dedup();
            eprintln!(
                "eventbus: sampling {} in namespace `{namespace}` every {}",
                count(groups.len() as u64, "consumer group", "consumer groups"),
                duration(args.interval)
            );
        }
        Err(e) => eprintln!(
            "eventbus: cannot sample the consumer groups yet ({e}); trying again every {}",
            duration(args.interval)
        ),
    }
    let running = sampler.start();
    shutdown_signal().await;
    eprintln!("eventbus: stopping");
    running.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_positive_seconds() {
        assert_eq!(seconds("15"), Ok(Duration::from_secs(15)));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
