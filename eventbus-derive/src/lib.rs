//! Procedural macros for eventbus. Use them through `eventbus_core`, which re-exports them
//! and whose paths the generated code names (`::eventbus_core::…`).
//!
//! Macros: `#[event]` and `#[route]`. Work goes parse ([`attr`]) → validate ([`check`]) → expand (one module per macro); errors
//! are collected ([`ctxt`]) and a failed expansion still emits a fallback impl, so one mistake
//! doesn't cascade into unrelated errors.

mod attr;
mod check;
mod ctxt;
mod event;
mod route;

use proc_macro::TokenStream;

/// Makes a struct or enum an event: implements `eventbus_core::Event` and derives serde.
///
/// ```text
/// use eventbus_core::event;
///
/// #[event]                                   // type name `OrderCreated`, version 1
/// pub struct OrderCreated { pub order_id: String }
///
/// #[event(name = "Order.Shipped", version = 2)]
/// pub struct OrderShipped { pub order_id: String, pub carrier: String }
/// ```
///
/// Arguments:
/// - `name = "…"`: the event type name on the wire (default: the type's name). Must not be
///   empty nor contain whitespace, `:` or `*` (they break stream keys and patterns).
/// - `version = N`: the payload's schema version, at least 1 (default 1).
///
/// `Serialize`/`Deserialize` are derived unless the type already derives them; serde
/// attributes (`#[serde(rename_all = "…")]`, `#[serde(tag = "…")]`) work as usual.
#[proc_macro_attribute]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    event::expand(args.into(), input.into()).into()
}

/// Turns an async fn into a routing rule for `eventbus_core::Router`.
///
/// ```text
/// use eventbus_core::{route, Envelope, HandlerError, Router};
/// use serde_json::Value;
///
/// fn high_value(e: &Envelope<Value>) -> bool {
///     e.data["total"].as_f64().is_some_and(|t| t > 1000.0)
/// }
///
/// #[route("Order.Created", priority = 10, filter = high_value)]
/// async fn on_high_value_order(event: Envelope<Value>) -> Result<(), HandlerError> {
///     Ok(())
/// }
///
/// let mut router = Router::new();
/// router.add(on_high_value_order)?;
/// ```
///
/// Arguments:
/// - a pattern first (`"Order.*"`, `"**.Failed"`; see `eventbus_core::Pattern`), checked at
///   compile time;
/// - `priority = N`: an `i32` literal, higher runs first (default 0);
/// - `filter = path`: a `Fn(&Envelope<T>) -> bool`, `T` being the handler's payload type;
/// - `name = "…"`: the rule's name in logs and errors (default: the function's name).
///
/// The function becomes a unit struct of the same name implementing
/// `eventbus_core::IntoRule` (the function itself moves into that impl), exactly what
/// `Rule::new(pattern, handler)?.priority(N).filter(f).name(n)` builds by hand.
#[proc_macro_attribute]
pub fn route(args: TokenStream, input: TokenStream) -> TokenStream {
    route::expand(args.into(), input.into()).into()
}
