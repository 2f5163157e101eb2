//! Given/when/then for command handlers.

use std::fmt::Debug;
use std::time::Duration;

use serde_json::Value;

use crate::bus::EventBus;
use crate::cqrs::{Command, CommandBus, CommandError, DispatchOptions};
use crate::envelope::Envelope;
use crate::event::Event;
use crate::transport::memory::MemoryTransport;
use crate::transport::{ConsumerSpec, StartFrom, StreamTransport, Topic};

/// Tests command handlers: given prior events (already on the bus) and resources, when a
/// command is dispatched, then the handler's output, rejection and published events.
///
/// ```
/// use eventbus_core::testing::CommandTest;
/// use eventbus_core::{command, command_handler, event, CommandContext};
///
/// #[event]
/// #[derive(Debug, Clone, PartialEq)]
/// pub struct OrderCreated { pub order_id: String, pub total: f64 }
///
/// #[derive(Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
/// pub enum OrderError { #[error("empty order")] Empty }
///
/// #[command(output = OrderCreated, error = OrderError)]
/// pub struct CreateOrder { pub order_id: String, pub prices: Vec<f64> }
///
/// #[command_handler]
/// async fn create_order(cmd: CreateOrder) -> Result<OrderCreated, OrderError> {
///     if cmd.prices.is_empty() { return Err(OrderError::Empty); }
///     Ok(OrderCreated { order_id: cmd.order_id, total: cmd.prices.iter().sum() })
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// CommandTest::new(|bus| bus.handle(create_order))
///     .when(CreateOrder { order_id: "o1".into(), prices: vec![2.0, 3.0] })
///     .await
///     .then_expect_events(&[OrderCreated { order_id: "o1".into(), total: 5.0 }]);
///
/// CommandTest::new(|bus| bus.handle(create_order))
///     .when(CreateOrder { order_id: "o2".into(), prices: vec![] })
///     .await
///     .then_expect_rejection(&OrderError::Empty);
/// # }
/// ```
pub struct CommandTest {
    transport: MemoryTransport,
    bus: CommandBus,
    given: Vec<Envelope<Value>>,
}

impl Debug for CommandTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandTest")
            .field("bus", &self.bus)
            .field("given", &self.given.len())
            .finish()
    }
}

/// The service name the harness publishes as.
const SERVICE: &str = "test-service";

impl CommandTest {
    /// A harness whose command bus is built by `wire` (register handlers and resources).
    pub fn new(wire: impl FnOnce(CommandBus) -> CommandBus) -> Self {
        let transport = MemoryTransport::new();
        let bus = wire(CommandBus::new(EventBus::new(transport.clone(), SERVICE)));
        CommandTest {
            transport,
            bus,
            given: Vec::new(),
        }
    }

    /// Events already on the bus before the command (they are not part of the outcome).
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

    /// Dispatches the command and collects what happened.
    pub async fn when<C: Command>(self, command: C) -> CommandTestOutcome<C> {
        let transport = self.transport.clone();
        let group = "command-test-inspector";
        // Watch the global stream from after the given events.
        if !self.given.is_empty() {
            let _ = transport.publish(&self.given).await;
        }
        let _ = transport
            .ensure_group(&Topic::All, group, StartFrom::New)
            .await;
        let result = self
            .bus
            .dispatch_with(command, DispatchOptions::default())
            .await;
        let mut events = Vec::new();
        if let Ok(consumer) = transport
            .consumer(ConsumerSpec {
                group: group.into(),
                consumer: "inspector".into(),
                topics: vec![Topic::All],
            })
            .await
        {
            if let Ok(deliveries) = consumer.read(10_000, Duration::ZERO).await {
                events = deliveries
                    .into_iter()
                    .filter_map(|d| d.event.ok())
                    .collect();
            }
        }
        CommandTestOutcome {
            result: result.map(|d| d.output),
            events,
        }
    }
}

