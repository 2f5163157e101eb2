//! Behaviour of the Streams event bus, on the in-memory transport, on one Redis and on a
//! Redis Cluster (where every topic is partitioned, even with one partition).

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::transport::{ConsumerSpec, StartFrom, Topic};
use eventbus_core::{event, Backoff, Context, Envelope, EventBus, HandlerError, OrderBy};
use eventbus_tests::{all_three, eventually, Backend};
use serde_json::Value;

#[event(name = "TestPing")]
#[derive(Debug, Clone, PartialEq)]
struct Ping {
    n: u32,
}

#[event(name = "TestPong")]
#[derive(Debug, Clone, PartialEq)]
struct Pong {
    n: u32,
}

const WAIT: Duration = Duration::from_secs(15);

type Seen = Arc<Mutex<Vec<u32>>>;

fn recorder() -> (
    Seen,
    impl Fn(Envelope<Ping>) -> futures_ready::Ready + Clone,
) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let handler = move |e: Envelope<Ping>| {
        s.lock().unwrap().push(e.data.n);
        futures_ready::ok()
    };
    (seen, handler)
}

/// A ready future without pulling in another crate.
mod futures_ready {
    use eventbus_core::HandlerError;
    pub type Ready = std::future::Ready<Result<(), HandlerError>>;
    pub fn ok() -> Ready {
        std::future::ready(Ok(()))
    }
}

fn len(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

async fn pending(bus: &EventBus, group: &str) -> u64 {
    bus.transport()
        .lag(Some(group))
        .await
        .unwrap()
        .iter()
        .map(|l| l.pending)
        .sum()
}

all_three!(
    publishes_to_type_and_global_streams,
    at_least_once_across_a_dead_consumer,
    two_consumers_share_without_duplicates,
    two_groups_each_get_every_entry,
    retry_then_dead_letter_then_replay,
    malformed_entry_is_dead_lettered_and_the_rest_flows,
    panicking_handler_is_a_failed_delivery,
    graceful_shutdown_acks_finished_work,
    order_is_kept_within_a_stream,
    lost_group_is_recreated,
    correlation_and_causation_propagate,
    start_from_beginning_reads_history,
);

async fn publishes_to_type_and_global_streams(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "producer");
    let all: Arc<Mutex<Vec<String>>> = Arc::default();
    let a = all.clone();
    let sub = bus
        .subscribe()
        .group("auditor")
        .on_all(move |e: Envelope<Value>| {
            a.lock().unwrap().push(e.event_type.clone());
            futures_ready::ok()
        })
        .start()
        .await
        .unwrap();
    let (seen, handler) = recorder();
    let typed = bus
        .subscribe()
        .group("typed")
        .on(handler)
        .start()
        .await
        .unwrap();

    bus.publish(Ping { n: 1 }).await.unwrap();
    bus.publish_batch([Pong { n: 2 }, Pong { n: 3 }])
        .await
        .unwrap();

    eventually(WAIT, "global subscriber sees all three", || async {
        all.lock().unwrap().len() == 3
    })
    .await;
    eventually(WAIT, "typed subscriber sees the ping", || async {
        len(&seen) == 1
    })
    .await;
    assert_eq!(
        *all.lock().unwrap(),
        vec!["TestPing", "TestPong", "TestPong"]
    );
    sub.shutdown().await.unwrap();
    typed.shutdown().await.unwrap();
}

async fn at_least_once_across_a_dead_consumer(backend: Backend) {
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "svc");
    let topic = Topic::of_type("TestPing");
    transport
        .ensure_group(&topic, "svc-consumers", StartFrom::New)
        .await
        .unwrap();
    bus.publish_batch((0..20).map(|n| Ping { n }))
        .await
        .unwrap();

    // A consumer reads everything and dies without acknowledging anything.
    let dead = transport
        .consumer(ConsumerSpec {
            group: "svc-consumers".into(),
            consumer: "dead-one".into(),
            topics: vec![topic.clone()],
        })
        .await
        .unwrap();
    let taken = dead.read(100, Duration::from_millis(100)).await.unwrap();
    assert_eq!(taken.len(), 20);
    drop(dead);

    let (seen, handler) = recorder();
    let sub = bus
        .subscribe()
        .consumer_name("survivor")
        .claim_idle(Duration::from_millis(300))
        .configure(|o| o.claim_interval = Duration::from_millis(100))
        .on(handler)
        .start()
        .await
        .unwrap();
    // On a cluster the survivor gets the dead consumer's partition when its lease expires.
    eventually(
        WAIT + backend.dead_consumer_lease(),
        "the survivor handles the dead consumer's entries",
        || async { len(&seen) == 20 },
    )
    .await;
    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(sub.stats().claimed() >= 20);
    eventually(WAIT, "nothing left pending", || async {
        pending(&bus, "svc-consumers").await == 0
    })
    .await;
    sub.shutdown().await.unwrap();
}

