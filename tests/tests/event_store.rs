//! Event sourcing on Redis and on the in-memory store: optimistic concurrency under
//! concurrent writers, snapshots, upcasting, and the atomicity of append-and-publish.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::es::{
    AggregateHandler, EventStore, MemoryEventStore, Repository, Snapshot, StoredEvent,
};
use eventbus_core::transport::{ConsumerSpec, StartFrom, Topic};
use eventbus_core::{
    aggregate, command, command_handler, event, BoxError, CommandBus, CommandContext, CommandError,
    Envelope, EventBus, HandlerError,
};
use eventbus_redis::{Error, RedisEventStore};
use eventbus_tests::{all_three, eventually, raw_connection, run_on_cluster, Backend};
use serde_json::{json, Value};

/// v1 had `cents` only; v2 adds the writer and sequence number.
fn deposited_v1_to_v2(mut v1: Value) -> Result<Value, BoxError> {
    let cents = v1["cents"].take();
    Ok(json!({"cents": cents, "writer": 0, "seq": 0}))
}

#[event(name = "Test.Deposited", version = 2, upcasters = [deposited_v1_to_v2])]
#[derive(Debug, Clone, PartialEq)]
struct Deposited {
    cents: i64,
    writer: u32,
    seq: u32,
}

#[derive(Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AccountError {
    #[error("amount must be positive")]
    NotPositive,
}

