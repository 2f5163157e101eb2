//! Command → projection read model: `App::dispatch` of a command whose handler emits an
//! event, until the `#[projection]` hash it feeds is readable.

use std::time::Instant;

use anyhow::ensure;
use eventbus_core::{command, command_handler, event, projection, App, NoRejection, ReadModel};
use eventbus_redis::AppBuilderExt;

use crate::scenarios::STALL;
use crate::support::{self, quantile};

/// An order was placed (the event the command emits).
#[event(name = "BenchOrderPlaced")]
#[derive(Debug, Clone)]
pub struct BenchOrderPlaced {
    order_id: String,
    amount: f64,
}

/// Place an order.
#[command(output = BenchOrderPlaced)]
pub struct PlaceBenchOrder {
    order_id: String,
}

#[command_handler]
async fn place_bench_order(cmd: PlaceBenchOrder) -> Result<BenchOrderPlaced, NoRejection> {
    Ok(BenchOrderPlaced {
        order_id: cmd.order_id,
        amount: 99.5,
    })
}

/// The read model: one hash per order.
#[projection(hash = "benchproj:{order_id}")]
#[derive(Debug)]
pub struct BenchOrder {
    #[set(from = BenchOrderPlaced)]
    order_id: String,
    #[set(from = BenchOrderPlaced)]
    amount: f64,
}

/// Figures of the command → projection scenario.
pub struct ProjectionFigures {
    pub commands: u64,
    pub commands_per_sec: f64,
    pub samples: usize,
    pub p50_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
}

/// Dispatches `n` commands one after another and waits until the projection applied them
/// all (throughput); then `samples` more, each followed by reads of its hash until it
/// appears (latency). Checks every hash exists and nothing was dead-lettered.
pub async fn run(url: &str, n: u64, samples: u64) -> anyhow::Result<ProjectionFigures> {
    let namespace = support::namespace("projection");
    let transport = support::connect(url, &namespace, 2 * (n + samples) + 1000).await?;
    // Read models under the namespace too, so that deleting it deletes them.
    let prefix = format!("{namespace}:read:");
    let app = App::builder("bench")
        .redis(&transport)
        .read_model_prefix(&prefix)
        .command(place_bench_order)
        .projection(BenchOrder::projection())
        .start()
        .await?;
    let applied = || {
        app.projections()
            .iter()
            .map(|p| p.stats().acked())
            .sum::<u64>()
    };
    let id = |i: u64| format!("{namespace}-{i:08}");

    let start = Instant::now();
    for i in 0..n {
        app.dispatch(PlaceBenchOrder { order_id: id(i) }).await?;
    }
    support::wait_until("projection", STALL, applied, || applied() >= n).await?;
    let elapsed = start.elapsed();

    let mut latencies = Vec::with_capacity(samples as usize);
    for i in n..n + samples {
        let order_id = id(i);
        let t0 = Instant::now();
        app.dispatch(PlaceBenchOrder {
            order_id: order_id.clone(),
        })
        .await?;
        loop {
            if let Some(order) = BenchOrder::load(app.read_models(), &order_id).await? {
                ensure!(
                    order.order_id == order_id && order.amount == 99.5,
                    "projection: wrong read model {order:?}"
                );
                break;
            }
            ensure!(
                t0.elapsed() < STALL,
                "projection: {order_id} never appeared"
            );
            tokio::task::yield_now().await;
        }
        latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    latencies.sort_unstable();

    let total = n + samples;
    support::wait_until("projection", STALL, applied, || applied() >= total).await?;
    let (handled, dead) = app.projections().iter().fold((0, 0), |(h, d), p| {
        (h + p.stats().handled(), d + p.stats().dead_lettered())
    });
    let models = support::scan_keys(url, &format!("{prefix}benchproj:*"), false).await?;
    app.shutdown().await?;
    transport.delete_namespace().await?;
    ensure!(
        handled == total && dead == 0 && models == total,
        "projection: {handled} of {total} events applied, {dead} dead-lettered, {models} read models"
    );
    Ok(ProjectionFigures {
        commands: n,
        commands_per_sec: n as f64 / elapsed.as_secs_f64(),
        samples: latencies.len(),
        p50_us: quantile(&latencies, 0.50),
        p99_us: quantile(&latencies, 0.99),
        p999_us: quantile(&latencies, 0.999),
    })
}