async fn two_consumers_share_without_duplicates(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "shared");
    // Consumers share a cluster's topics by partition: one each.
    backend.cluster_partitions("TestPing", 2).await;
    let seen: Arc<Mutex<Vec<(u8, u32)>>> = Arc::default();
    let mut subs = Vec::new();
    for who in [1u8, 2] {
        let s = seen.clone();
        subs.push(
            bus.subscribe()
                .consumer_name(format!("worker-{who}"))
                .configure(|o| {
                    o.batch_size = 5;
                    o.prefetch = 5;
                })
                .on(move |e: Envelope<Ping>| {
                    let s = s.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        s.lock().unwrap().push((who, e.data.n));
                        Ok::<(), HandlerError>(())
                    }
                })
                .start()
                .await
                .unwrap(),
        );
    }
    // A cluster hands a partition to the second consumer within a second or so.
    backend
        .cluster_owners("shared-consumers", "TestPing", 2)
        .await;
    for chunk in 0..20u32 {
        bus.publish_batch((0..10).map(|i| Ping { n: chunk * 10 + i }))
            .await
            .unwrap();
    }
    eventually(WAIT, "200 entries handled", || async {
        seen.lock().unwrap().len() >= 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200, "no entry handled twice");
    let distinct: HashSet<u32> = seen.iter().map(|(_, n)| *n).collect();
    assert_eq!(distinct.len(), 200);
    assert!(
        seen.iter().any(|(w, _)| *w == 1) && seen.iter().any(|(w, _)| *w == 2),
        "both consumers got work"
    );
    for sub in subs {
        sub.shutdown().await.unwrap();
    }
}

