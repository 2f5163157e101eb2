//! Given/when/then for sagas: the coordinator's state machine, without a bus or a store.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::Event;
use crate::saga::transition::{self, Ignored, Transition};
use crate::saga::{OutgoingEvent, SagaDefinition, SagaState, SagaStatus};

/// The clock the harness starts at (seconds since the epoch).
const T0: f64 = 1_700_000_000.0;

/// How long the harness awaits a compensation confirmation when the step has no timeout.
const COMPENSATION_RETRY: Duration = Duration::from_secs(30);

/// Tests a saga definition: given a started saga and earlier replies, when a reply arrives
/// or the current step times out, then the events the coordinator publishes and the state
/// it stores. Runs the coordinator's own transition functions.
///
/// ```
/// use eventbus_core::saga::{SagaDefinition, SagaStatus, SagaStep};
/// use eventbus_core::testing::SagaTest;
/// use eventbus_core::{event, Event};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { order_id: String }
///
/// #[event(name = "InventoryReserveCommand")] pub struct ReserveInventory { pub order_id: String }
/// #[event] pub struct InventoryReserved { pub reservation: String }
/// #[event] pub struct InventoryReserveFailed { pub error: String }
/// #[event(name = "InventoryReleaseCommand")] pub struct ReleaseInventory { pub order_id: String }
/// #[event(name = "PaymentProcessCommand")] pub struct ProcessPayment { pub order_id: String }
/// #[event] pub struct PaymentProcessed {}
/// #[event] pub struct PaymentFailed { pub error: String }
/// #[event(name = "PaymentRefundCommand")] pub struct RefundPayment { pub order_id: String }
///
/// let saga = SagaDefinition::<Order>::new("create_order")
///     .step(SagaStep::new("reserve_inventory").command::<ReserveInventory>()
///         .success::<InventoryReserved>().failure::<InventoryReserveFailed>()
///         .compensation::<ReleaseInventory>())
///     .step(SagaStep::new("process_payment").command::<ProcessPayment>()
///         .success::<PaymentProcessed>().failure::<PaymentFailed>()
///         .compensation::<RefundPayment>());
///
/// SagaTest::new(&saga)
///     .given_started(&Order { order_id: "ord_1".into() })
///     .given_reply(InventoryReserved { reservation: "r1".into() })
///     .when_reply(PaymentFailed { error: "card declined".into() })
///     .then_expect_published(&[ReleaseInventory::EVENT_TYPE])
///     .then_expect_status(SagaStatus::Failed)
///     .then_expect_error("card declined");
/// ```
#[derive(Debug, Clone)]
pub struct SagaTest {
    definition: SagaDefinition,
    state: Option<SagaState>,
    now: f64,
    replies: u64,
}

/// What happened when: the published events, whether it was ignored, and the state after.
#[derive(Debug, Clone)]
pub struct SagaTestOutcome {
    published: Vec<OutgoingEvent>,
    ignored: Option<Ignored>,
    state: SagaState,
}

impl SagaTest {
    /// A harness for `definition`.
    #[track_caller]
    pub fn new<D>(definition: &SagaDefinition<D>) -> Self {
        if let Err(e) = definition.validate() {
            panic!("invalid saga definition: {e}");
        }
        SagaTest {
            definition: definition.erased(),
            state: None,
            now: T0,
            replies: 0,
        }
    }

    /// The saga was started with `data` (its first command published).
    #[track_caller]
    pub fn given_started<D: Serialize>(mut self, data: &D) -> Self {
        let data = match serde_json::to_value(data) {
            Ok(Value::Object(map)) => map,
            other => panic!("saga data must serialize to a JSON object, got {other:?}"),
        };
        self.state = transition::start(&self.definition, "saga-under-test", data, self.now);
        self
    }

    /// The saga received this reply before (it must change the saga).
    #[track_caller]
    pub fn given_reply<E: Event>(self, event: E) -> Self {
        let data = reply_fields(&event);
        self.given_reply_raw(E::EVENT_TYPE, data)
    }

    /// [`given_reply`](Self::given_reply) by event type name and JSON payload (for steps
    /// defined by name).
    #[track_caller]
    pub fn given_reply_raw(mut self, event_type: &str, data: Value) -> Self {
        let outcome = self.apply_reply(event_type, data);
        if let Some(why) = outcome.ignored {
            panic!("given reply `{event_type}` was ignored ({why:?})");
        }
        self
    }

