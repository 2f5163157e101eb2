//! CQRS: the command bus (typed commands, one handler each, events published on success) and
//! the query bus (typed queries answered from read models).

mod command;
mod emit;
mod query;
mod remote;

pub(crate) use command::{AggregateDispatch, AggregateOutcome};
pub use command::{
    Command, CommandBus, CommandContext, CommandError, CommandHandlers, DispatchOptions,
    Dispatched, NoRejection, Position, Receipt,
};
pub use emit::{Emit, Emitted};
pub use query::{Query, QueryBus, QueryContext, QueryError, QueryHandlers};
pub use remote::{
    command_topic, reply_topic, CommandClient, CommandServer, ReplyStreams, DEFAULT_REPLY_TTL,
};
