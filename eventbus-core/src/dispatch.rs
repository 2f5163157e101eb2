//! Handlers of one envelope, as the Pub/Sub bus and the router run them.
//!
//! Pub/Sub deliveries and in-process dispatch have no Streams delivery to describe, so their
//! handlers take the envelope only: an async fn or closure `Fn(Envelope<T>) -> impl
//! Future<Output = Result<(), HandlerError>>`, where `T` is a typed [`Event`] or
//! [`serde_json::Value`] for raw JSON events ([`Payload`]).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::{HandlerError, Result};
use crate::event::Event;
use crate::handler::{bind_here, Handler, Message, Resources};

/// What a handler can take as its envelope's payload: a typed [`Event`], or
/// [`serde_json::Value`] for any event as JSON.
pub trait Payload: Sized + Send + Sync + 'static {
    /// Whether events of this type name can be this payload (typed events: their own name
    /// only; JSON: every name).
    fn accepts(event_type: &str) -> bool;

    /// Decodes a raw envelope (typed events check the type name and schema version).
    fn decode(raw: &Envelope<Value>) -> Result<Envelope<Self>>;
}

impl Payload for Value {
    fn accepts(_event_type: &str) -> bool {
        true
    }

    fn decode(raw: &Envelope<Value>) -> Result<Envelope<Self>> {
        Ok(raw.clone())
    }
}

impl<E: Event> Payload for E {
    fn accepts(event_type: &str) -> bool {
        event_type == E::EVENT_TYPE
    }

    fn decode(raw: &Envelope<Value>) -> Result<Envelope<Self>> {
        raw.decode::<E>()
    }
}

/// Pub/Sub deliveries and in-process routing hand their handlers the envelope alone: a
/// handler there is a [`Handler<(), Args>`](crate::Handler) whose message is an
/// `Envelope<T>` (typed, or `Envelope<Value>` for any event as JSON).
impl<T: Payload> Message<()> for Envelope<T> {
    type Raw = Arc<Envelope<Value>>;
    type Output = Result<(), HandlerError>;

    fn from_raw(raw: Self::Raw) -> Result<Self, Self::Output> {
        T::decode(&raw).map_err(|e| Err(HandlerError::permanent(e.to_string())))
    }
}

/// A handler with its payload type erased: decodes, then calls.
pub(crate) type RawHandler =
    Arc<dyn Fn(Arc<Envelope<Value>>) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// Erases a handler of `Envelope<T>`: an envelope that does not decode as `T` is a
/// permanent failure.
#[track_caller]
pub(crate) fn erase<T, Args, H>(handler: H) -> RawHandler
where
    T: Payload,
    H: Handler<(), Args, Message = Envelope<T>>,
{
    let bound = bind_here(handler, &Resources::default());
    Arc::new(move |raw: Arc<Envelope<Value>>| bound.call(raw, ()))
}

/// Runs a handler so that a panic, while making its future or while running it, is a
/// failure of that handler rather than of the caller.
pub(crate) async fn call_isolated(
    handler: &RawHandler,
    event: Arc<Envelope<Value>>,
) -> Result<(), HandlerError> {
    crate::panic::catch(|| handler(event))
        .await
        .unwrap_or_else(|panic| {
            Err(HandlerError::retryable(format!(
                "handler panicked: {panic}"
            )))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_failures() {
        let in_future: RawHandler = erase(|_e: Envelope<Value>| async {
            if true {
                panic!("boom");
            }
            Ok(())
        });
        let raw = Arc::new(Envelope::new("X", 1, "s", Value::Null));
        let err = call_isolated(&in_future, raw.clone()).await.unwrap_err();
        assert!(err.message().contains("boom"), "{err}");

        #[allow(unreachable_code)]
        let before_future: RawHandler = erase(|_e: Envelope<Value>| {
            panic!("early");
            async { Ok(()) }
        });
        let err = call_isolated(&before_future, raw).await.unwrap_err();
        assert!(err.message().contains("early"), "{err}");
    }
}