    /// Time passes (the clock moves on by `by`).
    pub fn given_elapsed(mut self, by: Duration) -> Self {
        self.now += by.as_secs_f64();
        self
    }

    /// A reply arrives (`saga_id` is added to its fields).
    #[track_caller]
    pub fn when_reply<E: Event>(self, event: E) -> SagaTestOutcome {
        let data = reply_fields(&event);
        self.when_reply_raw(E::EVENT_TYPE, data)
    }

    /// [`when_reply`](Self::when_reply) by event type name and JSON payload (for steps
    /// defined by name).
    #[track_caller]
    pub fn when_reply_raw(mut self, event_type: &str, data: Value) -> SagaTestOutcome {
        self.apply_reply(event_type, data)
    }

    /// The same reply event is delivered again (a redelivery of the event that caused the
    /// last transition).
    #[track_caller]
    pub fn when_redelivered(self) -> SagaTestOutcome {
        let state = self.started();
        let event_id = format!("reply-{}", self.replies);
        let outcome = transition::on_reply(
            &self.definition,
            &state,
            "",
            &event_id,
            &Map::new(),
            COMPENSATION_RETRY,
            self.now,
        );
        Self::outcome(state, outcome)
    }

    /// The current deadline passes and the coordinator polls it.
    #[track_caller]
    pub fn when_timed_out(self) -> SagaTestOutcome {
        let state = self.started();
        let Some(deadline) = state.deadline else {
            panic!("the saga has no deadline (does the current step have a timeout?)");
        };
        let outcome =
            transition::on_timeout(&self.definition, &state, COMPENSATION_RETRY, deadline);
        Self::outcome(state, outcome)
    }

    #[track_caller]
    fn started(&self) -> SagaState {
        match &self.state {
            Some(state) => state.clone(),
            None => panic!("call given_started first"),
        }
    }

    #[track_caller]
    fn apply_reply(&mut self, event_type: &str, data: Value) -> SagaTestOutcome {
        let state = self.started();
        let mut fields = match data {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => panic!("a reply's data must be a JSON object, got {other}"),
        };
        fields.insert("saga_id".into(), Value::String(state.saga_id.clone()));
        self.replies += 1;
        let event_id = format!("reply-{}", self.replies);
        let outcome = transition::on_reply(
            &self.definition,
            &state,
            event_type,
            &event_id,
            &fields,
            COMPENSATION_RETRY,
            self.now,
        );
        let outcome = Self::outcome(state, outcome);
        self.state = Some(outcome.state.clone());
        outcome
    }

    fn outcome(state: SagaState, transition: Transition) -> SagaTestOutcome {
        match transition {
            Transition::Apply(next) => SagaTestOutcome {
                published: next.outbox.clone(),
                ignored: None,
                state: *next,
            },
            Transition::Republish(published) => SagaTestOutcome {
                published,
                ignored: None,
                state,
            },
            Transition::Ignore(why) => SagaTestOutcome {
                published: Vec::new(),
                ignored: Some(why),
                state,
            },
        }
    }
}

/// An event's payload, as a participant would send it.
#[track_caller]
fn reply_fields<E: Event>(event: &E) -> Value {
    match serde_json::to_value(event) {
        Ok(value) => value,
        Err(e) => panic!("reply `{}` does not serialize: {e}", E::EVENT_TYPE),
    }
}

impl SagaTestOutcome {
    /// Expects exactly these event types published, in order.
    #[track_caller]
    pub fn then_expect_published(self, event_types: &[&str]) -> Self {
        let got: Vec<&str> = self
            .published
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(got, event_types, "published events differ");
        self
    }

    /// Expects the saga in this status.
    #[track_caller]
    pub fn then_expect_status(self, status: SagaStatus) -> Self {
        assert_eq!(self.state.state, status, "saga status differs");
        self
    }

    /// Expects the saga's error to contain `text`.
    #[track_caller]
    pub fn then_expect_error(self, text: &str) -> Self {
        match &self.state.error {
            Some(e) if e.contains(text) => self,
            other => panic!("expected an error containing {text:?}, got {other:?}"),
        }
    }

