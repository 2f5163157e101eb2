//! The reliable Streams bus end to end: an order service publishes, a billing service
//! handles and emits follow-up events (correlated), a flaky shipping service retries and
//! dead-letters, and the lag report shows where everything stands.
//!
//! ```text
//! cargo run --example streams_demo                # $REDIS_URL, else a local Redis, else in memory
//! cargo run --example streams_demo -- --in-memory # in memory even if a Redis answers
//! cargo run --example streams_demo -- --keep      # keep the keys, print their namespace
//! ```
//!
//! Every key it writes is in its own namespace, deleted at the end (also when it fails)
//! unless `--keep`.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use eventbus_core::{event, Backoff, Context, Envelope, EventBus, HandlerError, StartFrom};

#[derive(Parser)]
#[command(about = "eventbus Streams demo")]
struct Args {
    #[command(flatten)]
    backend: common::Backend,
    /// Orders to publish.
    #[arg(long, default_value_t = 5)]
    orders: u32,
}

/// An order was placed.
#[event(name = "OrderCreated")]
#[derive(Debug, Clone)]
struct OrderCreated {
    order_id: String,
    customer_id: String,
    total: f64,
}

/// Billing charged an order.
#[event(name = "PaymentCompleted")]
#[derive(Debug, Clone)]
struct PaymentCompleted {
    order_id: String,
    amount: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let args = Args::parse();
    let scratch = args.backend.connect("streams_demo", |c| c).await?;
    let outcome = scratch.until_interrupted(run(&args, &scratch)).await;
    scratch.finish(outcome).await
}

async fn run(args: &Args, scratch: &common::Scratch) -> anyhow::Result<()> {
    let transport = scratch.streams();
    println!("backend: {}", scratch.describe());

    let orders = EventBus::from_arc(transport.clone(), "order-service");
    let billing_bus = EventBus::from_arc(transport.clone(), "billing-service");
    let shipping_bus = EventBus::from_arc(transport.clone(), "shipping-service");

    let billing = billing_bus
        .subscribe()
        .start_from(StartFrom::Beginning)
        .on(|e: Envelope<OrderCreated>, ctx: Context| async move {
            println!(
                "billing   <- OrderCreated {} ({} for {:.2}) correlation={}",
                e.data.order_id,
                e.data.customer_id,
                e.data.total,
                ctx.correlation_id()
            );
            ctx.publish(PaymentCompleted {
                order_id: e.data.order_id.clone(),
                amount: e.data.total,
            })
            .await?;
            Ok(())
        })
        .start()
        .await?;

    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let shipping = shipping_bus
        .subscribe()
        .start_from(StartFrom::Beginning)
        .max_deliveries(3)
        .retry_backoff(Backoff::constant(Duration::from_millis(50)))
        .on(move |e: Envelope<PaymentCompleted>| {
            let a = a.clone();
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                if e.data.amount > 500.0 {
                    println!(
                        "shipping  <- PaymentCompleted {}: carrier refuses (will retry)",
                        e.data.order_id
                    );
                    return Err(HandlerError::retryable(
                        "carrier refuses parcels over 500.00",
                    ));
                }
                println!(
                    "shipping  <- PaymentCompleted {} caused by {}",
                    e.data.order_id,
                    e.causation_id.as_deref().unwrap_or("?")
                );
                Ok(())
            }
        })
        .start()
        .await?;

    // Whatever happens, both subscriptions stop before the namespace is deleted.
    let outcome = async {
        for i in 1..=args.orders {
            let total = if i == args.orders {
                999.0
            } else {
                25.0 * f64::from(i)
            };
            let order = OrderCreated {
                order_id: format!("ord_{i}"),
                customer_id: format!("cust_{}", i % 2),
                total,
            };
            let id = orders.publish(order).await?;
            println!("orders    -> OrderCreated ord_{i} (stream id {id})");
        }

        // Wait for the flow to settle: every payment handled or dead-lettered.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while shipping.stats().handled() + shipping.stats().dead_lettered() < u64::from(args.orders)
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "demo did not settle in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        println!("\nlag:");
        for lag in transport.lag(None).await? {
            println!(
                "  {:<18} {:<28} lag={:<7} pending={}",
                lag.topic.to_string(),
                lag.group,
                lag.lag.map_or("unknown".to_string(), |l| l.to_string()),
                lag.pending
            );
        }
        println!("\ndead letters of shipping-service:");
        for dead in transport
            .dead_letters("shipping-service-consumers", 10)
            .await?
        {
            println!(
                "  {} from {}:{} after {} deliveries: {}",
                dead.id,
                dead.origin_topic,
                dead.origin_id,
                dead.reason.delivery_count,
                dead.reason.error
            );
        }
        // One trace per flow: every event of a correlation id carries the same trace id
        // (W3C `traceparent` in its metadata), from the order through billing to shipping.
        let flows = traces_per_flow(&transport).await?;
        let one_each = flows.values().all(|traces| traces.len() == 1);
        println!(
            "\ntraces: {} flows (correlation ids), each carried by one trace id: {one_each}",
            flows.len()
        );
        anyhow::ensure!(one_each, "a flow spans several traces: {flows:?}");
        println!(
            "\nbilling handled {}; shipping handled {}, dead-lettered {} ({} handler calls)",
            billing.stats().handled(),
            shipping.stats().handled(),
            shipping.stats().dead_lettered(),
            attempts.load(Ordering::SeqCst)
        );
        anyhow::Ok(())
    }
    .await;
    let billing = billing.shutdown().await.context("billing shutdown");
    let shipping = shipping.shutdown().await.context("shipping shutdown");
    outcome?;
    billing?;
    shipping?;
    Ok(())
}

/// The trace ids of each correlation id's events, read back from the global stream.
async fn traces_per_flow(
    transport: &std::sync::Arc<dyn eventbus_core::StreamTransport>,
) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    use eventbus_core::telemetry::TraceContext;
    use eventbus_core::transport::{ConsumerSpec, Topic};
    let group = format!("trace-audit-{}", uuid::Uuid::new_v4().simple());
    transport
        .ensure_group(&Topic::All, &group, StartFrom::Beginning)
        .await?;
    let consumer = transport
        .consumer(ConsumerSpec {
            group,
            consumer: "audit".into(),
            topics: vec![Topic::All],
        })
        .await?;
    let mut flows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut empty = 0;
    while empty < 3 {
        let read = consumer.read(500, Duration::from_millis(100)).await?;
        empty = if read.is_empty() { empty + 1 } else { 0 };
        for event in read.into_iter().filter_map(|d| d.event.ok()) {
            let trace = TraceContext::from_metadata(&event.metadata)
                .map_or_else(|| "(none)".to_owned(), |t| t.trace_id_hex());
            // A flow's first event has no correlation id: its own id is the flow's.
            let flow = event.correlation_id.unwrap_or(event.event_id);
            flows.entry(flow).or_default().insert(trace);
        }
    }
    consumer.close().await?;
    Ok(flows)
}
