//! Unit tests of the event-sourcing runtime on the in-memory store.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::cqrs::{CommandBus, CommandContext, CommandError};
use crate::envelope::Envelope;
use crate::transport::memory::MemoryTransport;
use crate::transport::{ConsumerSpec, StartFrom, StreamTransport, Topic};
use crate::EventBus;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Added {
    n: i64,
}
impl crate::Event for Added {
    const EVENT_TYPE: &'static str = "Counter.Added";
    const VERSION: u32 = 1;
}

#[derive(Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum CounterError {
    #[error("too big")]
    TooBig,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Add {
    counter: String,
    n: i64,
}
impl crate::Command for Add {
    const COMMAND_TYPE: &'static str = "Add";
    type Output = Added;
    type Error = CounterError;
}
impl AggregateCommand for Add {
    fn aggregate_id(&self) -> String {
        self.counter.clone()
    }
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counter {
    total: i64,
    adds: u64,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    fn apply(&mut self, event: &Envelope<serde_json::Value>) -> crate::Result<()> {
        Applier::new(self, event)
            .on(|s, e: Added| {
                s.total += e.n;
                s.adds += 1;
            })
            .finish()
    }
}

fn add(state: &Counter, cmd: Add, _: &CommandContext) -> Result<Added, CounterError> {
    if state.total + cmd.n > 1_000_000 {
        return Err(CounterError::TooBig);
    }
    Ok(Added { n: cmd.n })
}

impl AggregateHandlers for Counter {
    fn register(bus: CommandBus, repository: &Repository<Self>) -> CommandBus {
        bus.handle_aggregate(repository.clone(), add)
    }
}

fn setup(
    repo: impl FnOnce(Repository<Counter>) -> Repository<Counter>,
) -> (CommandBus, Repository<Counter>, MemoryTransport) {
    let transport = MemoryTransport::new();
    let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new(transport.clone()));
    let repository = repo(Repository::new(store));
    let bus =
        CommandBus::new(EventBus::new(transport.clone(), "svc")).aggregate(repository.clone());
    (bus, repository, transport)
}