    /// Expects the event to have been ignored (a duplicate, late, or finished saga).
    #[track_caller]
    pub fn then_expect_ignored(self) -> Self {
        assert!(
            self.ignored.is_some(),
            "expected the event to be ignored, but it published {:?}",
            self.published
        );
        self
    }

    /// Expects the saga data to hold `key` = `value`.
    #[track_caller]
    pub fn then_expect_data(self, key: &str, value: Value) -> Self {
        assert_eq!(
            self.state.data.get(key),
            Some(&value),
            "saga data `{key}` differs"
        );
        self
    }

    /// Expects the history's last actions to be these `(step, action)` pairs.
    #[track_caller]
    pub fn then_expect_history_ends_with(self, actions: &[(&str, &str)]) -> Self {
        let all = self.state.actions();
        let tail = &all[all.len().saturating_sub(actions.len())..];
        assert_eq!(tail, actions, "history differs (whole history: {all:?})");
        self
    }

    /// The state after, for further checks.
    pub fn state(&self) -> &SagaState {
        &self.state
    }

    /// The events published, for further checks.
    pub fn published(&self) -> &[OutgoingEvent] {
        &self.published
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::saga::SagaStep;

    fn step(name: &str) -> SagaStep {
        SagaStep::new(name)
            .command_type(format!("{name}.Command"))
            .success_type(format!("{name}.Done"))
            .failure_type(format!("{name}.Failed"))
            .compensation_type(format!("{name}.Undo"))
    }

    fn saga() -> SagaDefinition {
        SagaDefinition::new("s")
            .step(step("a"))
            .step(
                step("b")
                    .compensated_type("b.Undone")
                    .timeout(Duration::from_secs(5)),
            )
            .step(step("c").timeout(Duration::from_secs(5)))
    }

    #[test]
    fn happy_path_merges_data_and_completes() {
        SagaTest::new(&saga())
            .given_started(&json!({"order_id": "o1"}))
            .given_reply_raw("a.Done", json!({"x": 1}))
            .given_reply_raw("b.Done", json!({"y": 2}))
            .when_reply_raw("c.Done", json!({}))
            .then_expect_published(&[])
            .then_expect_status(SagaStatus::Completed)
            .then_expect_data("x", json!(1))
            .then_expect_data("y", json!(2));
    }

    #[test]
    fn failure_compensates_in_reverse_awaiting_confirmations() {
        let failed = SagaTest::new(&saga())
            .given_started(&json!({}))
            .given_reply_raw("a.Done", json!({}))
            .given_reply_raw("b.Done", json!({}))
            .when_reply_raw("c.Failed", json!({"error": "boom"}))
            .then_expect_published(&["b.Undo"])
            .then_expect_status(SagaStatus::Compensating)
            .then_expect_error("boom");
        let state = failed.state().clone();
        let next = transition::on_reply(
            &saga(),
            &state,
            "b.Undone",
            "e9",
            &Map::new(),
            COMPENSATION_RETRY,
            T0,
        );
        let Transition::Apply(next) = next else {
            panic!("confirmation not applied: {next:?}");
        };
        assert_eq!(next.state, SagaStatus::Failed);
        assert_eq!(next.outbox[0].event_type, "a.Undo");
    }

    #[test]
    fn duplicates_timeouts_and_redelivery() {
        SagaTest::new(&saga())
            .given_started(&json!({}))
            .given_reply_raw("a.Done", json!({}))
            .when_reply_raw("a.Done", json!({}))
            .then_expect_ignored();
        SagaTest::new(&saga())
            .given_started(&json!({}))
            .given_reply_raw("a.Done", json!({}))
            .when_redelivered()
            .then_expect_published(&["b.Command"]);
        SagaTest::new(&saga())
            .given_started(&json!({}))
            .given_reply_raw("a.Done", json!({}))
            .given_reply_raw("b.Done", json!({}))
            .when_timed_out()
            .then_expect_published(&["c.Undo", "b.Undo"])
            .then_expect_status(SagaStatus::Compensating)
            .then_expect_error("timed out")
            // `c` confirms nothing: compensated once its compensation is published; `b`
            // confirms, so it stays `compensating` until the confirmation.
            .then_expect_history_ends_with(&[
                ("c", "timed_out"),
                ("c", "compensating"),
                ("c", "compensated"),
                ("b", "compensating"),
            ]);
    }
}
