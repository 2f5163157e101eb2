//! Saga definitions: a named saga with ordered steps, built by plain code.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::Event;

/// One step of a saga: the command the coordinator publishes, the replies it awaits, and the
/// compensation that undoes the step when a later one fails.
///
/// The four event types are the reference article's `SagaStep`; a step may also name the
/// event by which its participant confirms a compensation (the coordinator then awaits it
/// before compensating the step before), and a timeout.
///
/// Each event is named by its type (an [`Event`], usually `#[event]`), so a typo is a
/// compile error; the `*_type` methods take names instead, for events that only non-Rust
/// participants define.
///
/// ```
/// use std::time::Duration;
/// use eventbus_core::event;
/// use eventbus_core::saga::SagaStep;
///
/// #[event(name = "PaymentProcessCommand")] pub struct ProcessPayment { pub amount: f64 }
/// #[event] pub struct PaymentProcessed { pub payment_id: String }
/// #[event] pub struct PaymentFailed { pub error: String }
/// #[event(name = "PaymentRefundCommand")] pub struct RefundPayment { pub amount: f64 }
/// #[event] pub struct PaymentRefunded {}
///
/// let step = SagaStep::new("process_payment")
///     .command::<ProcessPayment>()
///     .success::<PaymentProcessed>()
///     .failure::<PaymentFailed>()
///     .compensation::<RefundPayment>()
///     .compensated::<PaymentRefunded>()
///     .timeout(Duration::from_secs(30));
/// assert_eq!(step.command_event(), "PaymentProcessCommand");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaStep {
    name: String,
    command_event: String,
    success_event: String,
    failure_event: String,
    compensation_event: String,
    compensated_event: Option<String>,
    timeout: Option<Duration>,
}

impl SagaStep {
    /// A step named `name`; set its event types with the other builder methods.
    pub fn new(name: impl Into<String>) -> Self {
        SagaStep {
            name: name.into(),
            command_event: String::new(),
            success_event: String::new(),
            failure_event: String::new(),
            compensation_event: String::new(),
            compensated_event: None,
            timeout: None,
        }
    }

    /// The command event `C` the coordinator publishes to run the step (payload: the saga
    /// data plus `saga_id`, which the participant decodes into `C`: give `C` the fields of
    /// the saga data the step needs).
    pub fn command<C: Event>(self) -> Self {
        self.command_type(C::EVENT_TYPE)
    }

    /// The success event `S` by which the participant reports success; its fields merge
    /// into the saga data.
    pub fn success<S: Event>(self) -> Self {
        self.success_type(S::EVENT_TYPE)
    }

    /// The failure event `F` by which the participant reports failure; its `error` field
    /// (give `F` one) becomes the saga's error.
    pub fn failure<F: Event>(self) -> Self {
        self.failure_type(F::EVENT_TYPE)
    }

    /// The compensation event `U` the coordinator publishes to undo the step (payload like
    /// the command's).
    pub fn compensation<U: Event>(self) -> Self {
        self.compensation_type(U::EVENT_TYPE)
    }

    /// The event `K` by which the participant confirms a compensation. When set, the
    /// coordinator awaits it before compensating the previous step (re-publishing the
    /// compensation if it doesn't come within the step's timeout). Its payload is
    /// `saga_id` only.
    pub fn compensated<K: Event>(self) -> Self {
        self.compensated_type(K::EVENT_TYPE)
    }

    /// [`command`](Self::command) by event type name, for a step served by a participant
    /// that has no Rust type for it (a Python service on the same bus).
    pub fn command_type(mut self, event_type: impl Into<String>) -> Self {
        self.command_event = event_type.into();
        self
    }

    /// [`success`](Self::success) by event type name (non-Rust participants).
    pub fn success_type(mut self, event_type: impl Into<String>) -> Self {
        self.success_event = event_type.into();
        self
    }

    /// [`failure`](Self::failure) by event type name (non-Rust participants).
    pub fn failure_type(mut self, event_type: impl Into<String>) -> Self {
        self.failure_event = event_type.into();
        self
    }

    /// [`compensation`](Self::compensation) by event type name (non-Rust participants).
    pub fn compensation_type(mut self, event_type: impl Into<String>) -> Self {
        self.compensation_event = event_type.into();
        self
    }

    /// [`compensated`](Self::compensated) by event type name (non-Rust participants).
    pub fn compensated_type(mut self, event_type: impl Into<String>) -> Self {
        self.compensated_event = Some(event_type.into());
        self
    }

    /// How long the coordinator waits for the step's reply before failing the saga.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command event type.
    pub fn command_event(&self) -> &str {
        &self.command_event
    }

    /// The success event type.
    pub fn success_event(&self) -> &str {
        &self.success_event
    }

    /// The failure event type.
    pub fn failure_event(&self) -> &str {
        &self.failure_event
    }

    /// The compensation event type.
    pub fn compensation_event(&self) -> &str {
        &self.compensation_event
    }

