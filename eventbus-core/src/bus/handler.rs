//! Event handlers: what they take as their message (an event, its `Envelope<E>`, or an
//! `Envelope<Value>`), and the erased form the consumer loop runs.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::bus::Context;
use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::event::Event;
use crate::handler::{Bound, Message};

/// A handler with its event type erased, as the consumer loop runs it.
pub(crate) type ErasedHandler = Arc<
    dyn Fn(Arc<Envelope<Value>>, Context) -> BoxFuture<'static, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// Erases a bound event handler. Its message decodes the raw envelope: a decoding failure
/// (wrong type, unsupported schema version, data that doesn't fit) is a permanent failure,
/// so the entry is dead-lettered at once.
pub(crate) fn erase<M>(bound: Bound<Context, M>) -> ErasedHandler
where
    M: Message<Context, Raw = Arc<Envelope<Value>>, Output = Result<(), HandlerError>>,
{
    bound.into_fn()
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
