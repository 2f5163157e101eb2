//! eventbus on a real Redis Cluster (3 masters, 3 replicas, started by the test): the
//! connection (`redis+cluster://`), and a subscription per event type reading, handling and
//! acknowledging entries whose streams live on different masters.
//!
//! This is the first part of cluster support: single-stream steps. Publishing an event to
//! its type stream and the global stream in one step needs the partitioned, hash-tagged
//! layout that comes next.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::transport::{StartFrom, StreamAdmin, Topic};
use eventbus_core::{Envelope, EventBus, StreamTransport};
use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::{eventually, RedisCluster};
use serde_json::{json, Value};

const TYPES: [&str; 3] = ["Cluster.Alpha", "Cluster.Beta", "Cluster.Gamma"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_per_type_consumes_streams_spread_over_the_masters() {
    let cluster = RedisCluster::start().await;
    let config = RedisConfig::new(&cluster.url())
        .unwrap()
        .namespace("clustertest");
    assert!(config.is_cluster());
    let transport = RedisTransport::connect(config).await.unwrap();
    let keys: Vec<String> = TYPES
        .iter()
        .map(|t| transport.client().keys().stream(&Topic::of_type(*t)))
        .collect();

    let bus = EventBus::new(transport.clone(), "cluster-consumer");
    let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut subscriptions = Vec::new();
    for event_type in TYPES {
        let seen = seen.clone();
        subscriptions.push(
            bus.subscribe()
                .group(format!("g-{event_type}"))
                .start_from(StartFrom::Beginning)
                .on_raw(event_type, move |event: Envelope<Value>| {
                    let seen = seen.clone();
                    async move {
                        let n = event.data["n"].as_u64().unwrap_or(u64::MAX);
                        seen.lock().unwrap().push((event.event_type.clone(), n));
                        Ok(())
                    }
                })
                .start()
                .await
                .unwrap(),
        );
    }
    let mut appended = Vec::new();
    for event_type in TYPES {
        let events: Vec<Envelope<Value>> = (0..50)
            .map(|n| Envelope::new(event_type, 1, "cluster-test", json!({ "n": n })))
            .collect();
        let ids = transport
            .append(&Topic::of_type(event_type), &events)
            .await
            .unwrap();
        assert_eq!(ids.len(), 50);
        appended.push((event_type, ids));
    }
    let masters: BTreeSet<u16> = keys.iter().filter_map(|k| cluster.owner_of(k)).collect();
    assert!(
        masters.len() > 1,
        "the streams {keys:?} live on one master only"
    );
    eventually(Duration::from_secs(20), "150 events handled", || async {
        seen.lock().unwrap().len() >= 150
    })
    .await;
    for subscription in subscriptions {
        subscription.shutdown().await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 150, "each entry handled once");
    for event_type in TYPES {
        let order: Vec<u64> = seen
            .iter()
            .filter(|(t, _)| t == event_type)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            order,
            (0..50).collect::<Vec<_>>(),
            "{event_type} in stream order"
        );
    }
    // `lag` scans every master: all three groups, caught up.
    let lags = transport.lag(None).await.unwrap();
    for event_type in TYPES {
        let lag = lags
            .iter()
            .find(|l| l.group == format!("g-{event_type}"))
            .unwrap_or_else(|| panic!("no lag row for {event_type}: {lags:?}"));
        assert_eq!((lag.lag, lag.pending), (Some(0), 0), "{lag:?}");
    }
    // Nothing left pending: each group acknowledged every entry (on its stream's master).
    for (event_type, ids) in appended {
        assert!(transport
            .settled(
                &Topic::of_type(event_type),
                &format!("g-{event_type}"),
                &ids
            )
            .await
            .unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_goes_on_after_the_master_of_the_stream_is_killed() {
    let mut cluster = RedisCluster::start().await;
    let config = RedisConfig::new(&cluster.url())
        .unwrap()
        .namespace("failover");
    let transport = RedisTransport::connect(config).await.unwrap();
    let topic = Topic::of_type("Cluster.Failover");
    let bus = EventBus::new(transport.clone(), "failover-consumer");
    let seen: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let handled = seen.clone();
    let subscription = bus
        .subscribe()
        .start_from(StartFrom::Beginning)
        .configure(|o| {
            o.reconnect_backoff =
                eventbus_core::Backoff::new(Duration::from_millis(50), Duration::from_millis(500))
        })
        .on_raw("Cluster.Failover", move |event: Envelope<Value>| {
            let handled = handled.clone();
            async move {
                handled
                    .lock()
                    .unwrap()
                    .insert(event.data["n"].as_u64().unwrap_or(u64::MAX));
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();

    // A publisher that retries what failed, as a service would.
    let publish = |n: u64| {
        let (transport, topic) = (transport.clone(), topic.clone());
        async move {
            let event = Envelope::new("Cluster.Failover", 1, "test", json!({ "n": n }));
            let started = tokio::time::Instant::now();
            loop {
                match transport.append(&topic, std::slice::from_ref(&event)).await {
                    Ok(_) => return started.elapsed(),
                    Err(e) => {
                        eprintln!("append {n} failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                }
            }
        }
    };
    for n in 0..100 {
        publish(n).await;
    }
    eventually(Duration::from_secs(10), "the first 100", || async {
        seen.lock().unwrap().len() == 100
    })
    .await;
    let key = transport.client().keys().stream(&topic);
    let master = cluster.owner_of(&key).expect("a master holds the stream");
    cluster.kill(master);
    let killed = tokio::time::Instant::now();
    let mut longest = Duration::ZERO;
    for n in 100..200 {
        longest = longest.max(publish(n).await);
    }
    let published = killed.elapsed();
    eventually(
        Duration::from_secs(30),
        "all 200 after the failover",
        || async { seen.lock().unwrap().len() == 200 },
    )
    .await;
    println!(
        "failover: master {master} killed; the next 100 appends took {published:?} \
         (longest wait {longest:?}); all 200 handled {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        cluster.owner_of(&key).is_some_and(|p| p != master),
        "the replica took over the stream"
    );
    assert_eq!(*seen.lock().unwrap(), (0..200).collect(), "nothing lost");
    subscription.shutdown().await.unwrap();
}

#[test]
fn a_cluster_url_lists_its_nodes() {
    let config =
        RedisConfig::new("redis+cluster://user:secret@10.0.0.1:7000,10.0.0.2:7001").unwrap();
    assert!(config.is_cluster());
    let shown = format!("{config:?}");
    assert!(
        shown.contains("10.0.0.1:7000") && shown.contains("10.0.0.2:7001"),
        "{shown}"
    );
    assert!(!shown.contains("secret"), "{shown}");
    assert!(RedisConfig::new("rediss+cluster://10.0.0.1:7000")
        .unwrap()
        .is_tls());
    assert!(!RedisConfig::new("redis://10.0.0.1:7000")
        .unwrap()
        .is_cluster());
}