    /// The compensation confirmation event type, if the participant confirms.
    pub fn compensated_event(&self) -> Option<&str> {
        self.compensated_event.as_deref()
    }

    /// The step's timeout, if any.
    pub fn step_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn validate(&self, saga: &str) -> Result<()> {
        let missing = [
            ("name", self.name.as_str()),
            ("command", &self.command_event),
            ("success", &self.success_event),
            ("failure", &self.failure_event),
            ("compensation", &self.compensation_event),
        ]
        .into_iter()
        .find(|(_, v)| v.trim().is_empty());
        if let Some((what, _)) = missing {
            return Err(Error::Config(format!(
                "saga `{saga}`, step `{}`: the {what} event type is not set",
                self.name
            )));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Config(format!(
                "saga `{saga}`, step `{}`: a timeout must be longer than zero",
                self.name
            )));
        }
        Ok(())
    }
}

/// A named saga: ordered steps and the type `D` of its data.
///
/// `D` is what [`SagaCoordinator::start`](crate::saga::SagaCoordinator::start) takes; it
/// must serialize to a JSON object (replies merge their fields into it). Use
/// [`serde_json::Value`] for untyped data. Cheap to clone.
///
/// ```
/// use eventbus_core::event;
/// use eventbus_core::saga::{SagaDefinition, SagaStep};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { order_id: String, amount: f64 }
///
/// #[event(name = "InventoryReserveCommand")] pub struct ReserveInventory { pub order_id: String }
/// #[event] pub struct InventoryReserved { pub reservation_id: String }
/// #[event] pub struct InventoryReserveFailed { pub error: String }
/// #[event(name = "InventoryReleaseCommand")] pub struct ReleaseInventory { pub order_id: String }
///
/// let create_order = SagaDefinition::<Order>::new("create_order")
///     .step(SagaStep::new("reserve_inventory")
///         .command::<ReserveInventory>()
///         .success::<InventoryReserved>()
///         .failure::<InventoryReserveFailed>()
///         .compensation::<ReleaseInventory>());
/// assert_eq!(create_order.steps()[0].command_event(), "InventoryReserveCommand");
/// ```
pub struct SagaDefinition<D = Value> {
    name: Arc<str>,
    steps: Arc<[SagaStep]>,
    _data: PhantomData<fn() -> D>,
}

impl<D> Clone for SagaDefinition<D> {
    fn clone(&self) -> Self {
        SagaDefinition {
            name: self.name.clone(),
            steps: self.steps.clone(),
            _data: PhantomData,
        }
    }
}

impl<D> fmt::Debug for SagaDefinition<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .field("steps", &self.steps)
            .finish()
    }
}

impl<D> SagaDefinition<D> {
    /// A saga named `name` (stored as `saga_name`), without steps yet.
    pub fn new(name: impl Into<String>) -> Self {
        let name: String = name.into();
        SagaDefinition {
            name: name.into(),
            steps: Arc::from(Vec::new()),
            _data: PhantomData,
        }
    }

    /// Appends a step.
    pub fn step(self, step: SagaStep) -> Self {
        let mut steps = self.steps.to_vec();
        steps.push(step);
        SagaDefinition {
            name: self.name,
            steps: steps.into(),
            _data: PhantomData,
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[SagaStep] {
        &self.steps
    }

    /// The same definition with its data untyped (how the coordinator keeps it).
    pub fn erased(&self) -> SagaDefinition<Value> {
        SagaDefinition {
            name: self.name.clone(),
            steps: self.steps.clone(),
            _data: PhantomData,
        }
    }

    /// Checks the definition: a name, at least one step, every event type set, step names
    /// unique, no zero timeout.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::Config("a saga needs a name".into()));
        }
        if self.steps.is_empty() {
            return Err(Error::Config(format!("saga `{}` has no steps", self.name)));
        }
        for (i, step) in self.steps.iter().enumerate() {
            step.validate(&self.name)?;
            if self.steps[..i].iter().any(|s| s.name == step.name) {
                return Err(Error::Config(format!(
                    "saga `{}` has two steps named `{}`",
                    self.name, step.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str) -> SagaStep {
        SagaStep::new(name)
            .command_type(format!("{name}Command"))
            .success_type(format!("{name}Done"))
            .failure_type(format!("{name}Failed"))
            .compensation_type(format!("{name}Undo"))
    }

    #[test]
    fn validation() {
        assert!(SagaDefinition::<Value>::new("s").validate().is_err());
        assert!(SagaDefinition::<Value>::new("s")
            .step(step("a"))
            .validate()
            .is_ok());
        let dup = SagaDefinition::<Value>::new("s")
            .step(step("a"))
            .step(step("a"));
        assert!(dup.validate().is_err());
        let incomplete =
            SagaDefinition::<Value>::new("s").step(SagaStep::new("a").command_type("C"));
        let err = incomplete.validate().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("success")));
        let zero = SagaDefinition::<Value>::new("s").step(step("a").timeout(Duration::ZERO));
        assert!(zero.validate().is_err());
    }
}
