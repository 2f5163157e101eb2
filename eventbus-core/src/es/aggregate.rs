//! The [`Aggregate`] trait, the commands addressed to one, and their handlers.

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::cqrs::{Command, CommandBus, CommandContext};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::es::Repository;
use crate::event::Event;

/// A consistency boundary whose state is the fold of its own past events.
///
/// The state is rebuilt by applying the events of the instance's stream in order (starting
/// from [`Default`], or from a snapshot); command handlers decide new events from the
/// current state, and the [`Repository`] appends them with optimistic concurrency.
///
/// Implement it with `#[aggregate]` on an impl block whose `#[apply]` methods take each
/// event, or by hand with an [`Applier`]:
///
/// ```
/// use eventbus_core::es::{Aggregate, Applier};
/// use eventbus_core::{event, Envelope};
///
/// #[event]
/// pub struct MoneyDeposited { pub amount: i64 }
///
/// #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
/// pub struct Account { balance: i64 }
///
/// impl Aggregate for Account {
///     const TYPE: &'static str = "Account";
///     fn apply(&mut self, event: &Envelope<serde_json::Value>) -> eventbus_core::Result<()> {
///         Applier::new(self, event)
///             .on(|account, e: MoneyDeposited| account.balance += e.amount)
///             .finish()
///     }
/// }
/// ```
///
/// The state is serialized for snapshots: bump [`STATE_VERSION`](Self::STATE_VERSION) when
/// its shape changes, and snapshots of the old shape are ignored (the state is replayed from
/// the events instead).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate",
    note = "add `#[eventbus_core::aggregate]` to an impl block of `{Self}` with `#[apply]` methods, or implement `eventbus_core::es::Aggregate` by hand"
)]
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type name; part of its stream keys (`{ns}:aggregate:{TYPE}:{id}`). Must
    /// not contain `:`, whitespace or glob characters.
    const TYPE: &'static str;
    /// The schema version of the serialized state, stored with snapshots.
    const STATE_VERSION: u32 = 1;
    /// Take a snapshot every this many events (0: never). [`Repository::snapshot_every`]
    /// overrides it.
    const SNAPSHOT_EVERY: u64 = 0;

    /// Applies one past event (as stored; decode it with [`Envelope::decode`], which upcasts
    /// older schema versions). An event the aggregate doesn't know is an error: it would
    /// otherwise be silently lost from the state.
    fn apply(&mut self, event: &Envelope<Value>) -> Result<()>;
}

/// A command addressed to one aggregate instance: it names the instance's id.
///
/// `#[command]` implements it for a struct with an `#[aggregate_id]` field.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not name an aggregate",
    note = "mark the field holding the aggregate's id with `#[aggregate_id]` under `#[command]`, or implement `eventbus_core::es::AggregateCommand` by hand"
)]
pub trait AggregateCommand: Command {
    /// The id of the aggregate instance the command is for.
    fn aggregate_id(&self) -> String;
}

/// Decides on commands `C` given the current state of aggregate `A`.
///
/// Implemented for plain functions and closures
/// `Fn(&A, C, &CommandContext) -> Result<C::Output, C::Error>` (a decision is pure: no I/O),
/// and by `#[command_handler(aggregate)]` for the async methods of an aggregate's impl block.
/// The handler may run more than once for one command: after a concurrency conflict the
/// aggregate is reloaded and the command decided again.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler of command `{C}` on aggregate `{A}`",
    note = "an aggregate command handler is `fn(&{A}, {C}, &CommandContext) -> Result<Output, Error>`, or an async method of `{A}` under `#[command_handler(aggregate)]`"
)]
pub trait AggregateHandler<A: Aggregate, C: Command>: Send + Sync + 'static {
    /// Decides on `command` given `state`.
    fn handle<'a>(
        &'a self,
        state: &'a A,
        command: C,
        ctx: &'a CommandContext,
    ) -> BoxFuture<'a, std::result::Result<C::Output, C::Error>>;
}

impl<A, C, F> AggregateHandler<A, C> for F
where
    A: Aggregate,
    C: Command,
    F: Fn(&A, C, &CommandContext) -> std::result::Result<C::Output, C::Error>
        + Send
        + Sync
        + 'static,
{
    fn handle<'a>(
        &'a self,
        state: &'a A,
        command: C,
        ctx: &'a CommandContext,
    ) -> BoxFuture<'a, std::result::Result<C::Output, C::Error>> {
        let decided = self(state, command, ctx);
        Box::pin(async move { decided })
    }
}

/// An aggregate whose command handlers are its own methods (`#[command_handler(aggregate)]`
/// on its impl block), registered all at once with [`CommandBus::aggregate`].
pub trait AggregateHandlers: Aggregate {
    /// Registers every command handler of the aggregate on `bus`, loading and appending
    /// through `repository`.
    fn register(bus: CommandBus, repository: &Repository<Self>) -> CommandBus;
}

/// Applies a stored event to a state by its type: the plain-code form of `#[apply]`.
///
/// Each [`on`](Self::on) tries one event type; [`finish`](Self::finish) fails when no
/// `on` matched the event's type, or when the matching one could not decode it.
#[must_use = "call `finish()` to learn whether the event was applied"]
pub struct Applier<'a, S> {
    state: &'a mut S,
    event: &'a Envelope<Value>,
    outcome: Option<Result<()>>,
}

impl<S> std::fmt::Debug for Applier<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("event_type", &self.event.event_type)
            .field("matched", &self.outcome.is_some())
            .finish()
    }
}

impl<'a, S> Applier<'a, S> {
    /// Starts applying `event` to `state`.
    pub fn new(state: &'a mut S, event: &'a Envelope<Value>) -> Self {
        Applier {
            state,
            event,
            outcome: None,
        }
    }

    /// Applies the event with `f` if it is of type `E` (decoded with upcasting).
    pub fn on<E: Event>(mut self, f: impl FnOnce(&mut S, E)) -> Self {
        if self.outcome.is_none() && self.event.event_type == E::EVENT_TYPE {
            self.outcome = Some(self.event.decode::<E>().map(|e| f(self.state, e.data)));
        }
        self
    }

    /// Whether the event was applied; an [`Error::Decode`] when its type was not handled
    /// or it could not be decoded.
    pub fn finish(self) -> Result<()> {
        self.outcome.unwrap_or_else(|| {
            Err(Error::Decode {
                event_type: self.event.event_type.clone(),
                reason: "the aggregate has no `apply` for this event type".to_string(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Added {
        n: i64,
    }
    impl Event for Added {
        const EVENT_TYPE: &'static str = "Added";
        const VERSION: u32 = 1;
    }

    #[test]
    fn applier_dispatches_by_type_and_reports_unknown_events() {
        let mut total = 0i64;
        let added = Envelope::new("Added", 1, "s", serde_json::json!({"n": 3}));
        Applier::new(&mut total, &added)
            .on(|t, e: Added| *t += e.n)
            .finish()
            .unwrap();
        assert_eq!(total, 3);

        let other = Envelope::new("Removed", 1, "s", serde_json::json!({"n": 3}));
        let err = Applier::new(&mut total, &other)
            .on(|t, e: Added| *t += e.n)
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("no `apply`"), "{err}");

        let bad = Envelope::new("Added", 1, "s", serde_json::json!({"n": "x"}));
        let err = Applier::new(&mut total, &bad)
            .on(|t, e: Added| *t += e.n)
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("invalid data"), "{err}");
        assert_eq!(total, 3);
    }
}
