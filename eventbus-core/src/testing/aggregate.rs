//! Given/when/then for aggregates, on the in-memory event store.

use std::fmt::Debug;
use std::sync::Arc;

use serde_json::Value;

use crate::bus::EventBus;
use crate::cqrs::CommandBus;
use crate::envelope::Envelope;
use crate::es::{Aggregate, AggregateCommand, EventStore, MemoryEventStore, Repository};
use crate::event::Event;
use crate::testing::CommandTestOutcome;
use crate::transport::memory::MemoryTransport;

/// Tests an aggregate's command handlers: given its past events, when a command, then the
/// new events or the rejection (cqrs-es's `TestFramework`), on a [`MemoryEventStore`].
///
/// ```
/// use eventbus_core::testing::AggregateTest;
/// use eventbus_core::{aggregate, command, command_handler, event};
///
/// #[event]
/// #[derive(Debug, Clone)]
/// pub struct Deposited { pub amount: i64 }
///
/// #[event]
/// #[derive(Debug, Clone)]
/// pub struct Withdrawn { pub amount: i64 }
///
/// #[derive(Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
/// pub enum AccountError { #[error("insufficient funds")] InsufficientFunds }
///
/// #[command(output = Withdrawn, error = AccountError)]
/// pub struct Withdraw { #[aggregate_id] pub account: String, pub amount: i64 }
///
/// #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
/// pub struct Account { balance: i64 }
///
/// #[aggregate]
/// impl Account {
///     #[apply] fn deposited(&mut self, e: Deposited) { self.balance += e.amount; }
///     #[apply] fn withdrawn(&mut self, e: Withdrawn) { self.balance -= e.amount; }
/// }
///
/// #[command_handler(aggregate)]
/// impl Account {
///     async fn withdraw(&self, cmd: Withdraw) -> Result<Withdrawn, AccountError> {
///         if cmd.amount > self.balance { return Err(AccountError::InsufficientFunds); }
///         Ok(Withdrawn { amount: cmd.amount })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// AggregateTest::<Account>::new(|bus, repo| bus.aggregate(repo))
///     .given([Deposited { amount: 10 }])
///     .when(Withdraw { account: "a1".into(), amount: 4 })
///     .await
///     .then_expect_events(&[Withdrawn { amount: 4 }]);
///
/// AggregateTest::<Account>::new(|bus, repo| bus.aggregate(repo))
///     .given([Deposited { amount: 10 }])
///     .when(Withdraw { account: "a1".into(), amount: 11 })
///     .await
///     .then_expect_rejection(&AccountError::InsufficientFunds);
/// # }
/// ```
pub struct AggregateTest<A> {
    store: Arc<MemoryEventStore>,
    bus: CommandBus,
    given: Vec<Envelope<Value>>,
    _aggregate: std::marker::PhantomData<fn() -> A>,
}

impl<A> Debug for AggregateTest<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateTest")
            .field("aggregate", &std::any::type_name::<A>())
            .field("given", &self.given.len())
            .finish()
    }
}

/// The service name the harness publishes as.
const SERVICE: &str = "test-service";

impl<A: Aggregate> AggregateTest<A> {
    /// A harness whose command bus is wired by `wire` with a repository of `A` on a fresh
    /// in-memory store (e.g. `|bus, repo| bus.aggregate(repo)`).
    pub fn new(wire: impl FnOnce(CommandBus, Repository<A>) -> CommandBus) -> Self {
        let transport = MemoryTransport::new();
        let store = Arc::new(MemoryEventStore::new(transport.clone()));
        let shared: Arc<dyn EventStore> = store.clone();
        let bus = wire(
            CommandBus::new(EventBus::new(transport, SERVICE)),
            Repository::new(shared),
        );
        AggregateTest {
            store,
            bus,
            given: Vec::new(),
            _aggregate: std::marker::PhantomData,
        }
    }

    /// Past events of the aggregate the command addresses (appended before the command; not
    /// part of the outcome). Call it several times for events of several types.
    ///
    /// # Panics
    ///
    /// When an event cannot be serialized (a test setup mistake).
    #[track_caller]
    pub fn given<E: Event>(mut self, events: impl IntoIterator<Item = E>) -> Self {
        for e in events {
            match Envelope::from_event(SERVICE, e).to_raw() {
                Ok(raw) => self.given.push(raw),
                Err(err) => panic!("given event cannot be serialized: {err}"),
            }
        }
        self
    }

    /// Past events as stored envelopes (e.g. of an older schema version, to test upcasters).
    pub fn given_raw(mut self, events: impl IntoIterator<Item = Envelope<Value>>) -> Self {
        self.given.extend(events);
        self
    }

    /// Dispatches the command to the aggregate it names and collects the new events.
    ///
    /// # Panics
    ///
    /// When the given events cannot be stored or the new ones read back (in memory, only a
    /// harness bug).
    pub async fn when<C: AggregateCommand>(self, command: C) -> CommandTestOutcome<C> {
        let id = command.aggregate_id();
        let before = self.given.len() as u64;
        if let Err(e) = self.store.append(A::TYPE, &id, 0, &self.given).await {
            panic!("given events cannot be stored: {e}");
        }
        let result = self.bus.dispatch(command).await;
        let events = match self.store.read(A::TYPE, &id, before, usize::MAX).await {
            Ok(events) => events.into_iter().map(|e| e.event).collect(),
            Err(e) => panic!("new events cannot be read: {e}"),
        };
        CommandTestOutcome { result, events }
    }
}
