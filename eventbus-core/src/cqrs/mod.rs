//! CQRS: the command bus (typed commands, one handler each, events published on success) and
//! the query bus (typed queries answered from read models).

mod command;
mod context;
mod emit;
mod query;
mod remote;

pub(crate) use command::{AggregateDispatch, AggregateOutcome};
pub use command::{
    Command, CommandBus, CommandContext, CommandError, CommandHandler, CommandHandlers,
    DispatchOptions, Dispatched, NoRejection,
};
pub use context::Resources;
pub use emit::{Emit, Emitted};
pub use query::{Query, QueryBus, QueryContext, QueryError, QueryHandler, QueryHandlers};
pub use remote::{CommandClient, CommandServer, ReplyStreams, DEFAULT_REPLY_TTL};
