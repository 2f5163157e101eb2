//! Event handlers: the typed trait users implement (or pass closures for), and the
//! type-erased form the consumer loop runs.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::bus::Context;
use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::event::Event;

/// Handles events of type `E`.
///
/// Implemented for async closures and functions taking `Envelope<E>`, or
/// `(Envelope<E>, Context)`, and returning `Result<(), HandlerError>`. `Args` only tells those
/// two shapes apart; implement it by hand as `EventHandler<E, ()>`.
///
/// Handlers must be idempotent: delivery is at-least-once.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event handler for `{E}`",
    note = "a handler is an async fn or closure taking `Envelope<{E}>` (and optionally `Context`) and returning `Result<(), HandlerError>`"
)]
pub trait EventHandler<E, Args = ()>: Send + Sync + 'static {
    /// Handles one event. An `Err` means the delivery failed: it is retried, or
    /// dead-lettered when permanent or out of deliveries.
    fn handle(
        &self,
        event: Envelope<E>,
        ctx: Context,
    ) -> BoxFuture<'static, Result<(), HandlerError>>;
}

impl<E, F, Fut> EventHandler<E, (Envelope<E>,)> for F
where
    E: Send + 'static,
    F: Fn(Envelope<E>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(
        &self,
        event: Envelope<E>,
        _ctx: Context,
    ) -> BoxFuture<'static, Result<(), HandlerError>> {
        Box::pin(self(event))
    }
}

impl<E, F, Fut> EventHandler<E, (Envelope<E>, Context)> for F
where
    E: Send + 'static,
    F: Fn(Envelope<E>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(
        &self,
        event: Envelope<E>,
        ctx: Context,
    ) -> BoxFuture<'static, Result<(), HandlerError>> {
        Box::pin(self(event, ctx))
    }
}

/// A handler with its event type erased, as the consumer loop runs it.
pub(crate) type ErasedHandler = Arc<
    dyn Fn(Arc<Envelope<Value>>, Context) -> BoxFuture<'static, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// Erases a typed handler: decoding failures (wrong type, unsupported schema version, data
/// that doesn't fit `E`) become permanent failures, so the entry is dead-lettered at once.
pub(crate) fn erase_typed<E, Args, H>(handler: H) -> ErasedHandler
where
    E: Event,
    Args: 'static,
    H: EventHandler<E, Args>,
{
    let handler = Arc::new(handler);
    Arc::new(
        move |raw: Arc<Envelope<Value>>, ctx: Context| match raw.decode::<E>() {
            Ok(event) => handler.handle(event, ctx),
            Err(e) => Box::pin(async move { Err(HandlerError::permanent(e.to_string())) }),
        },
    )
}

/// Erases a handler of raw (JSON) events.
pub(crate) fn erase_raw<Args, H>(handler: H) -> ErasedHandler
where
    Args: 'static,
    H: EventHandler<Value, Args>,
{
    let handler = Arc::new(handler);
    Arc::new(move |raw: Arc<Envelope<Value>>, ctx: Context| {
        handler.handle(Envelope::clone(&raw), ctx)
    })
}
