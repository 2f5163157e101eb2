//! Keyed events on a partitioned topic, consumed by a group whose consumers share the
//! partitions: the scenarios the single-node and cluster suites both run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::transport::StartFrom;
use eventbus_core::{Envelope, EventBus, StreamTransport, Subscription};
use eventbus_redis::RedisTransport;
use eventbus_tests::eventually;
pub use eventbus_tests::wait_for_owners;
use serde_json::{json, Value};

/// What the handlers saw, in the order they saw it: (consumer, key, sequence number).
pub type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;

/// `per_key` events for each of `keys` keys, keys interleaved, each carrying its key as
/// its partition key.
pub fn keyed_events(
    event_type: &str,
    keys: usize,
    from: u64,
    per_key: u64,
) -> Vec<Envelope<Value>> {
    let mut events = Vec::new();
    for seq in from..from + per_key {
        for k in 0..keys {
            let key = format!("key-{k}");
            events.push(
                Envelope::new(
                    event_type,
                    1,
                    "partition-test",
                    json!({ "key": key, "seq": seq }),
                )
                .with_partition_key(key.clone()),
            );
        }
    }
    events
}

/// Publishes in batches of 50; returns the entry ids.
pub async fn publish(transport: &RedisTransport, events: &[Envelope<Value>]) -> Vec<String> {
    let mut ids = Vec::new();
    for batch in events.chunks(50) {
        ids.extend(transport.publish(batch).await.unwrap());
    }
    ids
}

/// Starts consumer `name` of `group` on `event_type`, recording into `seen`.
pub async fn consumer(
    transport: &RedisTransport,
    event_type: &str,
    group: &str,
    name: &str,
    seen: &Seen,
) -> Subscription {
    let bus = EventBus::new(transport.clone(), "partition-test");
    let (seen, me) = (seen.clone(), name.to_owned());
    bus.subscribe()
        .group(group)
        .consumer_name(name)
        .start_from(StartFrom::Beginning)
        .configure(|o| {
            o.reconnect_backoff =
                eventbus_core::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        })
        .on_raw(event_type, move |event: Envelope<Value>| {
            let (seen, me) = (seen.clone(), me.clone());
            async move {
                let key = event.data["key"].as_str().unwrap_or_default().to_owned();
                let seq = event.data["seq"].as_u64().unwrap_or(u64::MAX);
                seen.lock().unwrap().push((me, key, seq));
                Ok(())
            }
        })
        .start()
        .await
        .unwrap()
}

/// Waits until `seen` holds `n` events.
pub async fn wait_for(seen: &Seen, n: usize, limit: Duration) {
    eventually(limit, &format!("{n} events handled"), || async {
        seen.lock().unwrap().len() >= n
    })
    .await;
}

/// Asserts every `(key, seq)` of `keys` keys and sequence numbers `0..per_key` was handled
/// exactly once, and each key's events in order. Returns how many each consumer handled.
pub fn assert_once_in_order(seen: &Seen, keys: usize, per_key: u64) -> BTreeMap<String, usize> {
    let seen = seen.lock().unwrap().clone();
    let mut per_key_seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut per_consumer: BTreeMap<String, usize> = BTreeMap::new();
    for (consumer, key, seq) in &seen {
        per_key_seen.entry(key.clone()).or_default().push(*seq);
        *per_consumer.entry(consumer.clone()).or_default() += 1;
    }
    assert_eq!(per_key_seen.len(), keys, "every key seen");
    for (key, seqs) in &per_key_seen {
        assert_eq!(
            seqs,
            &(0..per_key).collect::<Vec<_>>(),
            "{key}: each event once, in publish order"
        );
    }
    assert_eq!(seen.len(), keys * per_key as usize, "no duplicates");
    per_consumer
}

/// The partitions entry ids were published to.
pub fn partitions_of(ids: &[String]) -> BTreeSet<u32> {
    ids.iter()
        .map(|id| {
            id.split_once('/')
                .map(|(p, _)| p.parse().unwrap())
                .unwrap_or(0)
        })
        .collect()
}
