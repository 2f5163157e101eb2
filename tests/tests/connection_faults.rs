//! The consumer loop under connection faults, on a Redis server of the test's own: a server
//! that closes idle connections, and a storm of `CLIENT KILL`s.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::transport::{ConsumerSpec, StartFrom, Topic};
use eventbus_core::{event, Envelope, EventBus, Subscription};
use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::{eventually, RedisServer};

#[event(name = "Beat")]
#[derive(Debug, Clone)]
struct Beat {
    n: u32,
}

type Seen = Arc<Mutex<Vec<u32>>>;

async fn bus_on(server: &RedisServer) -> EventBus {
    let transport = RedisTransport::connect(RedisConfig::new(&server.url()).unwrap())
        .await
        .unwrap();
    EventBus::new(transport, "svc")
}

async fn recording(
    bus: &EventBus,
    seen: &Seen,
    configure: impl FnOnce(&mut eventbus_core::SubscriptionOptions),
) -> Subscription {
    let s = seen.clone();
    bus.subscribe()
        .consumer_name("live")
        .configure(configure)
        .on(move |e: Envelope<Beat>| {
            s.lock().unwrap().push(e.data.n);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap()
}

async fn pending(bus: &EventBus) -> u64 {
    bus.transport()
        .lag(None)
        .await
        .map(|l| l.iter().map(|g| g.pending).sum())
        .unwrap_or(u64::MAX)
}

fn distinct(seen: &Seen) -> BTreeSet<u32> {
    seen.lock().unwrap().iter().copied().collect()
}

/// With `timeout 1` the server closes the connection claims go over between two claims:
/// every claim must still go through (once more, on a fresh connection), so a dead
/// consumer's entries are taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaims_through_a_server_that_closes_idle_connections() {
    let server = RedisServer::start(&["--timeout", "1"]).await;
    let bus = bus_on(&server).await;
    let topic = Topic::of_type("Beat");
    bus.transport()
        .ensure_group(&topic, "svc-consumers", StartFrom::New)
        .await
        .unwrap();
    bus.publish_batch((0..100).map(|n| Beat { n }))
        .await
        .unwrap();
    let dead = bus
        .transport()
        .consumer(ConsumerSpec {
            group: "svc-consumers".into(),
            consumer: "dead".into(),
            topics: vec![topic],
        })
        .await
        .unwrap();
    assert_eq!(
        dead.read(200, Duration::from_millis(100))
            .await
            .unwrap()
            .len(),
        100
    );
    drop(dead);

    let seen: Seen = Arc::default();
    let sub = recording(&bus, &seen, |o| {
        o.claim_idle = Duration::from_millis(500);
        // Longer than the server's timeout: the shared connection idles out between claims.
        o.claim_interval = Duration::from_millis(2500);
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the dead consumer's 100 entries",
        || async { distinct(&seen).len() == 100 },
    )
    .await;
    eventually(Duration::from_secs(10), "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    sub.shutdown().await.unwrap();
}

/// `CLIENT KILL` of every connection every 200 ms while 2,000 events flow: the consumer
/// keeps going (its backoff stays short while the server answers) and, once the storm is
/// over, everything has been handled and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_consuming_through_a_client_kill_storm() {
    let server = RedisServer::start(&[]).await;
    let bus = bus_on(&server).await;
    let seen: Seen = Arc::default();
    let sub = recording(&bus, &seen, |o| {
        o.claim_idle = Duration::from_millis(1000);
        o.claim_interval = Duration::from_millis(200);
        o.block = Duration::from_millis(200);
    })
    .await;

    let client = redis::Client::open(server.url()).unwrap();
    let storm = tokio::spawn(async move {
        let mut kills = 0u32;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < deadline {
            if let Ok(mut admin) = client.get_multiplexed_async_connection().await {
                let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .arg("SKIPME")
                    .arg("yes")
                    .query_async(&mut admin)
                    .await;
                kills += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        kills
    });
    // Publish in small batches through the storm, retrying like a caller would.
    let mut n = 0;
    while n < 2000 {
        if bus
            .publish_batch((n..n + 50).map(|n| Beat { n }))
            .await
            .is_ok()
        {
            n += 50;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let kills = storm.await.unwrap();
    assert!(kills >= 20, "only {kills} kills");
    eventually(Duration::from_secs(30), "all 2,000 handled", || async {
        distinct(&seen).len() == 2000
    })
    .await;
    eventually(Duration::from_secs(15), "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    sub.shutdown().await.unwrap();
}
