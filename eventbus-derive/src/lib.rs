//! Procedural macros for eventbus. Use them through `eventbus_core`, which re-exports them
//! and whose paths the generated code names (`::eventbus_core::…`).
//!
//! Work goes parse (`attr`) → validate (`check`) → expand (one module per macro); errors
//! are collected (`ctxt`) and a failed expansion still emits a fallback impl, so one mistake
//! doesn't cascade into unrelated errors.

mod attr;
mod check;
mod ctxt;
mod event;
mod projection;

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

/// Declares a read model: how events change a Redis hash, list, set or counter, with no
/// Redis command written. Implements `eventbus_core::projection::ReadModel` and adds typed
/// reads (`key`, and `load`, `list`, `members` or `get`).
///
/// ```text
/// #[projection(hash = "orders:summary:{order_id}", delete_on = OrderCancelled)]
/// pub struct OrderSummary {
///     #[set(from = OrderCreated)] pub order_id: String,
///     #[set(from = OrderCreated, field = amount)] pub total: f64,
///     #[set(OrderCreated = "created", OrderShipped = "shipped")] pub status: String,
///     #[timestamp(OrderShipped)] pub shipped_at: Option<f64>,
///     #[incr(ItemAdded)] pub items: i64,
/// }
///
/// #[projection(list = "customers:{customer_id}:orders", push = order_id, on = OrderCreated,
///              remove_on = OrderCancelled, max_len = 100)]
/// pub struct CustomerOrders;
///
/// #[projection(set = "customers:{customer_id}:skus", add = sku, on = ItemAdded)]
/// pub struct CustomerSkus;
///
/// #[projection(counter = "orders:count:{customer_id}", on = OrderCreated, decr_on = OrderCancelled)]
/// pub struct OrderCount;
/// ```
///
/// See `eventbus_core::projection` for the arguments and the runtime.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, input: TokenStream) -> TokenStream {
    projection::expand(args.into(), input.into()).into()
}
