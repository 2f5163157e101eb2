//! The Pub/Sub bus on Redis and in memory: broadcast semantics, patterns, handler isolation,
//! resubscription, and wire interop with the reference article's Python `PubSubEventBus`
//! (raw `PUBLISH`/`SUBSCRIBE` with its JSON, as that code does it).

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::{event, Backoff, Envelope, HandlerError, PubSubBus};
use eventbus_redis::{RedisConfig, RedisPubSub};
use eventbus_tests::{
    all_three, eventually, raw_connection, redis_url, Backend, RedisCluster, RedisServer,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

#[event(name = "PaymentCompleted")]
#[derive(Debug, Clone, PartialEq)]
struct PaymentCompleted {
    order_id: String,
    amount: f64,
}

type Seen = Arc<Mutex<Vec<String>>>;

fn push(seen: &Seen, line: impl Into<String>) {
    seen.lock().unwrap().push(line.into());
}

fn lines(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap().clone()
}

// On a cluster: sharded Pub/Sub (`SSUBSCRIBE`/`SPUBLISH`) for event types, plain
// `PSUBSCRIBE`/`PUBLISH` for patterns.
all_three!(
    typed_raw_and_pattern_handlers,
    subscriber_that_is_down_misses_events,
    handler_error_or_panic_does_not_affect_others,
);

async fn typed_raw_and_pattern_handlers(backend: Backend) {
    let transport = backend.pubsub().await;
    let order_bus = PubSubBus::from_arc(transport.clone(), "order-service");
    let seen = Seen::default();
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let sub = order_bus
        .subscribe()
        .on(move |e: Envelope<PaymentCompleted>| {
            push(&s1, format!("typed:{}:{}", e.data.order_id, e.source));
            async { Ok(()) }
        })
        .on_raw("Order.Created", move |e: Envelope<Value>| {
            push(&s2, format!("raw:{}", e.data["order_id"]));
            async { Ok(()) }
        })
        .on_pattern("Order.**", move |e: Envelope<Value>| {
            push(&s3, format!("pattern:{}", e.event_type));
            async { Ok(()) }
        })
        .unwrap()
        .start()
        .await
        .unwrap();

    let payment_bus = PubSubBus::from_arc(transport, "payment-service");
    let event = Envelope::from_event(
        "payment-service",
        PaymentCompleted {
            order_id: "ord_123".into(),
            amount: 99.99,
        },
    )
    .with_correlation_id("corr-1");
    assert_eq!(
        payment_bus.publish_envelope(event.clone()).await.unwrap(),
        1
    );
    let raw = |t: &str| Envelope::new(t, 1, "shop", json!({"order_id": "o1"}));
    // Exact channel and pattern both match: two deliveries to one subscription. (On a
    // cluster the pattern's copy is counted only when its subscriber is on the node that
    // took the `PUBLISH`: the broadcast to other nodes is not counted.)
    let receivers = payment_bus
        .publish_raw(&raw("Order.Created"))
        .await
        .unwrap();
    if backend.is_cluster() {
        assert!((1..=2).contains(&receivers), "{receivers}");
    } else {
        assert_eq!(receivers, 2);
    }
    payment_bus
        .publish_raw(&raw("Order.Item.Added"))
        .await
        .unwrap();
    payment_bus
        .publish_raw(&raw("Orders.Created"))
        .await
        .unwrap();

    eventually(WAIT, "four handler calls", || async {
        lines(&seen).len() >= 4
    })
    .await;
    let mut got = lines(&seen);
    got.sort();
    assert_eq!(
        got,
        [
            "pattern:Order.Created",
            "pattern:Order.Item.Added",
            "raw:\"o1\"",
            "typed:ord_123:payment-service"
        ]
    );
    assert_eq!(sub.stats().received(), 3);
    assert_eq!(sub.stats().handled(), 4);
    sub.shutdown().await;
}

async fn subscriber_that_is_down_misses_events(backend: Backend) {
    let transport = backend.pubsub().await;
    let bus = PubSubBus::from_arc(transport, "svc");
    let payment = |id: &str| PaymentCompleted {
        order_id: id.into(),
        amount: 1.0,
    };
    assert_eq!(
        bus.publish(payment("before")).await.unwrap(),
        0,
        "nobody listens"
    );
    let seen = Seen::default();
    let s = seen.clone();
    let sub = bus
        .subscribe()
        .on(move |e: Envelope<PaymentCompleted>| {
            push(&s, e.data.order_id);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    bus.publish(payment("during")).await.unwrap();
    eventually(WAIT, "the live event", || async {
        !lines(&seen).is_empty()
    })
    .await;
    sub.shutdown().await;
    // The server notices the closed connection asynchronously.
    eventually(WAIT, "no subscriber left", || async {
        bus.publish(payment("after")).await.unwrap() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(lines(&seen), ["during"], "at-most-once: nothing stored");
}

async fn handler_error_or_panic_does_not_affect_others(backend: Backend) {
    let transport = backend.pubsub().await;
    let bus = PubSubBus::from_arc(transport, "svc");
    let seen = Seen::default();
    let s = seen.clone();
    let sub = bus
        .subscribe()
        .on(|e: Envelope<PaymentCompleted>| async move {
            if e.data.order_id == "panic" {
                panic!("handler bug");
            }
            Ok(())
        })
        .on(|_e: Envelope<PaymentCompleted>| async { Err(HandlerError::retryable("always fails")) })
        .on(move |e: Envelope<PaymentCompleted>| {
            push(&s, e.data.order_id);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    for id in ["panic", "next"] {
        bus.publish(PaymentCompleted {
            order_id: id.into(),
            amount: 1.0,
        })
        .await
        .unwrap();
    }
    eventually(
        WAIT,
        "both events handled by the healthy handler",
        || async { lines(&seen).len() == 2 },
    )
    .await;
    assert_eq!(lines(&seen), ["panic", "next"]);
    assert_eq!(sub.stats().failed(), 3, "one panic, two errors");
    assert!(!sub.is_finished(), "the listener survives");
    sub.shutdown().await;
}

fn unique(name: &str) -> String {
    format!("{name}.{}", uuid::Uuid::new_v4().simple())
}

async fn default_pubsub() -> RedisPubSub {
    RedisPubSub::connect(RedisConfig::new(&redis_url()).unwrap())
        .await
        .unwrap()
}

/// A Python service (per the article) publishes; we receive.
#[tokio::test]
async fn receives_what_the_article_publishes() {
    let event_type = unique("PaymentCompleted");
    let bus = PubSubBus::new(default_pubsub().await, "order-service");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = bus
        .subscribe()
        .on_raw(event_type.clone(), move |e: Envelope<Value>| {
            let _ = tx.send(e);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    // `json.dumps(asdict(event))`, byte for byte as Python writes it.
    let message = format!(
        r#"{{"event_type": "{event_type}", "source": "payment-service", "data": {{"order_id": "ord_123", "amount": 99.99}}, "timestamp": 1700000000.123456, "correlation_id": null, "causation_id": null}}"#
    );
    let mut conn = raw_connection().await;
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(format!("events:{event_type}"))
        .arg(&message)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.event_type, event_type);
    assert_eq!(got.source, "payment-service");
    assert_eq!(got.data, json!({"order_id": "ord_123", "amount": 99.99}));
    assert_eq!(got.timestamp, 1700000000.123456);
    assert_eq!(got.correlation_id, None);
    assert_eq!(got.version, 1);
    assert!(
        !got.event_id.is_empty(),
        "a fresh id is generated on receipt"
    );

    // Not an event: dropped and counted, the listener goes on.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("events:{event_type}"))
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(WAIT, "malformed counted", || async {
        sub.stats().malformed() == 1
    })
    .await;
    sub.shutdown().await;
}

/// We publish; a Python service (per the article) receives exactly its six keys.
#[tokio::test]
async fn publishes_what_the_article_reads() {
    let event_type = unique("OrderShipped");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("events:{event_type}"))
        .await
        .unwrap();

    let bus = PubSubBus::new(default_pubsub().await, "order-service");
    let event = Envelope::new(&event_type, 3, "ignored", json!({"order_id": "o9"}))
        .with_correlation_id("corr-9")
        .with_metadata("tenant", "t1");
    assert_eq!(bus.publish_raw(&event).await.unwrap(), 1);

    let mut messages = pubsub.into_on_message();
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_channel_name(), format!("events:{event_type}"));
    let json: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    let object = json.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "causation_id",
            "correlation_id",
            "data",
            "event_type",
            "source",
            "timestamp"
        ],
        "exactly the article's `Event(**event_data)` fields"
    );
    assert_eq!(json["event_type"], json!(event_type));
    assert_eq!(json["source"], json!("ignored"));
    assert_eq!(json["data"], json!({"order_id": "o9"}));
    assert!(json["timestamp"].is_f64());
    assert_eq!(json["correlation_id"], json!("corr-9"));
    assert_eq!(json["causation_id"], Value::Null);
}

/// `PSUBSCRIBE events:Order.*`, as a Python subscriber would, sees our publish.
#[tokio::test]
async fn article_pattern_subscriber_sees_our_events() {
    let domain = unique("Order");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(format!("events:{domain}.*"))
        .await
        .unwrap();
    let bus = PubSubBus::new(default_pubsub().await, "shop");
    bus.publish_raw(&Envelope::new(
        format!("{domain}.Created"),
        1,
        "shop",
        json!({}),
    ))
    .await
    .unwrap();
    let mut messages = pubsub.into_on_message();
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_channel_name(), format!("events:{domain}.Created"));
}

/// A bus on `pubsub` and a subscription that records the order ids of `PaymentCompleted`
/// and resubscribes quickly (50 ms to 500 ms backoff).
async fn resubscribing_payments(
    pubsub: RedisPubSub,
) -> (PubSubBus, Seen, eventbus_core::PubSubSubscription) {
    let bus = PubSubBus::new(pubsub, "svc");
    let seen = Seen::default();
    let s = seen.clone();
    let sub = bus
        .subscribe()
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .on(move |e: Envelope<PaymentCompleted>| {
            push(&s, e.data.order_id);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    (bus, seen, sub)
}

/// After `CLIENT KILL TYPE pubsub` the bus resubscribes (with backoff) and receives again.
#[tokio::test]
async fn resubscribes_after_the_connection_is_killed() {
    let server = RedisServer::start(&[]).await;
    let pubsub = RedisPubSub::connect(RedisConfig::new(&server.url()).unwrap())
        .await
        .unwrap();
    let (bus, seen, sub) = resubscribing_payments(pubsub).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    eventually(WAIT, "resubscribed", || async {
        sub.stats().subscribed() >= 2
    })
    .await;
    bus.publish(PaymentCompleted {
        order_id: "after-kill".into(),
        amount: 1.0,
    })
    .await
    .unwrap();
    eventually(WAIT, "event after resubscribing", || async {
        lines(&seen) == ["after-kill"]
    })
    .await;
    sub.shutdown().await;
}

/// The in-memory backend drops subscriptions the same way; the bus comes back.
#[tokio::test]
async fn resubscribes_after_a_memory_disconnect() {
    let backend = eventbus_core::pubsub::memory::MemoryPubSub::new();
    let bus = PubSubBus::new(backend.clone(), "svc");
    let seen = Seen::default();
    let s = seen.clone();
    let sub = bus
        .subscribe()
        .reconnect_backoff(Backoff::constant(Duration::from_millis(10)))
        .on(move |e: Envelope<PaymentCompleted>| {
            push(&s, e.data.order_id);
            async { Ok(()) }
        })
        .start()
        .await
        .unwrap();
    backend.disconnect_all();
    eventually(WAIT, "resubscribed", || async {
        sub.stats().subscribed() == 2
    })
    .await;
    bus.publish(PaymentCompleted {
        order_id: "back".into(),
        amount: 1.0,
    })
    .await
    .unwrap();
    eventually(WAIT, "event after resubscribing", || async {
        lines(&seen) == ["back"]
    })
    .await;
    sub.shutdown().await;
}

/// The port of the master serving sharded channel `channel` on `cluster`: the node that
/// takes an `SPUBLISH` (the others answer `MOVED`).
fn shard_owner(cluster: &RedisCluster, channel: &str) -> u16 {
    cluster
        .ports()
        .into_iter()
        .find(|port| {
            eventbus_tests::binaries::cli_command([
                "-p",
                &port.to_string(),
                "spublish",
                channel,
                "probe",
            ])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        })
        .expect("a master serves the channel")
}

/// On a cluster a subscription is sharded (`SSUBSCRIBE`, a RESP3 connection): when its
/// connection is killed, and when the master of its channel is SIGKILLed and its replica
/// takes over, the bus subscribes again (with backoff) and receives again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscription_survives_a_killed_connection_and_a_failover() {
    let mut cluster = RedisCluster::start().await;
    let channel = "events:PaymentCompleted";
    let owner = shard_owner(&cluster, channel);
    let pubsub = RedisPubSub::connect(RedisConfig::new(&cluster.url()).unwrap())
        .await
        .unwrap();
    let (bus, seen, sub) = resubscribing_payments(pubsub).await;
    // RESP3 subscribers are `normal` clients: kill the one with a sharded subscription.
    let list = eventbus_tests::binaries::cli_command(["-p", &owner.to_string(), "client", "list"])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|line| line.contains(" ssub=1 "))
        .filter_map(|line| {
            line.strip_prefix("id=")?
                .split(' ')
                .next()
                .map(String::from)
        })
        .collect();
    assert_eq!(ids.len(), 1, "one sharded subscriber: {ids:?}");
    let killed = eventbus_tests::binaries::cli_command([
        "-p",
        &owner.to_string(),
        "client",
        "kill",
        "id",
        &ids[0],
    ])
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&killed.stdout).trim(), "1");
    eventually(WAIT, "resubscribed", || async {
        sub.stats().subscribed() >= 2
    })
    .await;
    let publish_until_seen = |id: &'static str| {
        let (bus, seen) = (bus.clone(), seen.clone());
        async move {
            eventually(Duration::from_secs(30), id, || {
                let (bus, seen) = (bus.clone(), seen.clone());
                async move {
                    if lines(&seen).iter().any(|l| l == id) {
                        return true;
                    }
                    let _ = bus
                        .publish(PaymentCompleted {
                            order_id: id.into(),
                            amount: 1.0,
                        })
                        .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    lines(&seen).iter().any(|l| l == id)
                }
            })
            .await;
        }
    };
    publish_until_seen("after-kill").await;
    let subscribed = sub.stats().subscribed();
    cluster.kill(owner);
    publish_until_seen("after-failover").await;
    assert!(sub.stats().subscribed() > subscribed, "subscribed again");
    assert!(!sub.is_finished());
    sub.shutdown().await;
}
