//! The event router on Streams, on Pub/Sub and in process, on Redis and in memory: the
//! reference article's usage example routes as the article intends.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::transport::StartFrom;
use eventbus_core::{route, Backoff, Envelope, EventBus, HandlerError, PubSubBus, Router, Rule};
use eventbus_tests::{all_three, both, eventually, Backend};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

fn high_value(e: &Envelope<Value>) -> bool {
    e.data.get("total").and_then(Value::as_f64).unwrap_or(0.0) > 1000.0
}

/// What the `#[route]` functions and rules saw, from every test of this file: each test's
/// events carry order ids of their own, so tests running in parallel don't mix.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(rule: &str, e: &Envelope<Value>) {
    let line = format!(
        "{rule}:{}:{}",
        e.event_type,
        e.data["order_id"].as_str().unwrap_or("?")
    );
    LOG.lock().unwrap().push(line);
}

/// The article's rules, the first two through `#[route]`, the third by plain code.
fn article_router() -> Router {
    /// Route all Order events.
    #[route("Order.*")]
    async fn handle_order_events(event: Envelope<Value>) -> Result<(), HandlerError> {
        record("order", &event);
        Ok(())
    }

    /// Route with filter: only high-value orders.
    #[route("Order.Created", priority = 10, filter = high_value)]
    async fn handle_high_value_order(event: Envelope<Value>) -> Result<(), HandlerError> {
        record("high-value", &event);
        Ok(())
    }

    let mut router = Router::new();
    router.add(handle_order_events).unwrap();
    router.add(handle_high_value_order).unwrap();
    router
        .add(
            Rule::new("Payment.Failed", |event: Envelope<Value>| async move {
                record("payment-failed", &event);
                Ok(())
            })
            .unwrap()
            .priority(5),
        )
        .unwrap();
    router
}

/// The article's three events (order ids tagged with `tag`), after one that is not an
/// `Order.*` event: `*` is one segment (the article's regex took it).
fn article_events(tag: &str) -> Vec<Envelope<Value>> {
    vec![
        Envelope::new(
            "Order.Item.Added",
            1,
            "shop",
            json!({"order_id": format!("999-{tag}")}),
        ),
        Envelope::new(
            "Order.Created",
            1,
            "shop",
            json!({"order_id": format!("123-{tag}"), "total": 1500}),
        ),
        Envelope::new(
            "Order.Created",
            1,
            "shop",
            json!({"order_id": format!("456-{tag}"), "total": 50}),
        ),
        Envelope::new(
            "Payment.Failed",
            1,
            "payments",
            json!({"order_id": format!("789-{tag}"), "reason": "insufficient_funds"}),
        ),
    ]
}

/// What the article intends, per event in priority order.
fn assert_article_routing(tag: &str) {
    let lines: Vec<String> = LOG
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.ends_with(&format!("-{tag}")))
        .cloned()
        .collect();
    let of = |id: &str| -> Vec<String> {
        let suffix = format!(":{id}-{tag}");
        lines
            .iter()
            .filter(|l| l.ends_with(&suffix))
            .map(|l| l.trim_end_matches(&format!("-{tag}")).to_string())
            .collect()
    };
    assert_eq!(
        of("123"),
        ["high-value:Order.Created:123", "order:Order.Created:123"]
    );
    assert_eq!(of("456"), ["order:Order.Created:456"]);
    assert_eq!(of("789"), ["payment-failed:Payment.Failed:789"]);
    assert!(of("999").is_empty(), "{lines:?}");
    assert_eq!(lines.len(), 4, "{lines:?}");
}

fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

both!(
    article_routing_on_streams,
    failing_rule_is_retried_without_rerunning_the_others,
    failing_rule_dead_letters_with_its_name,
);

// On a cluster a router on Pub/Sub hears its events through plain `PSUBSCRIBE`: every
// publish there also sends a `PUBLISH`, which the cluster broadcasts.
all_three!(article_routing_on_pubsub);

async fn article_routing_on_streams(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "router-service");
    let tag = tag();
    let router = article_router();
    let sub = bus
        .subscribe()
        .start_from(StartFrom::New)
        .route(&router)
        .start()
        .await
        .unwrap();
    bus.publish_raw(&article_events(&tag)).await.unwrap();
    eventually(WAIT, "every entry acked", || async {
        sub.stats().acked() == 4
    })
    .await;
    assert_article_routing(&tag);
    assert_eq!(router.stats().routed(), 3);
    assert_eq!(router.stats().unrouted(), 1);
    sub.shutdown().await.unwrap();
}