async fn two_groups_each_get_every_entry(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "producer");
    let (seen_a, ha) = recorder();
    let (seen_b, hb) = recorder();
    let a = bus
        .subscribe()
        .group("billing-consumers")
        .on(ha)
        .start()
        .await
        .unwrap();
    let b = bus
        .subscribe()
        .group("shipping-consumers")
        .on(hb)
        .start()
        .await
        .unwrap();
    bus.publish_batch((0..50).map(|n| Ping { n }))
        .await
        .unwrap();
    eventually(WAIT, "both groups get all 50", || async {
        len(&seen_a) == 50 && len(&seen_b) == 50
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

async fn retry_then_dead_letter_then_replay(backend: Backend) {
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "flaky");
    let healthy = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU32::new(0));
    let (h, a) = (healthy.clone(), attempts.clone());
    let sub = bus
        .subscribe()
        .max_deliveries(3)
        .retry_backoff(Backoff::constant(Duration::from_millis(20)))
        .on(move |e: Envelope<Ping>| {
            let (h, a) = (h.clone(), a.clone());
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                if h.load(Ordering::SeqCst) || e.data.n != 13 {
                    Ok(())
                } else {
                    Err(HandlerError::retryable("downstream unavailable"))
                }
            }
        })
        .start()
        .await
        .unwrap();
    let id = bus.publish(Ping { n: 13 }).await.unwrap();
    bus.publish(Ping { n: 14 }).await.unwrap();

    eventually(WAIT, "the failing entry is dead-lettered", || async {
        !transport
            .dead_letters("flaky-consumers", 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let dead = transport.dead_letters("flaky-consumers", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.origin_topic, Topic::of_type("TestPing"));
    assert_eq!(d.origin_id, id);
    assert_eq!(d.reason.delivery_count, 3);
    assert!(
        d.reason.error.contains("downstream unavailable"),
        "{}",
        d.reason.error
    );
    assert_eq!(
        d.event.as_ref().map(|e| e.data["n"].clone()),
        Some(serde_json::json!(13))
    );
    // Three attempts of #13, one of #14.
    eventually(WAIT, "four attempts", || async {
        attempts.load(Ordering::SeqCst) == 4
    })
    .await;
    assert_eq!(sub.stats().dead_lettered(), 1);
    eventually(WAIT, "nothing left pending", || async {
        pending(&bus, "flaky-consumers").await == 0
    })
    .await;

    healthy.store(true, Ordering::SeqCst);
    assert_eq!(
        transport
            .replay_dead_letters("flaky-consumers", None)
            .await
            .unwrap(),
        1
    );
    eventually(WAIT, "the replayed entry is handled", || async {
        attempts.load(Ordering::SeqCst) == 5
    })
    .await;
    assert!(transport
        .dead_letters("flaky-consumers", 10)
        .await
        .unwrap()
        .is_empty());

    // Purge: dead-letter one more, then purge it.
    healthy.store(false, Ordering::SeqCst);
    bus.publish(Ping { n: 13 }).await.unwrap();
    eventually(WAIT, "dead-lettered again", || async {
        transport
            .dead_letters("flaky-consumers", 10)
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert_eq!(
        transport
            .purge_dead_letters("flaky-consumers", None)
            .await
            .unwrap(),
        1
    );
    assert!(transport
        .dead_letters("flaky-consumers", 10)
        .await
        .unwrap()
        .is_empty());
    sub.shutdown().await.unwrap();
}

async fn malformed_entry_is_dead_lettered_and_the_rest_flows(backend: Backend) {
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "strict");
    let (seen, handler) = recorder();
    let sub = bus.subscribe().on(handler).start().await.unwrap();
    bus.publish(Ping { n: 1 }).await.unwrap();
    backend.append_malformed(&Topic::of_type("TestPing")).await;
    // Data that is JSON but doesn't fit the type, and an unsupported schema version.
    let mut wrong_shape = bus.envelope(Ping { n: 0 }).to_raw().unwrap();
    wrong_shape.data = serde_json::json!({"n": "two"});
    let mut future_version = bus.envelope(Ping { n: 0 }).to_raw().unwrap();
    future_version.version = 9;
    bus.publish_raw(&[wrong_shape, future_version])
        .await
        .unwrap();
    bus.publish(Ping { n: 2 }).await.unwrap();

    eventually(
        WAIT,
        "valid entries around the bad ones are handled",
        || async { len(&seen) == 2 },
    )
    .await;
    assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    eventually(WAIT, "three dead letters", || async {
        transport
            .dead_letters("strict-consumers", 10)
            .await
            .unwrap()
            .len()
            == 3
    })
    .await;
    let dead = transport
        .dead_letters("strict-consumers", 10)
        .await
        .unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.error.as_str()).collect();
    assert!(
        reasons[0].contains("malformed") && reasons[0].contains("JSON"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("invalid data"), "{reasons:?}");
    assert!(
        reasons[2].contains("unsupported schema version 9"),
        "{reasons:?}"
    );
    assert!(
        dead.iter().all(|d| d.reason.delivery_count == 1),
        "permanent failures are not retried"
    );
    eventually(WAIT, "nothing left pending", || async {
        pending(&bus, "strict-consumers").await == 0
    })
    .await;
    sub.shutdown().await.unwrap();
}

async fn panicking_handler_is_a_failed_delivery(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "panicky");
    let calls = Arc::new(AtomicU32::new(0));
    let (seen, record) = recorder();
    let c = calls.clone();
    let sub = bus
        .subscribe()
        .retry_backoff(Backoff::constant(Duration::from_millis(10)))
        .on(move |e: Envelope<Ping>| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("boom");
            }
            record(e)
        })
        .start()
        .await
        .unwrap();
    bus.publish(Ping { n: 1 }).await.unwrap();
    bus.publish(Ping { n: 2 }).await.unwrap();
    eventually(WAIT, "both handled after the panic", || async {
        len(&seen) == 2
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    assert_eq!(sub.stats().failed_attempts(), 1);
    assert!(!sub.is_finished(), "the consumer survived the panic");
    sub.shutdown().await.unwrap();
}

async fn graceful_shutdown_acks_finished_work(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "draining");
    let started = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let (s, f) = (started.clone(), finished.clone());
    let sub = bus
        .subscribe()
        .order_by(OrderBy::Unordered)
        .on(move |_e: Envelope<Ping>| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.publish_batch((0..5).map(|n| Ping { n })).await.unwrap();
    eventually(WAIT, "all five started", || async {
        started.load(Ordering::SeqCst) == 5
    })
    .await;
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    sub.shutdown().await.unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        5,
        "shutdown waits for in-flight handlers"
    );
    assert_eq!(
        pending(&bus, "draining-consumers").await,
        0,
        "and acknowledges them"
    );
}

async fn order_is_kept_within_a_stream(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "ordered");
    let (seen, record) = recorder();
    let sub = bus
        .subscribe()
        .concurrency(16)
        .on(move |e: Envelope<Ping>| {
            let record = record.clone();
            async move {
                // Later entries finish faster: only ordering keeps them in sequence.
                if e.data.n.is_multiple_of(7) {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                record(e).await
            }
        })
        .start()
        .await
        .unwrap();
    for chunk in 0..10u32 {
        bus.publish_batch((0..50).map(|i| Ping { n: chunk * 50 + i }))
            .await
            .unwrap();
    }
    eventually(WAIT, "500 handled", || async { len(&seen) == 500 }).await;
    assert_eq!(*seen.lock().unwrap(), (0..500).collect::<Vec<_>>());
    sub.shutdown().await.unwrap();
}

async fn lost_group_is_recreated(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "resilient");
    let (seen, record) = recorder();
    let sub = bus
        .subscribe()
        .configure(|o| {
            o.block = Duration::from_millis(100);
            o.reconnect_backoff =
                Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        })
        .on(record)
        .start()
        .await
        .unwrap();
    bus.publish(Ping { n: 1 }).await.unwrap();
    eventually(WAIT, "first handled", || async { len(&seen) == 1 }).await;
    backend.lose_groups().await;
    // Wait for the consumer to notice and recreate the group, then publish more.
    eventually(WAIT, "the group is recreated", || async {
        bus.transport()
            .lag(Some("resilient-consumers"))
            .await
            .map(|l| !l.is_empty())
            .unwrap_or(false)
    })
    .await;
    bus.publish(Ping { n: 2 }).await.unwrap();
    eventually(WAIT, "handled after recreation", || async {
        len(&seen) == 2
    })
    .await;
    assert!(sub.stats().transport_errors() >= 1);
    // Backoff, not a hot loop: a handful of errors, not thousands.
    assert!(
        sub.stats().transport_errors() < 50,
        "{}",
        sub.stats().transport_errors()
    );
    sub.shutdown().await.unwrap();
}

