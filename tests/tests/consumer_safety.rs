//! The consumer loop keeps its promises under load and faults: live consumers keep what they
//! hold, poison can't loop, restarts recover everything in order, shutdown cancels what it
//! abandons, and entries of the wrong type are malformed. On both backends.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::transport::{ConsumerSpec, StartFrom, Topic};
use eventbus_core::{event, Envelope, EventBus, SubscriptionBuilder};
use eventbus_tests::{both, eventually, Backend};

#[event(name = "SafetyJob")]
#[derive(Debug, Clone, PartialEq)]
struct Job {
    n: u32,
}

const WAIT: Duration = Duration::from_secs(30);
const GROUP: &str = "svc-consumers";

/// Who handled which job, in order.
type Log = Arc<Mutex<Vec<(String, u32)>>>;

fn topic() -> Topic {
    Topic::of_type("SafetyJob")
}

/// A subscription of consumer `name` that logs every job it handles, after `delay`.
fn logging(bus: &EventBus, name: &str, log: &Log, delay: Duration) -> SubscriptionBuilder {
    let (log, who) = (log.clone(), name.to_owned());
    bus.subscribe()
        .consumer_name(name)
        .configure(|o| {
            o.claim_idle = Duration::from_millis(300);
            o.claim_interval = Duration::from_millis(50);
            o.block = Duration::from_millis(100);
        })
        .on(move |e: Envelope<Job>| {
            let (log, who) = (log.clone(), who.clone());
            async move {
                tokio::time::sleep(delay).await;
                log.lock().unwrap().push((who, e.data.n));
                Ok(())
            }
        })
}

fn handled_by(log: &Log) -> HashMap<u32, Vec<String>> {
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for (who, n) in log.lock().unwrap().iter() {
        out.entry(*n).or_default().push(who.clone());
    }
    out
}

async fn pending(bus: &EventBus) -> u64 {
    bus.transport()
        .lag(Some(GROUP))
        .await
        .unwrap()
        .iter()
        .map(|l| l.pending)
        .sum()
}

async fn dead_letters(bus: &EventBus) -> Vec<eventbus_core::transport::DeadLetter> {
    bus.transport().dead_letters(GROUP, 1000).await.unwrap()
}

both!(
    a_slow_live_consumer_keeps_what_it_holds,
    a_handler_longer_than_claim_idle_keeps_its_entry,
    a_poison_entry_that_kills_its_consumer_is_dead_lettered,
    a_restart_recovers_all_own_pending_entries_in_order,
    shutdown_cancels_the_handlers_it_abandons,
    graceful_stops_do_not_count_against_max_deliveries,
    an_entry_of_another_type_on_a_type_stream_is_malformed,
);

