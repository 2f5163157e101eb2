//! The namespace's settings, stored in Redis and followed by every client: a namespace that
//! turns the global stream off publishes to the type streams alone, and subscriptions to
//! all events (and the router on Streams) refuse to start with a clear error. On one Redis
//! and on a Redis Cluster.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::{event, Envelope, EventBus, Router, StreamAdmin, Topic};
use eventbus_redis::RedisTransport;
use eventbus_tests::{eventually, run_on_cluster, run_on_redis, Backend};
use serde_json::Value;

#[event(name = "SettingsPing")]
#[derive(Debug, Clone, PartialEq)]
struct Ping {
    n: u32,
}

#[test]
fn without_the_global_stream_redis() {
    run_on_redis("without_the_global_stream", without_the_global_stream);
}

#[test]
fn without_the_global_stream_cluster() {
    run_on_cluster("without_the_global_stream", without_the_global_stream);
}

/// The transport of a Redis backend.
fn redis(backend: &Backend) -> RedisTransport {
    match backend {
        Backend::Redis { transport, .. } => transport.clone(),
        Backend::Memory(_) => panic!("a Redis test"),
    }
}

/// Entries of `topic`'s stream(s), summed over partitions.
async fn length(transport: &RedisTransport, topic: &Topic) -> u64 {
    transport
        .stream_summary(topic)
        .await
        .unwrap()
        .map_or(0, |s| s.length)
}

async fn without_the_global_stream(backend: Backend) {
    let transport = redis(&backend);
    let client = transport.client();
    assert!(client.namespace_settings().await.unwrap().global_stream);

    client.set_global_stream(false).await.unwrap();
    // Another client of the namespace reads the setting from Redis.
    let other = RedisTransport::connect(transport.config().clone())
        .await
        .unwrap();
    assert!(
        !other
            .client()
            .namespace_settings()
            .await
            .unwrap()
            .global_stream
    );

    // Publishing writes the type stream only; a typed subscription gets every event.
    let bus = EventBus::new(other.clone(), "producer");
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let s = seen.clone();
    let typed = bus
        .subscribe()
        .group("typed")
        .on(move |e: Envelope<Ping>| {
            s.lock().unwrap().push(e.data.n);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();
    bus.publish(Ping { n: 1 }).await.unwrap();
    bus.publish_batch((2..=100).map(|n| Ping { n }))
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "typed subscription", || async {
        seen.lock().unwrap().len() == 100
    })
    .await;
    typed.shutdown().await.unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    assert_eq!(length(&other, &Topic::of_type("SettingsPing")).await, 100);
    assert_eq!(
        length(&other, &Topic::All).await,
        0,
        "the global stream stays empty"
    );

    // Everything that would read the global stream refuses, naming the setting.
    let Err(refused) = bus
        .subscribe()
        .group("auditor")
        .on_all(|_: Envelope<Value>| std::future::ready(Ok(())))
        .start()
        .await
    else {
        panic!("a subscription to all events must refuse to start");
    };
    let text = refused.to_string();
    assert!(
        text.contains("global stream") && text.contains("settings"),
        "{text}"
    );
    let mut router = Router::new();
    router
        .route("Settings.*", |_: Envelope<Value>| {
            std::future::ready(Ok(()))
        })
        .unwrap();
    let refused = bus
        .subscribe()
        .group("router")
        .route(&router)
        .start()
        .await
        .err();
    assert!(
        refused.is_some_and(|e| e.to_string().contains("global stream")),
        "the router on Streams must refuse to start"
    );
    assert!(other
        .tail(&Topic::All, eventbus_core::StartFrom::New)
        .await
        .is_err());
    assert!(
        other.lag(Some("auditor")).await.unwrap().is_empty(),
        "no group was created on the global stream"
    );

    // Back on: the next publish writes the global stream again.
    client.set_global_stream(true).await.unwrap();
    let fresh = RedisTransport::connect(transport.config().clone())
        .await
        .unwrap();
    EventBus::new(fresh.clone(), "producer")
        .publish(Ping { n: 101 })
        .await
        .unwrap();
    assert_eq!(length(&fresh, &Topic::All).await, 1);
}
