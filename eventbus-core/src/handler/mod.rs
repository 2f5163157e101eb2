//! One handler model for everything a service handles: events, commands and queries.
//!
//! A handler is an async fn or closure. Its first argument is what it handles (its
//! [`Message`]: an event `E`, an `Envelope<E>`, an `Envelope<Value>`, a command or a query);
//! every other argument is an extractor ([`FromContext`]): the delivery's [`Context`], a
//! command's [`CommandContext`], or [`State<T>`] for a shared resource. Like axum's handlers,
//! extractors are taken by value.
//!
//! ```
//! use eventbus_core::{event, Context, Envelope, EventBus, HandlerError, State};
//! use eventbus_core::transport::memory::MemoryTransport;
//!
//! #[event]
//! #[derive(Debug, Clone)]
//! pub struct OrderCreated { pub order_id: String }
//!
//! struct Mailer { from: String }
//!
//! async fn welcome(
//!     order: OrderCreated,
//!     ctx: Context,
//!     mailer: State<Mailer>,
//! ) -> Result<(), HandlerError> {
//!     println!("{} mails about {} (delivery {})", mailer.from, order.order_id, ctx.delivery().delivery_count);
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), eventbus_core::Error> {
//! let bus = EventBus::new(MemoryTransport::new(), "mailer");
//! let subscription = bus
//!     .subscribe()
//!     .state(Mailer { from: "shop@example.com".into() })
//!     .on(welcome)
//!     .start()
//!     .await?;
//! subscription.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! [`Context`]: crate::Context
//! [`CommandContext`]: crate::CommandContext

mod message;
mod state;

use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use message::Message;
pub(crate) use state::context_extractor;
pub use state::{FromContext, MissingState, Resources, State};

/// A handler of `Self::Message` in context `Ctx`: implemented for every async fn and closure
/// `Fn(M, T1, …, Tn) -> impl Future<Output = M::Output>` whose first argument is a
/// [`Message`] and whose others (up to six) are [`FromContext`] extractors. `Args` only
/// tells the shapes apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler here",
    label = "not a handler of this kind",
    note = "a handler is an async fn or closure: its first argument is what it handles (an event, `Envelope<E>`, a command or a query), the others are extractors (`Context`, `CommandContext`, `QueryContext`, `State<T>`), all by value; it returns the result type of what it handles (`Result<(), HandlerError>` for events, `Result<Output, Error>` of a command, `Result<Output, QueryError>` of a query)"
)]
pub trait Handler<Ctx, Args>: Send + Sync + 'static {
    /// What the handler handles.
    type Message: Message<Ctx>;

    /// Resolves the handler's extractors against the registered resources, once: a
    /// [`State<T>`] whose `T` was never registered is an error here, never at call time.
    fn bind(self, resources: &Resources) -> Result<Bound<Ctx, Self::Message>, MissingState>;
}

/// The output a handler of message `M` returns in context `Ctx`.
pub type Output<Ctx, M> = <M as Message<Ctx>>::Output;

type BoundFn<Ctx, M> =
    dyn Fn(<M as Message<Ctx>>::Raw, Ctx) -> BoxFuture<'static, Output<Ctx, M>> + Send + Sync;

/// A handler whose extractors are resolved: called with the raw message and the context.
pub struct Bound<Ctx, M: Message<Ctx>> {
    call: Arc<BoundFn<Ctx, M>>,
}

impl<Ctx, M: Message<Ctx>> Clone for Bound<Ctx, M> {
    fn clone(&self) -> Self {
        Bound {
            call: self.call.clone(),
        }
    }
}

impl<Ctx, M: Message<Ctx>> std::fmt::Debug for Bound<Ctx, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

impl<Ctx, M: Message<Ctx>> Bound<Ctx, M> {
    /// A bound handler from a function of the raw message and the context (for handlers
    /// implemented by hand).
    pub fn new(
        call: impl Fn(M::Raw, Ctx) -> BoxFuture<'static, M::Output> + Send + Sync + 'static,
    ) -> Self {
        Bound {
            call: Arc::new(call),
        }
    }

    /// Calls the handler.
    pub fn call(&self, raw: M::Raw, ctx: Ctx) -> BoxFuture<'static, M::Output> {
        (self.call)(raw, ctx)
    }

    /// The bound function itself, for a runtime that stores handlers of one raw shape.
    pub(crate) fn into_fn(self) -> Arc<BoundFn<Ctx, M>> {
        self.call
    }
}

/// Binds `handler`, panicking at the caller's line when an extractor's resource is missing.
#[track_caller]
pub(crate) fn bind_here<Ctx, Args, H: Handler<Ctx, Args>>(
    handler: H,
    resources: &Resources,
) -> Bound<Ctx, H::Message> {
    let at = Location::caller();
    match handler.bind(resources) {
        Ok(bound) => bound,
        Err(missing) => panic!("{}", missing.at(at)),
    }
}

type Binder<Ctx, M> = dyn FnOnce(&Resources) -> Result<Bound<Ctx, M>, MissingState> + Send;

/// A handler registered but not yet bound: resolved when the app is built, against every
/// resource registered by then; a missing one names the line that registered the handler.
pub(crate) struct Unbound<Ctx, M: Message<Ctx>> {
    binder: Box<Binder<Ctx, M>>,
    at: &'static Location<'static>,
}

impl<Ctx: 'static, M: Message<Ctx>> Unbound<Ctx, M> {
    #[track_caller]
    pub(crate) fn new<Args, H: Handler<Ctx, Args, Message = M>>(handler: H) -> Self {
        Unbound {
            binder: Box::new(move |resources| handler.bind(resources)),
            at: Location::caller(),
        }
    }

    /// Binds the handler; `Err` says what is missing and where the handler was registered.
    pub(crate) fn bind(self, resources: &Resources) -> Result<Bound<Ctx, M>, String> {
        let at = self.at;
        (self.binder)(resources).map_err(|missing| missing.at(at))
    }
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        #[allow(non_snake_case)]
        impl<F, Fut, Ctx, M, $($ty,)*> Handler<Ctx, (M, $($ty,)*)> for F
        where
            F: Fn(M, $($ty,)*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = M::Output> + Send + 'static,
            Ctx: Send + 'static,
            M: Message<Ctx>,
            $($ty: FromContext<Ctx>,)*
        {
            type Message = M;

            fn bind(self, resources: &Resources) -> Result<Bound<Ctx, M>, MissingState> {
                let _ = resources;
                $(let $ty = <$ty as FromContext<Ctx>>::prepare(resources)?;)*
                Ok(Bound::new(move |raw, ctx: Ctx| {
                    let _ = &ctx;
                    match M::from_raw(raw) {
                        Ok(message) => Box::pin(self(
                            message,
                            $(<$ty as FromContext<Ctx>>::extract(&$ty, &ctx),)*
                        )),
                        Err(output) => Box::pin(std::future::ready(output)),
                    }
                }))
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);

#[cfg(test)]
mod tests;
