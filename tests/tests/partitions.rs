//! Partitioned topics on a single node: keyed events spread over the partitions, the
//! consumers of a group share them, and every key's events arrive once and in order — also
//! while consumers join and leave.

#![allow(clippy::unwrap_used)] // Tests fail loudly.

mod partitions_support;

use std::time::Duration;

use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::NamespaceGuard;
use partitions_support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn transport(test: &str) -> (RedisTransport, NamespaceGuard) {
    let namespace = eventbus_tests::namespace(test);
    let guard = NamespaceGuard::new(namespace.clone());
    let url = eventbus_tests::redis_url();
    let transport = RedisTransport::connect(
        RedisConfig::new(&url)
            .unwrap()
            .namespace(namespace)
            .partition_lease(eventbus_tests::TEST_PARTITION_LEASE),
    )
    .await
    .unwrap();
    (transport, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_events_spread_over_partitions_and_arrive_once_in_order_per_key() {
    let (transport, _guard) = transport("partitions-keyed").await;
    assert_eq!(transport.create_topic("Part.Keyed", 4).await.unwrap(), 4);
    let seen = Seen::default();
    let mut consumers = Vec::new();
    for name in ["c1", "c2"] {
        consumers.push(consumer(&transport, "Part.Keyed", "g", name, &seen).await);
    }
    wait_for_owners(&transport, "g", "Part.Keyed", 2).await;
    let ids = publish(&transport, &keyed_events("Part.Keyed", 20, 0, 20)).await;
    assert_eq!(partitions_of(&ids), (0..4).collect(), "{ids:?}");
    wait_for(&seen, 400, WAIT).await;
    for c in consumers {
        c.shutdown().await.unwrap();
    }
    let per_consumer = assert_once_in_order(&seen, 20, 20);
    assert_eq!(
        per_consumer.len(),
        2,
        "both consumers got partitions: {per_consumer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_joining_and_leaving_take_partitions_over_without_duplicates() {
    let (transport, _guard) = transport("partitions-rebalance").await;
    transport.create_topic("Part.Moves", 6).await.unwrap();
    let seen = Seen::default();
    let first = consumer(&transport, "Part.Moves", "g", "c1", &seen).await;
    publish(&transport, &keyed_events("Part.Moves", 12, 0, 10)).await;
    wait_for(&seen, 120, WAIT).await;

    // Two more join while events keep coming: partitions move to them.
    let second = consumer(&transport, "Part.Moves", "g", "c2", &seen).await;
    let third = consumer(&transport, "Part.Moves", "g", "c3", &seen).await;
    wait_for_owners(&transport, "g", "Part.Moves", 3).await;
    for round in 0..10 {
        publish(
            &transport,
            &keyed_events("Part.Moves", 12, 10 + round * 2, 2),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for(&seen, 360, WAIT).await;

    // The first leaves: the others take its partitions at once.
    first.shutdown().await.unwrap();
    let before = seen.lock().unwrap().len();
    wait_for_owners(&transport, "g", "Part.Moves", 2).await;
    publish(&transport, &keyed_events("Part.Moves", 12, 30, 10)).await;
    wait_for(&seen, 480, WAIT).await;
    second.shutdown().await.unwrap();
    third.shutdown().await.unwrap();

    let per_consumer = assert_once_in_order(&seen, 12, 40);
    assert_eq!(per_consumer.len(), 3, "{per_consumer:?}");
    let after: Vec<String> = seen.lock().unwrap()[before..]
        .iter()
        .map(|(c, _, _)| c.clone())
        .collect();
    assert!(
        !after.iter().any(|c| c == "c1"),
        "c1 handled nothing after it left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_partitions_and_pending_entries_are_taken_over() {
    let (transport, _guard) = transport("partitions-takeover").await;
    transport.create_topic("Part.Dies", 4).await.unwrap();
    let seen = Seen::default();
    let survivor = consumer(&transport, "Part.Dies", "g", "survivor", &seen).await;
    // A consumer that reads and never settles, then vanishes without leaving: its leases
    // and membership expire.
    let ghost = {
        use eventbus_core::transport::{ConsumerSpec, Topic};
        use eventbus_core::StreamTransport;
        transport
            .consumer(ConsumerSpec {
                group: "g".into(),
                consumer: "ghost".into(),
                topics: vec![Topic::of_type("Part.Dies")],
            })
            .await
            .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish(&transport, &keyed_events("Part.Dies", 8, 0, 10)).await;
    let mut read_by_ghost = 0;
    for _ in 0..20 {
        read_by_ghost += ghost
            .read(100, Duration::from_millis(100))
            .await
            .unwrap()
            .len();
    }
    assert!(read_by_ghost > 0, "the ghost held some partitions");
    drop(ghost);
    wait_for(&seen, 80, Duration::from_secs(60)).await;
    survivor.shutdown().await.unwrap();
    let per_consumer = assert_once_in_order(&seen, 8, 10);
    assert_eq!(per_consumer.len(), 1, "{per_consumer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_subscription_reads_every_partition_of_the_global_stream() {
    use eventbus_core::transport::StartFrom;
    use eventbus_core::{Envelope, EventBus, StreamTransport};
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    let (transport, _guard) = transport("partitions-all").await;
    transport.create_topic("Part.Wide", 3).await.unwrap();
    // One partitioned type and one of a single partition share the global stream.
    let mut events = keyed_events("Part.Wide", 6, 0, 5);
    events.extend(keyed_events("Part.Narrow", 2, 0, 5));
    let ids = transport.publish(&events).await.unwrap();
    assert_eq!(partitions_of(&ids), (0..3).collect());
    let seen: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::default();
    let recorded = seen.clone();
    let bus = EventBus::new(transport.clone(), "partition-test");
    let all = bus
        .subscribe()
        .group("audit")
        .start_from(StartFrom::Beginning)
        .on_all(move |event: Envelope<Value>| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push((
                    event.event_type.clone(),
                    event.data["key"].as_str().unwrap_or_default().to_owned(),
                    event.data["seq"].as_u64().unwrap_or(u64::MAX),
                ));
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    wait_for(&seen, 40, WAIT).await;
    all.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 40, "each event once: {seen:?}");
    for event_type in ["Part.Wide", "Part.Narrow"] {
        for key in 0..6 {
            let seqs: Vec<u64> = seen
                .iter()
                .filter(|(t, k, _)| t == event_type && *k == format!("key-{key}"))
                .map(|(_, _, s)| *s)
                .collect();
            if event_type == "Part.Narrow" && key >= 2 {
                assert!(seqs.is_empty());
            } else {
                assert_eq!(seqs, (0..5).collect::<Vec<_>>(), "{event_type} key-{key}");
            }
        }
    }
}

#[eventbus_core::event(name = "Part.Projected")]
struct Projected {
    id: String,
}

#[eventbus_core::projection(counter = "part-projected:{id}", on = Projected)]
struct Counted;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_counts_each_event_of_a_partitioned_topic_once() {
    use eventbus_core::projection::{ProjectionRunner, ReadModel};
    use eventbus_core::{Envelope, EventBus};
    use eventbus_redis::RedisReadModels;
    use serde_json::json;

    let (transport, _guard) = transport("partitions-projection").await;
    transport.create_topic("Part.Projected", 3).await.unwrap();
    let bus = EventBus::new(transport.clone(), "partition-test");
    // Read models under the namespace, so that the guard deletes them.
    let prefix = format!("{}:", transport.keys().namespace());
    let models =
        eventbus_core::ReadModels::new(RedisReadModels::new(&transport).with_prefix(&prefix));
    let running = ProjectionRunner::new(&bus, &models, Counted::projection())
        .start()
        .await
        .unwrap();
    let events: Vec<Envelope<serde_json::Value>> = (0..60)
        .map(|i| {
            let id = format!("k{}", i % 6);
            Envelope::new("Part.Projected", 1, "partition-test", json!({ "id": id }))
                .with_partition_key(id)
        })
        .collect();
    let ids = publish(&transport, &events).await;
    assert_eq!(partitions_of(&ids).len(), 3, "{ids:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut counts = Vec::new();
        for k in 0..6 {
            counts.push(
                models
                    .counter(&format!("part-projected:k{k}"))
                    .await
                    .unwrap(),
            );
        }
        if counts.iter().all(|c| *c == 10) {
            break;
        }
        assert!(
            counts.iter().all(|c| *c <= 10),
            "an event was applied twice: {counts:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection did not catch up: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await.unwrap();
}

/// The counters of keys `part-projected:k{from..to}`.
async fn counters(models: &eventbus_core::ReadModels, keys: std::ops::Range<usize>) -> Vec<i64> {
    let mut counts = Vec::new();
    for k in keys {
        counts.push(
            models
                .counter(&format!("part-projected:k{k}"))
                .await
                .unwrap(),
        );
    }
    counts
}

fn projected(keys: std::ops::Range<usize>) -> Vec<eventbus_core::Envelope<serde_json::Value>> {
    keys.map(|k| {
        let id = format!("k{k}");
        eventbus_core::Envelope::new(
            "Part.Projected",
            1,
            "partition-test",
            serde_json::json!({ "id": id }),
        )
        .with_partition_key(id)
    })
    .collect()
}

/// A rebuild over a partitioned topic replaces a damaged model of more keys than one
/// switch-over batch, while events keep coming, and the live projection goes on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_over_partitions_repairs_the_model_while_events_keep_coming() {
    use eventbus_core::projection::{ProjectionRunner, ReadModel};
    use eventbus_core::EventBus;
    use eventbus_redis::RedisReadModels;

    const KEYS: usize = 600;
    let (transport, _guard) = transport("partitions-rebuild").await;
    transport.create_topic("Part.Projected", 3).await.unwrap();
    let bus = EventBus::new(transport.clone(), "partition-test");
    // Read models under the namespace, so that the guard deletes them.
    let prefix = format!("{}:", transport.keys().namespace());
    let models =
        eventbus_core::ReadModels::new(RedisReadModels::new(&transport).with_prefix(&prefix));
    let runner = || ProjectionRunner::new(&bus, &models, Counted::projection());
    let running = runner().start().await.unwrap();
    publish(&transport, &projected(0..KEYS)).await;
    publish(&transport, &projected(0..KEYS)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while counters(&models, 0..KEYS).await.iter().any(|c| *c != 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live projection did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Damage the model behind the projection's back, and leave a key of an older model.
    let mut conn = eventbus_tests::raw_connection().await;
    let registry = transport.keys().projection_registry(runner().name(), false);
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}part-projected:k0"))
        .arg(99)
        .ignore()
        .cmd("DEL")
        .arg(format!("{prefix}part-projected:k1"))
        .ignore()
        .cmd("SET")
        .arg(format!("{prefix}part-projected:stale"))
        .arg(5)
        .ignore()
        .cmd("SADD")
        .arg(&registry)
        .arg(format!("{prefix}part-projected:stale"))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    // Events keep coming while the rebuild runs: each of the first 300 keys gets a third.
    let more = {
        let transport = transport.clone();
        tokio::spawn(async move {
            for chunk in projected(0..300).chunks(10) {
                eventbus_core::StreamTransport::publish(&transport, chunk)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    runner().rebuild().await.unwrap();
    more.await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let counts = counters(&models, 0..KEYS).await;
        let expected: Vec<i64> = (0..KEYS).map(|k| if k < 300 { 3 } else { 2 }).collect();
        if counts == expected {
            break;
        }
        assert!(
            counts.iter().zip(&expected).all(|(c, e)| c <= e),
            "an event was applied twice: {counts:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the model did not settle: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(models.counter("part-projected:stale").await.unwrap(), 0);
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}part-projected:stale"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "a key the rebuilt model lacks is deleted");
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&registry)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        members.len(),
        KEYS,
        "the registry lists exactly the model's keys"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregates_events_go_to_the_partition_of_its_id() {
    use eventbus_core::es::EventStore;
    use eventbus_core::Envelope;
    use eventbus_redis::partition::partition_for_key;
    use eventbus_redis::RedisEventStore;
    use serde_json::json;

    let (transport, _guard) = transport("partitions-aggregates").await;
    transport.create_topic("Part.Deposited", 4).await.unwrap();
    let store = RedisEventStore::new(&transport);
    let seen = Seen::default();
    let reader = consumer(&transport, "Part.Deposited", "g", "c1", &seen).await;
    for account in ["acc-1", "acc-2", "acc-3"] {
        for version in 0..3u64 {
            let event = Envelope::new(
                "Part.Deposited",
                1,
                "bank",
                json!({ "key": account, "seq": version }),
            )
            .with_metadata(eventbus_core::es::META_AGGREGATE_ID, account);
            let ids = store
                .append("Account", account, version, &[event])
                .await
                .unwrap();
            let partition = partition_for_key(account, 4);
            assert_eq!(
                partitions_of(&ids),
                [partition].into(),
                "{account}'s events in its partition: {ids:?}"
            );
        }
    }
    wait_for(&seen, 9, WAIT).await;
    reader.shutdown().await.unwrap();
    let per_key = assert_once_in_order(&seen, 3, 3);
    assert_eq!(per_key.len(), 1);
}
