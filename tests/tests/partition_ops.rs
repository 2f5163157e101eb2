//! Operating a partitioned topic on one Redis: creating it, listing where its partitions
//! live, lag per partition, `settled` with partition-qualified ids, following it with a
//! tail, and dead letters listed, replayed and purged across partitions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::collections::BTreeMap;
use std::time::Duration;

use eventbus_core::transport::{StartFrom, StreamAdmin, Topic};
use eventbus_core::{Envelope, StreamTransport};
use eventbus_redis::{Error, RedisTransport};
use eventbus_tests::{raw_connection, run_on_redis, Backend};
use serde_json::json;

const TYPE: &str = "Part.Ordered";
const GROUP: &str = "ops-consumers";
const EVENTS: u64 = 40;

fn redis(backend: &Backend) -> RedisTransport {
    match backend {
        Backend::Redis { transport, .. } => transport.clone(),
        Backend::Memory(_) => panic!("a Redis test"),
    }
}

/// Creates the topic with `partitions` partitions and its group, and publishes `events`
/// events over `keys` keys. Returns their ids.
async fn keyed_topic(
    transport: &RedisTransport,
    partitions: u32,
    events: u64,
    keys: u64,
) -> Vec<String> {
    assert_eq!(
        transport.create_topic(TYPE, partitions).await.unwrap(),
        partitions
    );
    transport
        .ensure_group(&Topic::of_type(TYPE), GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    let events: Vec<Envelope<serde_json::Value>> = (0..events)
        .map(|n| {
            Envelope::new(TYPE, 1, "ops-test", json!({ "n": n }))
                .with_metadata("partition_key", format!("k{}", n % keys))
        })
        .collect();
    transport.publish(&events).await.unwrap()
}

/// The 4-partition topic: [`EVENTS`] events over 8 keys.
async fn four_partitions(transport: &RedisTransport) -> Vec<String> {
    keyed_topic(transport, 4, EVENTS, 8).await
}

#[test]
fn a_topic_s_partitions_are_created_listed_and_lagged() {
    run_on_redis("partitions_listed", |backend| async move {
        let transport = redis(&backend);
        let ids = four_partitions(&transport).await;
        assert!(ids.iter().all(|id| id.contains('/')), "qualified: {ids:?}");

        // A count only grows, and stays in range.
        match transport.create_topic(TYPE, 2).await {
            Err(Error::PartitionCountCannotShrink { current, asked, .. }) => {
                assert_eq!((current, asked), (4, 2));
            }
            other => panic!("expected a refusal to shrink, got {other:?}"),
        }
        assert!(matches!(
            transport.create_topic(TYPE, 0).await,
            Err(Error::InvalidPartitionCount { asked: 0, .. })
        ));
        assert_eq!(transport.create_topic(TYPE, 4).await.unwrap(), 4);

        let topics = transport.topics().await.unwrap();
        let info = topics
            .iter()
            .find(|t| t.topic == Topic::of_type(TYPE))
            .unwrap_or_else(|| panic!("{TYPE} not listed: {topics:?}"));
        let indexes: Vec<u32> = info.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
        assert_eq!(info.length(), EVENTS);
        let keys = transport.keys();
        // Partition 0 on a single node is the plain stream; the others are tagged.
        assert_eq!(
            info.partitions[0].stream,
            keys.stream(&Topic::of_type(TYPE))
        );
        assert!(info.partitions[1..].iter().all(|p| p.tag.is_some()));
        assert!(info.partitions.iter().all(|p| p.node.is_none()));
        assert!(
            info.partitions.iter().filter(|p| p.length > 0).count() > 1,
            "8 keys spread over the partitions: {info:?}"
        );
        let all = topics.iter().find(|t| t.topic == Topic::All).unwrap();
        assert_eq!(all.length(), EVENTS);

        // Lag: a row per partition, summing to every event (none read yet).
        let lags = transport.lag(Some(GROUP)).await.unwrap();
        let rows: Vec<_> = lags
            .iter()
            .filter(|l| l.topic == Topic::of_type(TYPE))
            .collect();
        let partitions: Vec<Option<u32>> = rows.iter().map(|l| l.partition).collect();
        assert_eq!(partitions, [Some(0), Some(1), Some(2), Some(3)]);
        for (row, p) in rows.iter().zip(&info.partitions) {
            assert_eq!(row.lag, Some(p.length), "{row:?}");
        }
        let total = transport
            .lag_of(&Topic::of_type(TYPE), GROUP)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (total.partition, total.lag, total.pending),
            (None, Some(EVENTS), 0)
        );
    });
}

