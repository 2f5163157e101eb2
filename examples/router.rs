//! The reference article's event router, on Pub/Sub and on Streams: every `Order.*` event
//! to one handler, high-value `Order.Created` (total > 1000) first at priority 10, and
//! `Payment.Failed` at priority 5.
//!
//! ```text
//! cargo run --example router                # $REDIS_URL, else a local Redis, else in memory
//! cargo run --example router -- --in-memory # in memory even if a Redis answers
//! cargo run --example router -- --keep      # keep the keys, print their namespace
//! ```
//!
//! Every key it writes is in its own namespace, deleted at the end (also when it fails)
//! unless `--keep`; its Pub/Sub channels are `{namespace}:events:{type}` rather than the
//! article's `events:{type}`, so it doesn't disturb other services on the server.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use eventbus_core::pubsub::memory::MemoryPubSub;
use eventbus_core::{
    route, Envelope, EventBus, HandlerError, PubSubBus, PubSubTransport, Router, Rule,
};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "eventbus router demo: the article's routing on Pub/Sub and on Streams")]
struct Args {
    #[command(flatten)]
    backend: common::Backend,
}

/// Route all Order events.
#[route("Order.*")]
async fn handle_order_events(event: Envelope<Value>) -> Result<(), HandlerError> {
    println!("  Order event: {} {}", event.event_type, event.data);
    Ok(())
}

fn high_value(event: &Envelope<Value>) -> bool {
    event
        .data
        .get("total")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        > 1000.0
}

/// Route with filter: only high-value orders, first.
#[route("Order.Created", priority = 10, filter = high_value)]
async fn handle_high_value_order(event: Envelope<Value>) -> Result<(), HandlerError> {
    println!("  High value order: {}", event.data);
    Ok(())
}

fn router() -> anyhow::Result<Router> {
    let mut router = Router::new();
    router.add(handle_order_events)?;
    router.add(handle_high_value_order)?;
    // The same thing by plain code.
    router.add(
        Rule::new("Payment.Failed", |event: Envelope<Value>| async move {
            println!("  Payment failed: {}", event.data);
            Ok(())
        })?
        .priority(5),
    )?;
    router.fallback(|event: Envelope<Value>| async move {
        println!("  (unrouted: {})", event.event_type);
        Ok(())
    });
    Ok(router)
}

fn events() -> Vec<Envelope<Value>> {
    vec![
        Envelope::new(
            "Order.Created",
            1,
            "shop",
            json!({"order_id": "123", "total": 1500}),
        ),
        Envelope::new(
            "Order.Created",
            1,
            "shop",
            json!({"order_id": "456", "total": 50}),
        ),
        Envelope::new(
            "Payment.Failed",
            1,
            "payments",
            json!({"order_id": "789", "reason": "insufficient_funds"}),
        ),
    ]
}

async fn wait_for(router: &Router, routed: u64) {
    for _ in 0..500 {
        if router.stats().routed() >= routed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("warning: not every event was routed in time");
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
    // Channels are `events:{type}` as in the article; this demo uses its own prefix so it
    // doesn't disturb other services on the server.
    let scratch = args
        .backend
        .connect("router", |config| {
            let prefix = format!("{}:events:", config.key_namespace());
            config.channel_prefix(prefix)
        })
        .await?;
    let outcome = scratch.until_interrupted(run(&scratch)).await;
    scratch.finish(outcome).await
}

async fn run(scratch: &common::Scratch) -> anyhow::Result<()> {
    let streams = scratch.streams();
    let pubsub: Arc<dyn PubSubTransport> = match scratch.redis() {
        Some(t) => Arc::new(t.pubsub()),
        None => Arc::new(MemoryPubSub::new()),
    };
    println!("backend: {}", scratch.describe());

    println!("Pub/Sub (at-most-once: only live subscribers hear it):");
    let pubsub_router = router()?;
    let bus = PubSubBus::from_arc(pubsub, "router-demo");
    let subscription = bus.subscribe().route(&pubsub_router).start().await?;
    for event in events() {
        bus.publish_raw(&event).await?;
    }
    wait_for(&pubsub_router, 3).await;
    subscription.shutdown().await;

    println!("Streams (at-least-once: acked when every matching rule succeeded):");
    let streams_router = router()?;
    let bus = EventBus::from_arc(streams, "router-demo");
    let subscription = bus.subscribe().route(&streams_router).start().await?;
    bus.publish_raw(&events()).await?;
    wait_for(&streams_router, 3).await;
    subscription.shutdown().await?;
    println!(
        "routed {} events on each bus",
        streams_router.stats().routed()
    );
    Ok(())
}