#[command(output = Deposited, error = AccountError)]
struct Deposit {
    #[aggregate_id]
    account: String,
    cents: i64,
    writer: u32,
    seq: u32,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Account {
    balance: i64,
    deposits: Vec<(u32, u32)>,
}

#[aggregate(name = "TestAccount")]
impl Account {
    #[apply]
    fn deposited(&mut self, e: Deposited) {
        self.balance += e.cents;
        self.deposits.push((e.writer, e.seq));
    }
}

#[command_handler(aggregate)]
impl Account {
    async fn deposit(&self, cmd: Deposit) -> Result<Deposited, AccountError> {
        if cmd.cents <= 0 {
            return Err(AccountError::NotPositive);
        }
        Ok(Deposited {
            cents: cmd.cents,
            writer: cmd.writer,
            seq: cmd.seq,
        })
    }
}

fn store(backend: &Backend) -> Arc<dyn EventStore> {
    match backend {
        Backend::Memory(t) => Arc::new(MemoryEventStore::new(t.clone())),
        Backend::Redis { transport, .. } => Arc::new(RedisEventStore::new(transport)),
    }
}

/// Every entry of a topic's stream, read through a fresh group from the beginning.
async fn published(backend: &Backend, topic: Topic) -> Vec<Envelope<Value>> {
    let transport = backend.transport();
    let group = format!("inspect-{}", uuid::Uuid::new_v4().simple());
    transport
        .ensure_group(&topic, &group, StartFrom::Beginning)
        .await
        .unwrap();
    let consumer = transport
        .consumer(ConsumerSpec {
            group,
            consumer: "inspector".into(),
            topics: vec![topic],
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let batch = consumer.read(500, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|d| d.event.unwrap()));
    }
}

async fn read_all(store: &Arc<dyn EventStore>, id: &str) -> Vec<StoredEvent> {
    store.read("TestAccount", id, 0, 100_000).await.unwrap()
}

all_three!(
    concurrent_writers_lose_nothing,
    exhausted_retries_return_the_conflict,
    snapshot_load_equals_replay,
    old_versions_load_through_upcasters,
    subscribers_upcast_and_dead_letter_unknown_versions,
);

/// 8 writers × 100 commands on one aggregate: each command's event is stored exactly once,
/// versions are contiguous, and the per-type and global streams hold exactly the stored
/// events (append and publish are one step).
async fn concurrent_writers_lose_nothing(backend: Backend) {
    let store = store(&backend);
    // Conflicts are frequent with 8 writers on one aggregate; a budget this large is never
    // spent (each failed attempt means another writer succeeded).
    let repo = Repository::<Account>::new(store.clone())
        .max_retries(10_000)
        .snapshot_every(50);
    let bus =
        CommandBus::new(EventBus::from_arc(backend.transport(), "bank")).aggregate(repo.clone());
    let mut writers = Vec::new();
    for writer in 0..8u32 {
        let bus = bus.clone();
        writers.push(tokio::spawn(async move {
            for seq in 0..100u32 {
                let cmd = Deposit {
                    account: "acc-1".into(),
                    cents: 1,
                    writer,
                    seq,
                };
                bus.dispatch(cmd).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let stored = read_all(&store, "acc-1").await;
    assert_eq!(stored.len(), 800);
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=800).collect::<Vec<_>>(),
        "versions are contiguous"
    );
    assert_eq!(store.version("TestAccount", "acc-1").await.unwrap(), 800);
    let mut seen = HashSet::new();
    for e in &stored {
        let d = e.event.decode::<Deposited>().unwrap().data;
        assert!(seen.insert((d.writer, d.seq)), "{d:?} stored twice");
    }
    assert_eq!(seen.len(), 800);
    let loaded = repo.load("acc-1").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (800, 800));

    let stored_ids: Vec<String> = stored.iter().map(|e| e.event.event_id.clone()).collect();
    let per_type: Vec<String> = published(&backend, Topic::of_type("Test.Deposited"))
        .await
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let global: Vec<String> = published(&backend, Topic::All)
        .await
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(per_type, stored_ids, "per-type stream = aggregate stream");
    assert_eq!(global, stored_ids, "global stream = aggregate stream");
}

/// A handler that loses every race: before it decides, another writer appends.
struct AlwaysRaced(Arc<dyn EventStore>);

impl AggregateHandler<Account, Deposit> for AlwaysRaced {
    fn handle<'a>(
        &'a self,
        state: &'a Account,
        cmd: Deposit,
        _: &'a CommandContext,
    ) -> futures_util::future::BoxFuture<'a, Result<Deposited, AccountError>> {
        Box::pin(async move {
            let version = state.deposits.len() as u64;
            let other = Envelope::new(
                "Test.Deposited",
                2,
                "other",
                json!({"cents": 10, "writer": 99, "seq": version}),
            );
            self.0
                .append("TestAccount", "acc-2", version, &[other])
                .await
                .unwrap();
            Ok(Deposited {
                cents: cmd.cents,
                writer: cmd.writer,
                seq: cmd.seq,
            })
        })
    }
}

async fn exhausted_retries_return_the_conflict(backend: Backend) {
    let store = store(&backend);
    let repo = Repository::<Account>::new(store.clone()).max_retries(4);
    let bus = CommandBus::new(EventBus::from_arc(backend.transport(), "bank"))
        .handle_aggregate(repo.clone(), AlwaysRaced(store.clone()));
    let err = bus
        .dispatch(Deposit {
            account: "acc-2".into(),
            cents: 1,
            writer: 1,
            seq: 1,
        })
        .await
        .unwrap_err();
    match err {
        CommandError::Conflict { attempts, source } => {
            assert_eq!(attempts, 5);
            assert!(source.is_conflict() && source.is_retryable());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Only the racing writer's 5 events were stored: the command's never were.
    let loaded = repo.load("acc-2").await.unwrap();
    assert_eq!(loaded.version, 5);
    assert!(loaded.state.deposits.iter().all(|(w, _)| *w == 99));
    assert_eq!(published(&backend, Topic::All).await.len(), 5);
}

async fn snapshot_load_equals_replay(backend: Backend) {
    let store = store(&backend);
    let repo = Repository::<Account>::new(store.clone())
        .snapshot_every(10)
        .page_size(4);
    let bus =
        CommandBus::new(EventBus::from_arc(backend.transport(), "bank")).aggregate(repo.clone());
    for seq in 0..35 {
        let cmd = Deposit {
            account: "acc-3".into(),
            cents: i64::from(seq) + 1,
            writer: 1,
            seq,
        };
        bus.dispatch(cmd).await.unwrap();
    }
    let snapshot = store
        .snapshot("TestAccount", "acc-3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((snapshot.version, snapshot.state_version), (30, 1));
    let loaded = repo.load("acc-3").await.unwrap();
    let replayed = repo.replay("acc-3").await.unwrap();
    assert_eq!(loaded.from_snapshot, Some(30));
    assert_eq!(
        (&loaded.state, loaded.version),
        (&replayed.state, replayed.version)
    );
    assert_eq!(loaded.state.balance, (1..=35).sum::<i64>());

    // A newer snapshot of another state schema is ignored: the events are replayed.
    let foreign = Snapshot {
        version: 35,
        state_version: 9,
        state: json!({"something": "else"}),
        taken_at: 0.0,
    };
    store
        .save_snapshot("TestAccount", "acc-3", &foreign)
        .await
        .unwrap();
    assert_eq!(
        store
            .snapshot("TestAccount", "acc-3")
            .await
            .unwrap()
            .unwrap()
            .state_version,
        9
    );
    let loaded = repo.load("acc-3").await.unwrap();
    assert_eq!(loaded.from_snapshot, None);
    assert_eq!(loaded.state, replayed.state);
}

async fn old_versions_load_through_upcasters(backend: Backend) {
    let store = store(&backend);
    let v1 = |cents: i64| Envelope::new("Test.Deposited", 1, "legacy", json!({"cents": cents}));
    store
        .append("TestAccount", "acc-4", 0, &[v1(5), v1(7)])
        .await
        .unwrap();
    let repo = Repository::<Account>::new(store.clone());
    let loaded = repo.load("acc-4").await.unwrap();
    assert_eq!(loaded.state.balance, 12);
    assert_eq!(loaded.state.deposits, vec![(0, 0), (0, 0)]);
}

/// A v1 entry reaches a subscriber as v2; a version with no upcaster path is dead-lettered
/// with that reason.
async fn subscribers_upcast_and_dead_letter_unknown_versions(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "reader");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = bus
        .subscribe()
        .on(move |e: Envelope<Deposited>| {
            let tx = tx.clone();
            async move {
                tx.send((e.version, e.data)).map_err(HandlerError::from)?;
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let old = Envelope::new("Test.Deposited", 1, "legacy", json!({"cents": 3}));
    let future = Envelope::new("Test.Deposited", 3, "newer", json!({"cents": 3}));
    backend.transport().publish(&[old, future]).await.unwrap();
    let (version, data) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((version, data.cents, data.writer), (2, 3, 0));
    let transport = backend.transport();
    eventually(
        Duration::from_secs(10),
        "the v3 entry is dead-lettered",
        || {
            let transport = transport.clone();
            async move {
                let dead = transport
                    .dead_letters("reader-consumers", 10)
                    .await
                    .unwrap();
                dead.len() == 1
                    && dead[0]
                        .reason
                        .error
                        .contains("unsupported schema version 3")
            }
        },
    )
    .await;
    sub.shutdown().await.unwrap();
}

fn namespace(backend: &Backend) -> &str {
    match backend {
        Backend::Redis { namespace, .. } => namespace,
        Backend::Memory(_) => unreachable!("Redis-only test"),
    }
}

/// v1 entries written raw into a Redis aggregate stream, the way another client would (the
/// codec's fields, ids `0-{version}`, the version key), load as v2.
#[tokio::test]
async fn raw_v1_entries_load_as_v2_on_redis() {
    let backend = Backend::redis("raw_v1_entries").await;
    let keys = eventbus_redis::Keys::new(namespace(&backend));
    let mut conn = raw_connection().await;
    for (version, cents) in [(1, 40), (2, 2)] {
        let fields = [
            ("event_id", format!("legacy-{version}")),
            ("event_type", "Test.Deposited".to_string()),
            ("source", "python-service".to_string()),
            ("data", json!({ "cents": cents }).to_string()),
            ("timestamp", "1700000000.5".to_string()),
            ("metadata", r#"{"schema_version": 1}"#.to_string()),
        ];
        let _: String = redis::cmd("XADD")
            .arg(keys.aggregate_stream("TestAccount", "acc-5"))
            .arg(format!("0-{version}"))
            .arg(&fields)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg(keys.aggregate_version("TestAccount", "acc-5"))
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let repo = Repository::<Account>::new(store(&backend));
    let loaded = repo.load("acc-5").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (42, 2));
    let stored = repo
        .store()
        .read("TestAccount", "acc-5", 0, 10)
        .await
        .unwrap();
    assert_eq!(
        stored[0].event.version, 1,
        "stored entries are not rewritten"
    );
}

/// The script writes all or nothing: a per-type stream key holding another type fails the
/// append before anything is written; the version key tracks appends exactly.
#[tokio::test]
async fn redis_append_is_all_or_nothing() {
    let backend = Backend::redis("append_atomic").await;
    let keys = eventbus_redis::Keys::new(namespace(&backend));
    let store = store(&backend);
    let mut conn = raw_connection().await;
    let ok = Envelope::new(
        "Test.Deposited",
        2,
        "s",
        json!({"cents": 1, "writer": 1, "seq": 1}),
    );
    store
        .append("TestAccount", "acc-6", 0, std::slice::from_ref(&ok))
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(keys.type_stream("Test.Broken"))
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let broken = Envelope::new("Test.Broken", 1, "s", json!({}));
    let err = store
        .append("TestAccount", "acc-6", 1, &[ok.clone(), broken])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let reader = conn.clone();
    let len = |key: String| {
        let mut conn = reader.clone();
        async move {
            redis::cmd("XLEN")
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(len(keys.aggregate_stream("TestAccount", "acc-6")).await, 1);
    assert_eq!(len(keys.type_stream("Test.Deposited")).await, 1);
    assert_eq!(len(keys.stream(&Topic::All)).await, 1);
    let version: u64 = redis::cmd("GET")
        .arg(keys.aggregate_version("TestAccount", "acc-6"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(version, 1);
    // A stale writer is refused without writing.
    let err = store
        .append("TestAccount", "acc-6", 0, &[ok])
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(len(keys.stream(&Topic::All)).await, 1);
}

/// On a cluster an aggregate type's first append pins its event types' partition count
/// (its aggregates' keys are placed by it): `create_topic` refuses to change it, saying
/// why; an append of event types with other counts fails and appends nothing.
#[test]
fn cluster_pins_the_partition_count_of_event_sourced_types() {
    run_on_cluster("cluster_pins_event_sourced_types", |backend| async move {
        let Backend::Redis { transport, .. } = &backend else {
            panic!("a cluster test")
        };
        let store = store(&backend);
        let event = |t: &str| {
            Envelope::new(t, 2, "test", json!({"cents": 1, "writer": 0, "seq": 0}))
                .with_metadata("aggregate_id", "acc-1")
        };
        // Not pinned yet: the count may still grow.
        assert_eq!(
            transport.create_topic("Test.Deposited", 3).await.unwrap(),
            3
        );
        assert_eq!(transport.create_topic("Test.Fee", 2).await.unwrap(), 2);
        let differ = store
            .append(
                "TestAccount",
                "acc-1",
                0,
                &[event("Test.Deposited"), event("Test.Fee")],
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            differ.contains("`Test.Deposited` has 3") && differ.contains("`Test.Fee` has 2"),
            "{differ}"
        );
        assert_eq!(store.version("TestAccount", "acc-1").await.unwrap(), 0);

        store
            .append("TestAccount", "acc-1", 0, &[event("Test.Deposited")])
            .await
            .unwrap();
        match transport.create_topic("Test.Deposited", 4).await {
            Err(Error::TopicPinned {
                event_type,
                current: 3,
                asked: 4,
                aggregate_type,
            }) => {
                assert_eq!(
                    (event_type.as_str(), aggregate_type.as_str()),
                    ("Test.Deposited", "TestAccount")
                );
            }
            other => panic!("expected TopicPinned, got {other:?}"),
        }
        // Asking for the count it has changes nothing and succeeds.
        assert_eq!(
            transport.create_topic("Test.Deposited", 3).await.unwrap(),
            3
        );
        // Reads find the aggregate by the count stored for its type.
        let fresh = RedisEventStore::new(transport);
        assert_eq!(fresh.version("TestAccount", "acc-1").await.unwrap(), 1);
        assert_eq!(
            fresh
                .read("TestAccount", "acc-1", 0, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // The aggregate type now has 3 partitions: an event type of 2 can't join it.
        let joined = store
            .append("TestAccount", "acc-1", 1, &[event("Test.Fee")])
            .await
            .unwrap_err()
            .to_string();
        assert!(joined.contains("placed by 3 partitions"), "{joined}");
    });
}
