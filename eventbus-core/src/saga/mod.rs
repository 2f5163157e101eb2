//! Sagas: distributed transactions as a sequence of steps, each undone by a compensation
//! when a later one fails — the reference article's saga coordinator, made safe.
//!
//! - A [`SagaDefinition`] names the saga and lists its [`SagaStep`]s: the command event the
//!   coordinator publishes, the success and failure events the participant answers with,
//!   the compensation event that undoes the step, optionally the event confirming a
//!   compensation, and a timeout.
//! - The [`SagaCoordinator`] stores each saga's [`SagaState`] (at `saga:{saga_id}` on Redis,
//!   in the article's JSON shape plus a version), publishes the steps' commands (payload:
//!   the saga data plus `saga_id`), merges each success reply's fields into the data, and on
//!   a failure or a timeout compensates every completed step in reverse order, one at a
//!   time, then ends the saga as failed with the error.
//! - Every transition is a compare-and-set on the state's version in a [`SagaStore`]:
//!   duplicate and late replies are ignored (and counted), never applied twice; any
//!   coordinator instance can carry on a saga another one started; a deadline is claimed by
//!   one instance at a time.
//! - A [`Participant`] serves steps: handle a typed command, reply with the typed success
//!   or failure event ([`Reply`]); idempotent by saga and step.
//!
//! Steps name their events by type (`.command::<ReserveInventory>()`, any
//! [`Event`](crate::Event)), so a typo is a compile error and a participant registered for
//! a command the saga doesn't have panics where it is registered. On the wire nothing is
//! typed: the Python services of the reference article can serve or drive the same sagas
//! (define their steps by name with `command_type("…")` and friends).
//!
//! The state machine itself is pure ([`transition`]); [`crate::testing::SagaTest`] runs it
//! given/when/then.
//!
//! A timed-out step is compensated too (its participant may have acted on the command after
//! all): participants get compensations of commands they never ran, or failed, and
//! [`Participant`] handles those by undoing nothing.

mod coordinator;
mod definition;
mod memory;
mod participant;
mod state;
mod store;
pub mod transition;

/// A deferred change to a subscription's options (coordinator and participant builders).
pub(crate) type Configure = Box<dyn FnOnce(&mut crate::bus::SubscriptionOptions) + Send>;

pub use coordinator::{
    CoordinatorOptions, CoordinatorStats, SagaCoordinator, SagaCoordinatorBuilder,
};
pub use definition::{SagaDefinition, SagaStep};
pub use memory::MemorySagaStore;
pub use participant::{
    Confirmation, Participant, ParticipantOptions, ParticipantStats, Reply, SagaCommand,
    SagaContext, StepReply,
};
pub use state::{HistoryEntry, OutgoingEvent, SagaInstance, SagaState, SagaStatus};
pub use store::{SagaStore, StepClaim, StepKey, StepRecord};
