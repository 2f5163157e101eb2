//! eventbus on a real Redis Cluster (3 masters, 3 replicas, started by the test): a
//! partitioned topic spread over the masters, keyed events consumed once and in order per
//! key by consumers sharing the partitions, and publishing and consuming that go on by
//! themselves after a master is killed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod partitions_support;

use std::collections::BTreeSet;
use std::time::Duration;

use eventbus_core::transport::{StreamAdmin, Topic};
use eventbus_core::StreamTransport;
use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::{eventually, RedisCluster};
use partitions_support::*;

const WAIT: Duration = Duration::from_secs(60);

async fn connect(cluster: &RedisCluster, namespace: &str) -> RedisTransport {
    let config = RedisConfig::new(&cluster.url())
        .unwrap()
        .namespace(namespace);
    assert!(config.is_cluster());
    RedisTransport::connect(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_partition_topic_spreads_over_the_masters_and_keyed_events_arrive_once_in_order() {
    let cluster = RedisCluster::start().await;
    let transport = connect(&cluster, "clustertest").await;
    let topic = Topic::of_type("Cluster.Orders");
    assert_eq!(
        transport.create_topic("Cluster.Orders", 6).await.unwrap(),
        6
    );

    let seen = Seen::default();
    let mut consumers = Vec::new();
    for name in ["c1", "c2", "c3"] {
        consumers.push(consumer(&transport, "Cluster.Orders", "g", name, &seen).await);
    }
    wait_for_owners(&transport, "g", "Cluster.Orders", 3).await;
    let ids = publish(&transport, &keyed_events("Cluster.Orders", 20, 0, 30)).await;
    assert_eq!(partitions_of(&ids), (0..6).collect());
    let streams = transport.partition_streams(&topic).await.unwrap();
    assert_eq!(streams.len(), 6);
    let homes: Vec<Option<u16>> = streams.iter().map(|k| cluster.owner_of(k)).collect();
    let masters: BTreeSet<u16> = homes.iter().flatten().copied().collect();
    assert_eq!(
        masters.len(),
        3,
        "6 partitions over the 3 masters: {streams:?} on {homes:?}"
    );
    wait_for(&seen, 600, WAIT).await;
    for c in consumers {
        c.shutdown().await.unwrap();
    }
    let per_consumer = assert_once_in_order(&seen, 20, 30);
    assert_eq!(per_consumer.len(), 3, "{per_consumer:?}");

    // Every partition's group is caught up, on whichever master it lives.
    let lag = transport.lag_of(&topic, "g").await.unwrap().unwrap();
    assert_eq!((lag.lag, lag.pending), (Some(0), 0), "{lag:?}");
    assert!(transport.settled(&topic, "g", &ids).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_go_on_after_a_master_is_killed() {
    let mut cluster = RedisCluster::start().await;
    let transport = connect(&cluster, "failover").await;
    let topic = Topic::of_type("Cluster.Failover");
    transport.create_topic("Cluster.Failover", 6).await.unwrap();
    let seen = Seen::default();
    let consumers = vec![
        consumer(&transport, "Cluster.Failover", "g", "c1", &seen).await,
        consumer(&transport, "Cluster.Failover", "g", "c2", &seen).await,
    ];
    wait_for_owners(&transport, "g", "Cluster.Failover", 2).await;

    // A publisher that retries what failed, as a service would; one key per round.
    let keys = 6;
    let retries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publish_round = |seq: u64| {
        let (transport, retries) = (transport.clone(), retries.clone());
        async move {
            let events = keyed_events("Cluster.Failover", keys, seq, 1);
            let started = tokio::time::Instant::now();
            loop {
                match transport.publish(&events).await {
                    Ok(_) => return started.elapsed(),
                    Err(e) => {
                        retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        eprintln!("publish {seq} failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                }
            }
        }
    };
    for seq in 0..50 {
        publish_round(seq).await;
    }
    wait_for(&seen, 50 * keys, WAIT).await;
    let streams = transport.partition_streams(&topic).await.unwrap();
    let master = cluster
        .owner_of(&streams[0])
        .expect("a master holds partition 0");
    cluster.kill(master);
    let killed = tokio::time::Instant::now();
    let mut longest = Duration::ZERO;
    for seq in 50..100 {
        longest = longest.max(publish_round(seq).await);
    }
    let published = killed.elapsed();
    eventually(WAIT, "every event after the failover", || async {
        let seen = seen.lock().unwrap();
        let distinct: BTreeSet<(&String, u64)> = seen.iter().map(|(_, k, s)| (k, *s)).collect();
        distinct.len() == 100 * keys
    })
    .await;
    let handled = killed.elapsed();
    assert!(
        cluster.owner_of(&streams[0]).is_some_and(|p| p != master),
        "the replica took over partition 0"
    );
    let seen = seen.lock().unwrap().clone();
    let duplicates = seen.len() - 100 * keys;
    println!(
        "failover: master {master} killed; the next 50 publishes ({} events) took \
         {published:?} (longest wait {longest:?}); all {} events handled {handled:?} after \
         the kill; {duplicates} handled twice",
        50 * keys,
        100 * keys
    );
    // Only a retried publish may duplicate: the shares of its batch that made it before the
    // error are appended again (a publish is atomic per partition, not across them).
    let retries = retries.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        duplicates <= retries * keys,
        "{duplicates} duplicates from {retries} retried publishes"
    );
    for c in consumers {
        c.shutdown().await.unwrap();
    }
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