async fn article_routing_on_pubsub(backend: Backend) {
    let bus = PubSubBus::from_arc(backend.pubsub().await, "router-service");
    let tag = tag();
    let router = article_router();
    let sub = bus.subscribe().route(&router).start().await.unwrap();
    for event in article_events(&tag) {
        bus.publish_raw(&event).await.unwrap();
    }
    // Messages arrive in publish order, so `Order.Item.Added` (first) has been seen, and
    // dropped by the exact match (Redis's glob `Order.*` delivers it), when three are routed.
    eventually(WAIT, "three events routed", || async {
        router.stats().routed() == 3
    })
    .await;
    assert_article_routing(&tag);
    assert_eq!(router.stats().unrouted(), 0);
    assert_eq!(sub.stats().failed(), 0);
    sub.shutdown().await;
}

async fn failing_rule_is_retried_without_rerunning_the_others(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "router-retry");
    let first = Arc::new(AtomicU32::new(0));
    let flaky = Arc::new(AtomicU32::new(0));
    let mut router = Router::new();
    let f = first.clone();
    router
        .add(
            Rule::new("Order.*", move |_e: Envelope<Value>| {
                f.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            })
            .unwrap()
            .priority(10),
        )
        .unwrap();
    let fl = flaky.clone();
    router
        .route("Order.Created", move |_e: Envelope<Value>| {
            let attempt = fl.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt == 0 {
                    Err(HandlerError::retryable("warehouse offline"))
                } else {
                    Ok(())
                }
            }
        })
        .unwrap();
    let sub = bus
        .subscribe()
        .retry_backoff(Backoff::constant(Duration::from_millis(20)))
        .route(&router)
        .start()
        .await
        .unwrap();
    bus.publish_raw(&[Envelope::new("Order.Created", 1, "shop", json!({}))])
        .await
        .unwrap();
    eventually(WAIT, "acked after the retry", || async {
        sub.stats().acked() == 1
    })
    .await;
    assert_eq!(flaky.load(Ordering::SeqCst), 2);
    assert_eq!(
        first.load(Ordering::SeqCst),
        1,
        "the rule that succeeded ran once"
    );
    assert_eq!(sub.stats().failed_attempts(), 1);
    assert_eq!(sub.stats().dead_lettered(), 0);
    sub.shutdown().await.unwrap();
}

async fn failing_rule_dead_letters_with_its_name(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "router-dlq");
    let mut router = Router::new();
    router
        .add(
            Rule::new("Payment.*", |_e: Envelope<Value>| async {
                Err(HandlerError::retryable("ledger down"))
            })
            .unwrap()
            .name("ledger"),
        )
        .unwrap();
    let sub = bus
        .subscribe()
        .max_deliveries(2)
        .retry_backoff(Backoff::constant(Duration::from_millis(10)))
        .route(&router)
        .start()
        .await
        .unwrap();
    bus.publish_raw(&[
        Envelope::new("Payment.Failed", 1, "payments", json!({"order_id": "789"})),
        Envelope::new("Stock.Reserved", 1, "stock", json!({})),
    ])
    .await
    .unwrap();
    eventually(WAIT, "one dead letter, both settled", || async {
        sub.stats().dead_lettered() == 1 && sub.stats().acked() == 2
    })
    .await;
    let dead = bus
        .transport()
        .dead_letters("router-dlq-consumers", 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason.error, "rule `ledger`: ledger down");
    assert_eq!(dead[0].reason.delivery_count, 2);
    assert_eq!(router.stats().unrouted(), 1);
    sub.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_process_dispatch_reports_what_happened() {
    let tag = tag();
    let mut router = article_router();
    let unrouted = Arc::new(Mutex::new(BTreeSet::new()));
    let u = unrouted.clone();
    router.fallback(move |e: Envelope<Value>| {
        u.lock().unwrap().insert(e.event_type);
        async { Ok(()) }
    });
    let mut routed = Vec::new();
    for event in article_events(&tag) {
        routed.push(router.dispatch(&event).await.is_routed());
    }
    assert_eq!(routed, [false, true, true, true]);
    assert_article_routing(&tag);
    assert_eq!(
        *unrouted.lock().unwrap(),
        BTreeSet::from(["Order.Item.Added".to_string()])
    );
}