/// The reproduction: a slow consumer prefetches far more than it handles within
/// `claim_idle`, while a fast one in the same group reclaims idle entries. Nobody dies, so
/// nothing may be handled twice.
async fn a_slow_live_consumer_keeps_what_it_holds(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "svc");
    let log: Log = Arc::default();
    let slow = logging(&bus, "slow", &log, Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    bus.publish_batch((0..150).map(|n| Job { n }))
        .await
        .unwrap();
    // The slow one has read (nearly) everything before the fast one starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast = logging(&bus, "fast", &log, Duration::ZERO)
        .start()
        .await
        .unwrap();
    bus.publish_batch((150..300).map(|n| Job { n }))
        .await
        .unwrap();

    eventually(WAIT, "every job handled", || async {
        handled_by(&log).len() == 300
    })
    .await;
    eventually(WAIT, "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    let twice: Vec<_> = handled_by(&log)
        .into_iter()
        .filter(|(_, who)| who.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "handled twice by live consumers: {twice:?}"
    );
    // (A hold can still lapse when the heartbeat is starved for longer than two thirds of
    // `claim_idle`; the entry is then neither started nor acknowledged here: `lost`.)
    assert!(
        slow.stats().renewed() > 0,
        "the slow consumer renewed its holds"
    );
    slow.shutdown().await.unwrap();
    fast.shutdown().await.unwrap();
}

/// A handler that runs several times `claim_idle` is kept by the heartbeat: another live
/// consumer never takes its entry.
async fn a_handler_longer_than_claim_idle_keeps_its_entry(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "svc");
    let log: Log = Arc::default();
    let slow = logging(&bus, "slow", &log, Duration::from_millis(1500))
        .start()
        .await
        .unwrap();
    bus.publish(Job { n: 1 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = logging(&bus, "other", &log, Duration::ZERO)
        .start()
        .await
        .unwrap();
    eventually(WAIT, "the slow handler finishes", || async {
        !log.lock().unwrap().is_empty()
    })
    .await;
    eventually(WAIT, "acknowledged", || async { pending(&bus).await == 0 }).await;
    assert_eq!(*log.lock().unwrap(), vec![("slow".to_owned(), 1)]);
    assert_eq!(other.stats().claimed(), 0);
    slow.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// An entry whose handler takes its process down is delivered `max_deliveries` times, then
/// goes to the dead-letter stream before any handler runs; the entries behind it flow and
/// none of them is dead-lettered. A crash is a runtime shut down under the consumer: its
/// tasks vanish mid-handler, with no shutdown, no renewal and no give-back.
async fn a_poison_entry_that_kills_its_consumer_is_dead_lettered(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "svc");
    bus.transport()
        .ensure_group(&topic(), GROUP, StartFrom::New)
        .await
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let handled: Arc<Mutex<Vec<u32>>> = Arc::default();
    let builder = |attempts: Arc<AtomicU32>, handled: Arc<Mutex<Vec<u32>>>| {
        bus.subscribe()
            .consumer_name("worker")
            .max_deliveries(3)
            .configure(|o| o.block = Duration::from_millis(100))
            .on(move |e: Envelope<Job>| {
                let (attempts, handled) = (attempts.clone(), handled.clone());
                async move {
                    if e.data.n == 0 {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await; // the process is about to die
                    }
                    handled.lock().unwrap().push(e.data.n);
                    Ok(())
                }
            })
    };
    bus.publish_batch((0..40).map(|n| Job { n })).await.unwrap();
    for run in 1..=3u32 {
        let process = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let subscription = builder(attempts.clone(), handled.clone());
        process.spawn(async move {
            let _running = subscription.start().await.unwrap();
            std::future::pending::<()>().await;
        });
        eventually(WAIT, "the poison is being handled", || async {
            attempts.load(Ordering::SeqCst) == run
        })
        .await;
        process.shutdown_background(); // SIGKILL
        assert!(
            handled.lock().unwrap().is_empty(),
            "all are behind the poison"
        );
    }
    // The restart after the last allowed delivery dead-letters it before any handler runs.
    let last = builder(attempts.clone(), handled.clone())
        .start()
        .await
        .unwrap();
    eventually(WAIT, "the 39 behind the poison arrive", || async {
        handled.lock().unwrap().len() == 39
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "no fourth attempt");
    let dead = dead_letters(&bus).await;
    assert_eq!(dead.len(), 1, "only the poison: {dead:?}");
    assert_eq!(dead[0].event.as_ref().unwrap().data["n"], 0);
    assert!(
        dead[0].reason.error.contains("without a verdict"),
        "{}",
        dead[0].reason.error
    );
    assert_eq!(last.stats().poison(), 1);
    eventually(WAIT, "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    last.shutdown().await.unwrap();
}

/// A graceful stop that cancels a slow handler is not the entry's fault: it is given back
/// uncounted, so rolling restarts never push a healthy entry to the dead-letter stream.
async fn graceful_stops_do_not_count_against_max_deliveries(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "svc");
    bus.transport()
        .ensure_group(&topic(), GROUP, StartFrom::New)
        .await
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let start = |attempts: Arc<AtomicU32>, slow: bool| {
        bus.subscribe()
            .consumer_name("worker")
            .max_deliveries(2)
            .configure(|o| {
                o.shutdown_timeout = Duration::from_millis(100);
                o.block = Duration::from_millis(100);
            })
            .on(move |_: Envelope<Job>| {
                let attempts = attempts.clone();
                async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if slow {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Ok(())
                }
            })
            .start()
    };
    bus.publish(Job { n: 1 }).await.unwrap();
    for run in 1..=4u32 {
        let sub = start(attempts.clone(), true).await.unwrap();
        eventually(WAIT, "the slow handler runs", || async {
            attempts.load(Ordering::SeqCst) == run
        })
        .await;
        let report = sub.shutdown().await.unwrap();
        assert_eq!((report.abandoned, report.left_pending), (1, 1), "run {run}");
    }
    let last = start(attempts.clone(), false).await.unwrap();
    eventually(WAIT, "handled at last", || async {
        last.stats().handled() == 1
    })
    .await;
    assert!(dead_letters(&bus).await.is_empty());
    eventually(WAIT, "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    last.shutdown().await.unwrap();
}

/// A consumer that read far more than one batch and died is restarted under its name: it
/// takes back every entry it held at once, in stream order, before anything new, long
/// before `claim_idle`.
async fn a_restart_recovers_all_own_pending_entries_in_order(backend: Backend) {
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "svc");
    transport
        .ensure_group(&topic(), GROUP, StartFrom::New)
        .await
        .unwrap();
    bus.publish_batch((0..700).map(|n| Job { n }))
        .await
        .unwrap();
    let crashed = transport
        .consumer(ConsumerSpec {
            group: GROUP.into(),
            consumer: "worker".into(),
            topics: vec![topic()],
        })
        .await
        .unwrap();
    let mut taken = 0;
    while taken < 700 {
        taken += crashed
            .read(300, Duration::from_millis(100))
            .await
            .unwrap()
            .len();
    }
    drop(crashed);
    bus.publish_batch((700..710).map(|n| Job { n }))
        .await
        .unwrap();

    let order: Arc<Mutex<Vec<u32>>> = Arc::default();
    let o = order.clone();
    let sub = bus
        .subscribe()
        .consumer_name("worker")
        .configure(|o| {
            o.claim_idle = Duration::from_secs(600); // only recovery can deliver them
            o.batch_size = 256;
        })
        .on(move |e: Envelope<Job>| {
            o.lock().unwrap().push(e.data.n);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();
    eventually(WAIT, "all 710 handled", || async {
        order.lock().unwrap().len() == 710
    })
    .await;
    assert_eq!(
        *order.lock().unwrap(),
        (0..710).collect::<Vec<_>>(),
        "recovered entries first, in stream order, then the new ones"
    );
    eventually(WAIT, "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    sub.shutdown().await.unwrap();
}

/// After `shutdown_timeout`, a handler still running is cancelled (its future dropped), the
/// report says so, and its entry stays pending for a later delivery.
async fn shutdown_cancels_the_handlers_it_abandons(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "svc");
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (s, d) = (started.clone(), dropped.clone());
    let sub = bus
        .subscribe()
        .configure(|o| o.shutdown_timeout = Duration::from_millis(200))
        .on(move |_: Envelope<Job>| {
            let (s, d) = (s.clone(), d.clone());
            async move {
                let _guard = DropFlag(d);
                s.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.publish(Job { n: 1 }).await.unwrap();
    eventually(WAIT, "the handler runs", || async {
        started.load(Ordering::SeqCst)
    })
    .await;
    let began = std::time::Instant::now();
    let report = sub.shutdown().await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(report.abandoned, 1);
    assert_eq!(report.left_pending, 1);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler's future was dropped"
    );
    assert_eq!(pending(&bus).await, 1, "its entry stays pending");
    assert!(dead_letters(&bus).await.is_empty());
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An entry in a type's stream whose `event_type` names another type is dead-lettered as
/// malformed, never delivered to that type's handlers.
async fn an_entry_of_another_type_on_a_type_stream_is_malformed(backend: Backend) {
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "svc");
    let log: Log = Arc::default();
    let sub = logging(&bus, "worker", &log, Duration::ZERO)
        .start()
        .await
        .unwrap();
    let mut stranger = bus.envelope(Job { n: 7 }).into_raw().unwrap();
    stranger.event_type = "SomethingElse".into();
    transport
        .append(&topic(), std::slice::from_ref(&stranger))
        .await
        .unwrap();
    bus.publish(Job { n: 8 }).await.unwrap();
    eventually(WAIT, "the real job handled", || async {
        !log.lock().unwrap().is_empty()
    })
    .await;
    eventually(WAIT, "one dead letter", || async {
        dead_letters(&bus).await.len() == 1
    })
    .await;
    assert_eq!(*log.lock().unwrap(), vec![("worker".to_owned(), 8)]);
    let dead = dead_letters(&bus).await;
    assert!(
        dead[0].reason.error.contains("event_type `SomethingElse`"),
        "{}",
        dead[0].reason.error
    );
    eventually(WAIT, "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    sub.shutdown().await.unwrap();
}

both!(a_restart_after_abandoned_handlers_handles_everything);

/// Unordered, 16 at a time, some handlers slower than the shutdown timeout: a consumer
/// stopped mid-flight and restarted under its name handles everything it left behind,
/// nothing is dead-lettered, nothing stays pending.
async fn a_restart_after_abandoned_handlers_handles_everything(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "svc");
    let handled: Arc<Mutex<Vec<u32>>> = Arc::default();
    let start = |handled: Arc<Mutex<Vec<u32>>>| {
        bus.subscribe()
            .consumer_name("worker")
            .order_by(eventbus_core::OrderBy::Unordered)
            .concurrency(16)
            .max_deliveries(3)
            .configure(|o| {
                o.shutdown_timeout = Duration::from_millis(100);
                o.block = Duration::from_millis(100);
                o.claim_idle = Duration::from_secs(1);
            })
            .on(move |e: Envelope<Job>| {
                let handled = handled.clone();
                async move {
                    let ms = if e.data.n.is_multiple_of(4) { 400 } else { 10 };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    handled.lock().unwrap().push(e.data.n);
                    Ok(())
                }
            })
            .start()
    };
    bus.transport()
        .ensure_group(&topic(), GROUP, StartFrom::New)
        .await
        .unwrap();
    bus.publish_batch((0..200).map(|n| Job { n }))
        .await
        .unwrap();
    for _ in 0..4 {
        let sub = start(handled.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        sub.shutdown().await.unwrap();
    }
    let last = start(handled.clone()).await.unwrap();
    eventually(WAIT, "all 200 handled", || async {
        let mut seen = handled.lock().unwrap().clone();
        seen.sort_unstable();
        seen.dedup();
        seen.len() == 200
    })
    .await;
    eventually(WAIT, "nothing pending", || async {
        pending(&bus).await == 0
    })
    .await;
    assert!(
        dead_letters(&bus).await.is_empty(),
        "{:?}",
        dead_letters(&bus).await
    );
    last.shutdown().await.unwrap();
}