#[tokio::test]
async fn commands_append_to_the_stream_and_publish() {
    let (bus, repo, transport) = setup(|r| r);
    transport
        .ensure_group(&Topic::All, "g", StartFrom::Beginning)
        .await
        .unwrap();
    for n in 1..=3 {
        bus.dispatch(Add {
            counter: "c1".into(),
            n,
        })
        .await
        .unwrap();
    }
    let err = bus
        .dispatch(Add {
            counter: "c1".into(),
            n: 2_000_000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(&CounterError::TooBig));
    let loaded = repo.load("c1").await.unwrap();
    assert_eq!(loaded.state, Counter { total: 6, adds: 3 });
    assert_eq!(loaded.version, 3);
    let stored = repo.store().read("Counter", "c1", 0, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(stored[2].event.metadata[META_AGGREGATE_VERSION], json!(3));
    assert_eq!(stored[2].event.metadata[META_AGGREGATE_ID], json!("c1"));
    // No explicit key: the aggregate id picks the partition.
    assert_eq!(stored[2].event.partition_key(), Some("c1"));

    let consumer = transport
        .consumer(ConsumerSpec {
            group: "g".into(),
            consumer: "c".into(),
            topics: vec![Topic::All],
        })
        .await
        .unwrap();
    let published = consumer.read(100, std::time::Duration::ZERO).await.unwrap();
    let ids: Vec<_> = published
        .iter()
        .map(|d| d.event.as_ref().unwrap().event_id.clone())
        .collect();
    let stored_ids: Vec<_> = stored.iter().map(|e| e.event.event_id.clone()).collect();
    assert_eq!(ids, stored_ids);
}

#[tokio::test]
async fn stale_appends_are_conflicts_and_write_nothing() {
    let store = MemoryEventStore::new(MemoryTransport::new());
    let e = Envelope::new("Counter.Added", 1, "s", json!({"n": 1}));
    store
        .append("Counter", "c", 0, std::slice::from_ref(&e))
        .await
        .unwrap();
    let err = store
        .append("Counter", "c", 0, &[e.clone(), e])
        .await
        .unwrap_err();
    assert!(err.is_conflict() && err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("expected version 0, found 1"),
        "{err}"
    );
    assert_eq!(store.version("Counter", "c").await.unwrap(), 1);
    assert_eq!(store.read("Counter", "c", 0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn loads_page_by_page_and_from_snapshots() {
    let (bus, repo, _) = setup(|r| r.snapshot_every(10).page_size(7));
    for n in 1..=25 {
        bus.dispatch(Add {
            counter: "c".into(),
            n,
        })
        .await
        .unwrap();
    }
    let snap = repo
        .store()
        .snapshot("Counter", "c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.version, 20);
    let loaded = repo.load("c").await.unwrap();
    assert_eq!(loaded.from_snapshot, Some(20));
    let replayed = repo.replay("c").await.unwrap();
    assert_eq!(replayed.from_snapshot, None);
    assert_eq!(
        (loaded.state.clone(), loaded.version),
        (replayed.state, replayed.version)
    );
    assert_eq!(loaded.state.total, (1..=25).sum::<i64>());

    // A snapshot of another state version is ignored.
    let mut other = snap.clone();
    other.state_version = 7;
    other.version = 25;
    other.state = json!({"total": -1, "adds": 0});
    repo.store()
        .save_snapshot("Counter", "c", &other)
        .await
        .unwrap();
    let loaded = repo.load("c").await.unwrap();
    assert_eq!(loaded.from_snapshot, None);
    assert_eq!(loaded.state.total, (1..=25).sum::<i64>());
}

#[tokio::test]
async fn conflicts_are_retried_until_the_budget_is_spent() {
    let transport = MemoryTransport::new();
    let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new(transport.clone()));
    let repo = Repository::<Counter>::new(store.clone()).max_retries(2);
    let calls = Arc::new(AtomicU32::new(0));
    let (calls2, store2) = (calls.clone(), store.clone());
    // Every decision races with a writer that appends first.
    let racing = move |_: &Counter, cmd: Add, _: &CommandContext| {
        let call = calls2.fetch_add(1, Ordering::SeqCst);
        let store = store2.clone();
        let raw = Envelope::new("Counter.Added", 1, "other", json!({"n": 100}));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(store.append("Counter", "c", u64::from(call), &[raw]))
                .unwrap();
        })
        .join()
        .unwrap();
        Ok(Added { n: cmd.n })
    };
    let bus =
        CommandBus::new(EventBus::new(transport, "svc")).handle_aggregate(repo.clone(), racing);
    let err = bus
        .dispatch(Add {
            counter: "c".into(),
            n: 1,
        })
        .await
        .unwrap_err();
    match &err {
        CommandError::Conflict { attempts, source } => {
            assert_eq!(*attempts, 3);
            assert!(source.is_conflict());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Only the racing writer's events are stored.
    assert_eq!(repo.load("c").await.unwrap().state.total, 300);
}

#[tokio::test]
async fn unknown_events_in_a_stream_fail_the_load() {
    let (_, repo, _) = setup(|r| r);
    let alien = Envelope::new("Other", 1, "s", json!({}));
    repo.store()
        .append("Counter", "c", 0, &[alien])
        .await
        .unwrap();
    let err = repo.load("c").await.unwrap_err();
    assert!(err.to_string().contains("no `apply`"), "{err}");
}

fn harness() -> crate::testing::AggregateTest<Counter> {
    crate::testing::AggregateTest::new(|bus, repo| bus.aggregate(repo))
        .given([Added { n: 999_990 }])
}

#[tokio::test]
async fn harness_checks_new_events_against_past_ones() {
    harness()
        .when(Add {
            counter: "c".into(),
            n: 10,
        })
        .await
        .then_expect_events(&[Added { n: 10 }]);
    harness()
        .when(Add {
            counter: "c".into(),
            n: 11,
        })
        .await
        .then_expect_rejection(&CounterError::TooBig);
    // v0 of the event has no upcaster: the load fails, the harness reports it.
    let old = Envelope::new("Counter.Added", 0, "s", json!({"n": 1}));
    let outcome = crate::testing::AggregateTest::<Counter>::new(|bus, repo| bus.aggregate(repo))
        .given_raw([old])
        .when(Add {
            counter: "c".into(),
            n: 1,
        })
        .await;
    assert!(
        matches!(outcome.result, Err(CommandError::Store(_))),
        "{:?}",
        outcome.result
    );
}

#[tokio::test]
#[should_panic(expected = "published events differ")]
async fn harness_fails_on_other_events() {
    harness()
        .when(Add {
            counter: "c".into(),
            n: 10,
        })
        .await
        .then_expect_events(&[Added { n: 9 }]);
}
