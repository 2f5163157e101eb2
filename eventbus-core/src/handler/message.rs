//! What a handler handles: its first argument, decoded from what the runtime delivers.

use std::sync::Arc;

use serde_json::Value;

use crate::bus::Context;
use crate::cqrs::{Command, CommandContext, Query, QueryContext, QueryError};
use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::event::Event;

/// What a handler in context `Ctx` handles: decoded from `Raw`, answered with `Output`.
pub trait Message<Ctx>: Sized + Send + 'static {
    /// What the runtime delivers.
    type Raw: Send + 'static;
    /// What a handler returns.
    type Output: Send + 'static;

    /// Decodes the message; a message that doesn't decode is answered with the `Err` output
    /// (for events: a permanent failure, so the entry is dead-lettered at once).
    fn from_raw(raw: Self::Raw) -> Result<Self, Self::Output>;
}

/// An event message of one type: what `.on(handler)` subscribes to.
pub trait EventMessage: Message<Context, Raw = Arc<Envelope<Value>>> {
    /// The event type name (the stream it is read from).
    const EVENT_TYPE: &'static str;
}

type EventOutput = Result<(), HandlerError>;

fn decode<E: Event>(raw: &Envelope<Value>) -> Result<Envelope<E>, EventOutput> {
    raw.decode::<E>()
        .map_err(|e| Err(HandlerError::permanent(e.to_string())))
}

impl<E: Event> Message<Context> for Envelope<E> {
    type Raw = Arc<Envelope<Value>>;
    type Output = EventOutput;

    fn from_raw(raw: Self::Raw) -> Result<Self, EventOutput> {
        decode(&raw)
    }
}

impl<E: Event> EventMessage for Envelope<E> {
    const EVENT_TYPE: &'static str = E::EVENT_TYPE;
}

impl<E: Event> Message<Context> for E {
    type Raw = Arc<Envelope<Value>>;
    type Output = EventOutput;

    fn from_raw(raw: Self::Raw) -> Result<Self, EventOutput> {
        decode(&raw).map(|envelope| envelope.data)
    }
}

impl<E: Event> EventMessage for E {
    const EVENT_TYPE: &'static str = E::EVENT_TYPE;
}

impl Message<Context> for Envelope<Value> {
    type Raw = Arc<Envelope<Value>>;
    type Output = EventOutput;

    fn from_raw(raw: Self::Raw) -> Result<Self, EventOutput> {
        Ok(Envelope::clone(&raw))
    }
}

impl<C: Command> Message<CommandContext> for C {
    type Raw = C;
    type Output = Result<C::Output, C::Error>;

    fn from_raw(raw: C) -> Result<Self, Self::Output> {
        Ok(raw)
    }
}

impl<Q: Query> Message<QueryContext> for Q {
    type Raw = Q;
    type Output = Result<Q::Output, QueryError>;

    fn from_raw(raw: Q) -> Result<Self, Self::Output> {
        Ok(raw)
    }
}
