//! Event handlers in the form the consumer loop runs them: bound, with the event type erased.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::bus::Context;
use crate::envelope::Envelope;
use crate::error::HandlerError;
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
    Arc::new(move |raw, ctx| bound.call(raw, ctx))
}
