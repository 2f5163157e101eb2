//! Given/when/then for projections.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;

use crate::bus::EventBus;
use crate::envelope::Envelope;
use crate::event::Event;
use crate::projection::{Projection, ProjectionRunner, ReadModelStore, ReadModels};
use crate::transport::memory::MemoryTransport;
use crate::transport::{DeadLetter, StreamAdmin};

/// How long [`ProjectionTest::run`] waits for the projection to take every event.
const RUN_LIMIT: Duration = Duration::from_secs(10);

/// A given/when/then test of a projection on the in-memory backend: the events are
/// published in order and projected by the real runner (so decoding failures are
/// dead-lettered as in production), then the read model is compared.
///
/// ```
/// use eventbus_core::{event, projection};
/// use eventbus_core::projection::ReadModel;
/// use eventbus_core::testing::ProjectionTest;
///
/// #[event]
/// pub struct OrderCreated { pub order_id: String, pub total: f64 }
/// #[event]
/// pub struct OrderShipped { pub order_id: String }
///
/// #[projection(hash = "orders:summary:{order_id}")]
/// pub struct OrderSummary {
///     #[set(from = OrderCreated)] pub total: f64,
///     #[set(OrderCreated = "created", OrderShipped = "shipped")] pub status: String,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ProjectionTest::new(OrderSummary::projection())
///     .given(OrderCreated { order_id: "ord_1".into(), total: 99.5 })
///     .given(OrderShipped { order_id: "ord_1".into() })
///     .run()
///     .await
///     .then_hash("orders:summary:ord_1", [("total", "99.5"), ("status", "shipped")]);
/// # }
/// ```
pub struct ProjectionTest<P> {
    projection: P,
    events: Vec<Envelope<Value>>,
}

impl<P: Projection> ProjectionTest<P> {
    /// A test of `projection` with no events yet.
    pub fn new(projection: P) -> Self {
        ProjectionTest {
            projection,
            events: Vec::new(),
        }
    }

    /// Adds an event (in a fresh envelope from service `test`).
    #[track_caller]
    pub fn given<E: Event>(self, event: E) -> Self {
        self.given_envelope(Envelope::from_event("test", event))
    }

    /// Adds an event in a prepared envelope (to fix its timestamp or metadata).
    #[track_caller]
    pub fn given_envelope<E: Event>(mut self, envelope: Envelope<E>) -> Self {
        match envelope.to_raw() {
            Ok(raw) => self.events.push(raw),
            Err(e) => panic!("cannot serialize a given event: {e}"),
        }
        self
    }

    /// Adds an event as JSON (e.g. one a Python producer would write).
    pub fn given_raw(mut self, envelope: Envelope<Value>) -> Self {
        self.events.push(envelope);
        self
    }

    /// Publishes the events, runs the projection until it took all of them (applied or
    /// dead-lettered), and returns the outcome to check.
    ///
    /// # Panics
    ///
    /// When the projection doesn't take every event in time or the in-memory backend fails:
    /// this is a test helper.
    pub async fn run(self) -> Projected {
        let transport = MemoryTransport::new();
        let store = transport.read_models();
        let models = ReadModels::new(store.clone());
        let bus = EventBus::new(transport.clone(), "test");
        let types = self.projection.event_types();
        let expected = self
            .events
            .iter()
            .filter(|e| types.contains(&e.event_type))
            .count() as u64;
        for event in &self.events {
            if let Err(e) = bus.publish_raw(std::slice::from_ref(event)).await {
                panic!("cannot publish a given event: {e}");
            }
        }
        let runner = ProjectionRunner::new(&bus, &models, self.projection).configure(|o| {
            o.consumer = "test".into();
            o.block = Duration::from_millis(20);
            o.retry_backoff = crate::Backoff::constant(Duration::from_millis(1));
        });
        let group = runner.group().to_owned();
        let running = match runner.start().await {
            Ok(r) => r,
            Err(e) => panic!("cannot start the projection: {e}"),
        };
        let deadline = tokio::time::Instant::now() + RUN_LIMIT;
        while running.stats().handled() + running.stats().dead_lettered() < expected {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the projection took {} of {expected} events in {RUN_LIMIT:?}",
                    running.stats().handled() + running.stats().dead_lettered()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Err(e) = running.shutdown().await {
            panic!("cannot stop the projection: {e}");
        }
        let dead_letters = transport
            .dead_letters(&group, usize::MAX)
            .await
            .unwrap_or_default();
        Projected {
            store,
            models,
            dead_letters,
        }
    }
}

/// The outcome of a [`ProjectionTest`]: the read model, to check with `then_*` (each panics
/// with what it found when the read model differs).
pub struct Projected {
    store: crate::projection::memory::MemoryReadModels,
    models: ReadModels,
    dead_letters: Vec<DeadLetter>,
}

/// Runs a store read that completes at once (the in-memory store never waits).
#[track_caller]
fn now<T>(f: impl std::future::Future<Output = crate::Result<T>>) -> T {
    match f.now_or_never() {
        Some(Ok(v)) => v,
        Some(Err(e)) => panic!("reading the read model failed: {e}"),
        None => panic!("the in-memory store unexpectedly waited"),
    }
}

impl Projected {
    /// The read models, for typed reads (`OrderSummary::load(projected.models(), "ord_1")`).
    pub fn models(&self) -> &ReadModels {
        &self.models
    }

    /// Events that were dead-lettered instead of applied.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// The hash at `key` has exactly these fields.
    #[track_caller]
    pub fn then_hash<'a>(
        &self,
        key: &str,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> &Self {
        let expected: BTreeMap<String, String> = fields
            .into_iter()
            .map(|(f, v)| (f.to_owned(), v.to_owned()))
            .collect();
        let found = now(self.store.hash(key));
        assert_eq!(found, Some(expected), "hash `{key}`");
        self
    }

    /// The list at `key` is exactly `values`, head first.
    #[track_caller]
    pub fn then_list<'a>(&self, key: &str, values: impl IntoIterator<Item = &'a str>) -> &Self {
        let expected: Vec<String> = values.into_iter().map(str::to_owned).collect();
        assert_eq!(now(self.store.list(key, 0, -1)), expected, "list `{key}`");
        self
    }

    /// The set at `key` has exactly `members`.
    #[track_caller]
    pub fn then_members<'a>(&self, key: &str, members: impl IntoIterator<Item = &'a str>) -> &Self {
        let expected: BTreeSet<String> = members.into_iter().map(str::to_owned).collect();
        assert_eq!(now(self.store.members(key)), expected, "set `{key}`");
        self
    }

    /// The counter at `key` is `value`.
    #[track_caller]
    pub fn then_counter(&self, key: &str, value: i64) -> &Self {
        assert_eq!(now(self.store.counter(key)), Some(value), "counter `{key}`");
        self
    }

    /// Nothing is stored at `key` (as a hash, list, set or counter).
    #[track_caller]
    pub fn then_absent(&self, key: &str) -> &Self {
        let hash = self.store.hash(key).now_or_never();
        assert!(
            matches!(hash, Some(Ok(None))),
            "expected nothing at `{key}`, found {hash:?}"
        );
        let list = now(self.store.list(key, 0, -1));
        assert!(
            list.is_empty(),
            "expected nothing at `{key}`, found list {list:?}"
        );
        self
    }

    /// `n` events were dead-lettered.
    #[track_caller]
    pub fn then_dead_lettered(&self, n: usize) -> &Self {
        assert_eq!(
            self.dead_letters.len(),
            n,
            "dead letters: {:?}",
            self.dead_letters
        );
        self
    }
}
