//! The reliable Streams bus end to end: an order service publishes, a billing service
//! handles and emits follow-up events (correlated), a flaky shipping service retries and
//! dead-letters, and the lag report shows where everything stands.
//!
//! ```text
//! cargo run --example streams_demo                # against $REDIS_URL (default local)
//! cargo run --example streams_demo -- --in-memory # no Redis needed
//! ```

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::transport::StreamTransport;
use eventbus_core::{event, Backoff, Context, Envelope, EventBus, HandlerError, StartFrom};
use eventbus_redis::{RedisConfig, RedisTransport};

#[derive(Parser)]
#[command(about = "eventbus Streams demo")]
struct Args {
    /// Run on the in-memory backend instead of Redis.
    #[arg(long)]
    in_memory: bool,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    url: String,
    /// Orders to publish.
    #[arg(long, default_value_t = 5)]
    orders: u32,
    /// Keep the demo's keys in Redis afterwards (to look at them with the `eventbus` CLI).
    #[arg(long)]
    keep: bool,
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
    let namespace = format!("demo-{}", std::process::id());
    let mut redis: Option<RedisTransport> = None;
    let transport: Arc<dyn StreamTransport> = if args.in_memory {
        Arc::new(MemoryTransport::new())
    } else {
        let config = RedisConfig::new(&args.url)?.namespace(namespace.clone());
        {
            let t = common::connect_or_exit(config).await;
            redis = Some(t.clone());
            Arc::new(t)
        }
    };
    println!("backend: {} (namespace {namespace})", transport.describe());

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
    while shipping.stats().handled() + shipping.stats().dead_lettered() < u64::from(args.orders) {
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
    println!(
        "\nbilling handled {}; shipping handled {}, dead-lettered {} ({} handler calls)",
        billing.stats().handled(),
        shipping.stats().handled(),
        shipping.stats().dead_lettered(),
        attempts.load(Ordering::SeqCst)
    );
    billing.shutdown().await.context("billing shutdown")?;
    shipping.shutdown().await.context("shipping shutdown")?;
    if let Some(redis) = redis {
        if args.keep {
            println!(
                "kept namespace {namespace}: try `cargo run -p eventbus-cli -- \
                 --namespace {namespace} lag`"
            );
        } else {
            redis.delete_namespace().await?;
        }
    }
    Ok(())
}