#[test]
fn settled_takes_partition_qualified_ids() {
    run_on_redis("partitions_settled", |backend| async move {
        let transport = redis(&backend);
        let ids = four_partitions(&transport).await;
        let topic = Topic::of_type(TYPE);
        assert!(!transport.settled(&topic, GROUP, &ids).await.unwrap());

        // Read everything as another client would, and acknowledge all but one entry.
        let mut conn = raw_connection().await;
        let parts = transport.topics().await.unwrap();
        let info = parts.iter().find(|t| t.topic == topic).unwrap();
        let mut kept = None;
        for p in &info.partitions {
            let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg("ops-1")
                .arg("COUNT")
                .arg(1000)
                .arg("STREAMS")
                .arg(&p.stream)
                .arg(">")
                .query_async(&mut conn)
                .await
                .unwrap();
            let mut read_ids: Vec<String> = read
                .keys
                .into_iter()
                .flat_map(|k| k.ids)
                .map(|e| e.id)
                .collect();
            if p.index == 2 && !read_ids.is_empty() {
                kept = read_ids
                    .pop()
                    .map(|id| (p.stream.clone(), format!("2/{id}")));
            }
            if !read_ids.is_empty() {
                let _: i64 = redis::cmd("XACK")
                    .arg(&p.stream)
                    .arg(GROUP)
                    .arg(&read_ids)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
        let (stream, kept) = kept.expect("partition 2 has entries");
        assert!(ids.contains(&kept), "{kept} is one of {ids:?}");
        assert!(!transport.settled(&topic, GROUP, &ids).await.unwrap());
        let others: Vec<String> = ids.iter().filter(|id| **id != kept).cloned().collect();
        assert!(transport.settled(&topic, GROUP, &others).await.unwrap());
        let _: i64 = redis::cmd("XACK")
            .arg(&stream)
            .arg(GROUP)
            .arg(kept.trim_start_matches("2/"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(transport.settled(&topic, GROUP, &ids).await.unwrap());
    });
}

#[test]
fn a_tail_merges_every_partition_by_id_in_order_per_key() {
    run_on_redis("partitions_tail", |backend| async move {
        let transport = redis(&backend);
        let ids = four_partitions(&transport).await;
        let mut tail = transport
            .tail(&Topic::of_type(TYPE), StartFrom::Beginning)
            .await
            .unwrap();
        assert_eq!(tail.streams().count(), 4);
        let mut read = Vec::new();
        while read.len() < ids.len() {
            let batch = tail.next_batch(7, Duration::from_secs(2)).await.unwrap();
            assert!(!batch.is_empty(), "read {} of {}", read.len(), ids.len());
            read.extend(batch);
        }
        let read_ids: Vec<String> = read.iter().map(|(id, _)| id.clone()).collect();
        let mut expected = ids.clone();
        expected.sort_by_key(|id| order(id));
        assert_eq!(read_ids, expected, "every entry once, oldest first");
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (_, event) in &read {
            let event = event.as_ref().unwrap();
            per_key
                .entry(event.metadata["partition_key"].as_str().unwrap().to_owned())
                .or_default()
                .push(event.data["n"].as_u64().unwrap());
        }
        for (key, ns) in per_key {
            let mut sorted = ns.clone();
            sorted.sort_unstable();
            assert_eq!(ns, sorted, "key {key} in publish order");
        }
    });
}

/// How a tail orders entries: by stream id, then by partition.
fn order(id: &str) -> ((u64, u64), u32) {
    let partition = id.split_once('/').map_or(0, |(p, _)| p.parse().unwrap());
    (plain(id), partition)
}

/// The stream id of a qualified id as numbers, for ordering.
fn plain(id: &str) -> (u64, u64) {
    let id = id.split_once('/').map_or(id, |(_, id)| id);
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// Writes a dead letter for the entry `id` (qualified) of partition stream `stream`, in the
/// format the consumer's dead-letter script writes, to the group's dead-letter stream of the
/// partition's tag.
async fn dead_letter(transport: &RedisTransport, stream: &str, tag: Option<&str>, id: &str) {
    let mut conn = raw_connection().await;
    let plain = id.split_once('/').map_or(id, |(_, id)| id);
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg(plain)
        .arg(plain)
        .query_async(&mut conn)
        .await
        .unwrap();
    let entry = &entries.ids[0];
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in &entry.map {
        pairs.push((k.clone(), redis::from_redis_value(v.clone()).unwrap()));
    }
    let dlq = transport.keys().partition_dead_letters(GROUP, tag);
    let _: String = redis::cmd("XADD")
        .arg(&dlq)
        .arg("*")
        .arg(&[
            ("origin_stream", stream),
            ("origin_id", plain),
            ("group", GROUP),
            ("consumer", "ops-1"),
            ("error", "boom"),
            ("delivery_count", "3"),
            ("dead_lettered_at", "1700000000.5"),
            ("entry", &serde_json::to_string(&pairs).unwrap()),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[test]
fn dead_letters_are_listed_replayed_and_purged_across_partitions() {
    run_on_redis("partitions_dlq", |backend| async move {
        let transport = redis(&backend);
        let ids = four_partitions(&transport).await;
        let topic = Topic::of_type(TYPE);
        let info = transport
            .topics()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.topic == topic)
            .unwrap();
        let of = |index: u32| -> Vec<&String> {
            ids.iter()
                .filter(|id| id.starts_with(&format!("{index}/")))
                .collect()
        };
        // Two partitions with entries other than 0: one dead letter on the first, two on
        // the second.
        let chosen: Vec<u32> = (1..4).filter(|i| of(*i).len() >= 2).take(2).collect();
        assert_eq!(chosen.len(), 2, "{info:?}");
        let mut origins = Vec::new();
        for (n, index) in chosen.iter().enumerate() {
            let p = &info.partitions[*index as usize];
            for id in of(*index).into_iter().take(n + 1) {
                dead_letter(&transport, &p.stream, p.tag.as_deref(), id).await;
                origins.push(id.clone());
            }
        }

        let letters = transport.dead_letters(GROUP, 10).await.unwrap();
        assert_eq!(letters.len(), 3, "{letters:?}");
        let listed: Vec<&str> = letters.iter().map(|d| d.origin_id.as_str()).collect();
        assert_eq!(
            listed,
            origins.iter().map(String::as_str).collect::<Vec<_>>()
        );
        for (d, index) in letters.iter().zip([chosen[0], chosen[1], chosen[1]]) {
            assert!(d.id.starts_with(&format!("{index}/")), "{d:?}");
            assert_eq!(d.origin_topic, topic);
            assert!(d.event.is_some(), "{d:?}");
        }
        assert!(
            letters
                .windows(2)
                .all(|w| plain(&w[0].id) <= plain(&w[1].id)),
            "oldest first"
        );
        assert_eq!(transport.dead_letters(GROUP, 2).await.unwrap().len(), 2);

        let length = |index: u32| {
            let transport = transport.clone();
            let topic = topic.clone();
            async move {
                transport
                    .topics()
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|t| t.topic == topic)
                    .unwrap()
                    .partitions[index as usize]
                    .length
            }
        };
        let before = (length(chosen[0]).await, length(chosen[1]).await);

        // Replay one by its qualified id, purge one, replay the rest.
        let replayed = transport
            .replay_dead_letters(GROUP, Some(&[letters[0].id.clone()]))
            .await
            .unwrap();
        assert_eq!(replayed, 1);
        assert_eq!(length(chosen[0]).await, before.0 + 1);
        let purged = transport
            .purge_dead_letters(GROUP, Some(&[letters[1].id.clone()]))
            .await
            .unwrap();
        assert_eq!(purged, 1);
        let left = transport.dead_letters(GROUP, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, letters[2].id);
        assert_eq!(transport.replay_dead_letters(GROUP, None).await.unwrap(), 1);
        assert_eq!(length(chosen[1]).await, before.1 + 1);
        assert!(transport.dead_letters(GROUP, 10).await.unwrap().is_empty());
        assert_eq!(transport.purge_dead_letters(GROUP, None).await.unwrap(), 0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_six_partition_topic_spreads_over_the_three_masters() {
    // The cluster is the test's own: stopping it (on drop, also on failure) removes every key.
    let cluster = eventbus_tests::RedisCluster::start().await;
    let config = eventbus_redis::RedisConfig::new(&cluster.url())
        .unwrap()
        .namespace("partition-ops");
    let transport = RedisTransport::connect(config).await.unwrap();
    let ids = keyed_topic(&transport, 6, 60, 12).await;
    let topic = Topic::of_type(TYPE);

    let topics = transport.topics().await.unwrap();
    let info = topics.iter().find(|t| t.topic == topic).unwrap();
    assert_eq!(info.partitions.len(), 6);
    assert_eq!(info.length(), 60);
    assert!(info.partitions.iter().all(|p| p.tag.is_some()));
    let nodes: std::collections::BTreeSet<&str> = info
        .partitions
        .iter()
        .map(|p| p.node.as_deref().expect("a master serves every partition"))
        .collect();
    assert_eq!(nodes.len(), 3, "{info:?}");
    for p in &info.partitions {
        let port: u16 = p
            .node
            .as_deref()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cluster.owner_of(&p.stream), Some(port), "{p:?}");
    }

    // Lag per partition, read on each partition's master.
    let lags = transport.lag(Some(GROUP)).await.unwrap();
    let partitions: Vec<Option<u32>> = lags
        .iter()
        .filter(|l| l.topic == topic)
        .map(|l| l.partition)
        .collect();
    assert_eq!(partitions, (0..6).map(Some).collect::<Vec<_>>());
    let total = transport.lag_of(&topic, GROUP).await.unwrap().unwrap();
    assert_eq!(total.lag, Some(60));

    // A tail polls the six streams, one per slot.
    let mut tail = transport.tail(&topic, StartFrom::Beginning).await.unwrap();
    let mut read = Vec::new();
    while read.len() < ids.len() {
        let batch = tail.next_batch(50, Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty(), "read {} of {}", read.len(), ids.len());
        read.extend(batch.into_iter().map(|(id, _)| id));
    }
    let mut expected = ids.clone();
    expected.sort_by_key(|id| order(id));
    assert_eq!(read, expected);
    assert!(!transport.settled(&topic, GROUP, &ids).await.unwrap());
}