async fn correlation_and_causation_propagate(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "chain");
    let sub = bus
        .subscribe()
        .on(|e: Envelope<Ping>, ctx: Context| async move {
            ctx.publish(Pong { n: e.data.n + 1 }).await?;
            Ok(())
        })
        .start()
        .await
        .unwrap();
    let pongs: Arc<Mutex<Vec<Envelope<Pong>>>> = Arc::default();
    let p = pongs.clone();
    let sink = bus
        .subscribe()
        .group("sink")
        .on(move |e: Envelope<Pong>| {
            p.lock().unwrap().push(e);
            futures_ready::ok()
        })
        .start()
        .await
        .unwrap();
    let ping = bus.envelope(Ping { n: 1 }).with_correlation_id("flow-42");
    bus.publish_envelope(ping.clone()).await.unwrap();
    eventually(WAIT, "the pong arrives", || async {
        pongs.lock().unwrap().len() == 1
    })
    .await;
    let pong = pongs.lock().unwrap()[0].clone();
    assert_eq!(pong.data, Pong { n: 2 });
    assert_eq!(pong.correlation_id.as_deref(), Some("flow-42"));
    assert_eq!(pong.causation_id.as_deref(), Some(ping.event_id.as_str()));
    assert_eq!(pong.source, "chain");
    sub.shutdown().await.unwrap();
    sink.shutdown().await.unwrap();
}

async fn start_from_beginning_reads_history(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "late");
    bus.publish_batch((0..3).map(|n| Ping { n })).await.unwrap();
    let (fresh_seen, fresh) = recorder();
    let (history_seen, history) = recorder();
    let new_only = bus
        .subscribe()
        .group("new-only")
        .on(fresh)
        .start()
        .await
        .unwrap();
    let replay = bus
        .subscribe()
        .group("from-start")
        .start_from(StartFrom::Beginning)
        .on(history)
        .start()
        .await
        .unwrap();
    bus.publish(Ping { n: 3 }).await.unwrap();
    eventually(WAIT, "history replayed", || async {
        len(&history_seen) == 4
    })
    .await;
    eventually(WAIT, "new entry seen", || async { len(&fresh_seen) == 1 }).await;
    assert_eq!(*fresh_seen.lock().unwrap(), vec![3]);
    new_only.shutdown().await.unwrap();
    replay.shutdown().await.unwrap();
}
