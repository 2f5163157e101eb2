//! What a service built on eventbus needs, in one import: `use eventbus_core::prelude::*;`
//! (eventbus-redis's prelude adds the Redis backend).

pub use crate::app::{App, AppBuilder};
pub use crate::bus::{Context, EventBus, Subscription};
pub use crate::cqrs::{
    Command, CommandBus, CommandContext, CommandError, NoRejection, Query, QueryBus, QueryContext,
    QueryError, Receipt,
};
pub use crate::envelope::Envelope;
pub use crate::error::{BoxError, Error, HandlerError};
pub use crate::event::Event;
pub use crate::handler::State;
pub use crate::projection::{ReadModel, ReadModels};
pub use crate::router::Router;
pub use eventbus_derive::{
    aggregate, command, command_handler, event, projection, query, query_handler, route,
};