/// What a dispatched command did; assert on it with the `then_*` methods.
#[derive(Debug)]
pub struct CommandTestOutcome<C: Command> {
    /// The dispatch result.
    pub result: Result<C::Output, CommandError<C::Error>>,
    /// Events published by the command, in order.
    pub events: Vec<Envelope<Value>>,
}

impl<C: Command> CommandTestOutcome<C>
where
    C::Output: Debug,
    C::Error: Debug,
{
    /// Asserts the command was accepted and published exactly `expected` (compared as JSON,
    /// with their type names).
    #[track_caller]
    pub fn then_expect_events<E: Event + Debug>(self, expected: &[E]) -> Self {
        let expected: Vec<(String, Value)> = expected
            .iter()
            .map(|e| {
                (
                    E::EVENT_TYPE.to_string(),
                    serde_json::to_value(e).unwrap_or(Value::Null),
                )
            })
            .collect();
        self.then_expect_raw_events(&expected)
    }

    /// Asserts the published events as `(event_type, data)` pairs (for several event types).
    #[track_caller]
    pub fn then_expect_raw_events(self, expected: &[(String, Value)]) -> Self {
        if let Err(e) = &self.result {
            panic!("expected the command to be accepted, but it failed: {e:?}");
        }
        let actual: Vec<(String, Value)> = self
            .events
            .iter()
            .map(|e| (e.event_type.clone(), e.data.clone()))
            .collect();
        assert_eq!(actual, expected, "published events differ");
        self
    }

    /// Asserts the command was rejected with `expected` and published nothing.
    #[track_caller]
    pub fn then_expect_rejection(self, expected: &C::Error) -> Self
    where
        C::Error: PartialEq,
    {
        match &self.result {
            Err(CommandError::Rejected(e)) => assert_eq!(e, expected, "rejection differs"),
            Err(other) => panic!("expected rejection {expected:?}, got the error {other:?}"),
            Ok(out) => {
                panic!("expected rejection {expected:?}, but the command was accepted: {out:?}")
            }
        }
        assert!(
            self.events.is_empty(),
            "a rejected command published {:?}",
            self.events
        );
        self
    }

    /// Asserts the command was accepted and returns its output for further checks.
    #[track_caller]
    pub fn output(self) -> C::Output {
        match self.result {
            Ok(out) => out,
            Err(e) => panic!("expected the command to be accepted, but it failed: {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommandContext;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Done {
        n: u32,
    }
    impl Event for Done {
        const EVENT_TYPE: &'static str = "Done";
        const VERSION: u32 = 1;
    }

    #[derive(Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
    #[error("no")]
    struct No;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Do {
        n: u32,
    }
    impl Command for Do {
        const COMMAND_TYPE: &'static str = "Do";
        type Output = Done;
        type Error = No;
    }

    fn harness() -> CommandTest {
        CommandTest::new(|bus| {
            bus.handle(|cmd: Do, _ctx: CommandContext| async move {
                if cmd.n == 0 {
                    Err(No)
                } else {
                    Ok(Done { n: cmd.n })
                }
            })
        })
        .given([Done { n: 99 }])
    }

    #[tokio::test]
    async fn passes_on_matching_events_and_ignores_given_ones() {
        let out = harness()
            .when(Do { n: 1 })
            .await
            .then_expect_events(&[Done { n: 1 }])
            .output();
        assert_eq!(out, Done { n: 1 });
    }

    #[tokio::test]
    #[should_panic(expected = "published events differ")]
    async fn fails_on_other_events() {
        harness()
            .when(Do { n: 1 })
            .await
            .then_expect_events(&[Done { n: 2 }]);
    }

    #[tokio::test]
    #[should_panic(expected = "but the command was accepted")]
    async fn fails_when_a_rejection_was_expected() {
        harness().when(Do { n: 1 }).await.then_expect_rejection(&No);
    }

    #[tokio::test]
    async fn rejection() {
        harness().when(Do { n: 0 }).await.then_expect_rejection(&No);
    }
}
