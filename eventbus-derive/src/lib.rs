//! Procedural macros for eventbus. Use them through `eventbus_core`, which re-exports them
//! and whose paths the generated code names (`::eventbus_core::…`).
//!
//! Work goes parse (`attr`) → validate (`check`) → expand (one module per macro); errors
//! are collected (`ctxt`) and a failed expansion still emits a fallback impl, so one mistake
//! doesn't cascade into unrelated errors.

#![deny(rustdoc::broken_intra_doc_links)]

mod aggregate;
mod args;
mod attr;
mod check;
mod ctxt;
mod event;
mod handler;
mod item;
mod message;
mod projection;
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
/// - `upcasters = [v1_to_v2, v2_to_v3]`: functions `fn(Value) -> Result<Value, BoxError>`
///   upgrading older payloads on read, the n-th from version n to n + 1
///   (`eventbus_core::Upcaster`).
/// - `partition_key = field`: the field whose `to_string()` is the event's partition key
///   (`eventbus_core::Event::partition_key`), so any `Display` field works. On a partitioned
///   topic, events with the same key land in one partition and keep their order; without a
///   key, the aggregate id decides, else round-robin. A field of type `Option<T>` gives a key
///   only when it is `Some`. Structs with named fields only: for an enum or a tuple struct,
///   implement `partition_key` by hand.
///
/// ```text
/// #[event(partition_key = customer_id)]      // all of one customer's orders, in order
/// pub struct OrderPlaced { pub order_id: String, pub customer_id: u64 }
/// ```
///
/// `Serialize`/`Deserialize` are derived unless the type already derives them; serde
/// attributes (`#[serde(rename_all = "…")]`, `#[serde(tag = "…")]`) work as usual.
#[proc_macro_attribute]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    event::expand(args.into(), input.into()).into()
}

/// Makes a struct or enum a command: implements `eventbus_core::Command` and derives serde.
///
/// ```text
/// #[command(output = OrderCreated, error = OrderError)]
/// pub struct CreateOrder { pub customer_id: String, pub items: Vec<Item> }
/// ```
///
/// Arguments: `name = "…"` (default: the type's name), `output = T` (what a successful
/// handling returns and publishes, default `()`), `error = E` (the business rejection, default
/// `NoRejection`). Both must be serializable (remote callers get them back).
///
/// A field marked `#[aggregate_id]` makes it a command for one aggregate instance
/// (`eventbus_core::es::AggregateCommand`, the id being the field's `to_string()`).
#[proc_macro_attribute]
pub fn command(args: TokenStream, input: TokenStream) -> TokenStream {
    message::expand_command(args.into(), input.into()).into()
}

/// Makes a struct or enum a query: implements `eventbus_core::Query`.
///
/// ```text
/// #[query(output = Option<OrderSummary>)]
/// pub struct GetOrder { pub order_id: String }
/// ```
///
/// Arguments: `output = T` (required), `name = "…"` (default: the type's name).
#[proc_macro_attribute]
pub fn query(args: TokenStream, input: TokenStream) -> TokenStream {
    message::expand_query(args.into(), input.into()).into()
}

/// Makes a type an event-sourced aggregate: on an impl block of its state type, whose
/// `#[apply]` methods fold each event type into the state. Implements
/// `eventbus_core::es::Aggregate`.
///
/// ```text
/// #[aggregate(name = "BankAccount", snapshot_every = 100, state_version = 1)]
/// impl BankAccount {
///     #[apply]
///     fn opened(&mut self, e: AccountOpened) { self.open = true; }
///     #[apply]
///     fn deposited(&mut self, e: MoneyDeposited) { self.balance += e.amount; }
/// }
/// ```
///
/// Arguments (all optional): `name = "…"` (the aggregate type in stream keys, default the
/// type's name), `snapshot_every = N` (0: never, the default), `state_version = N` (the
/// schema version of the serialized state stored with snapshots, default 1). The state type
/// must be `Default + Serialize + Deserialize`. An event of a type without `#[apply]` fails
/// the load. Command handlers go in a `#[command_handler(aggregate)]` impl block.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, input: TokenStream) -> TokenStream {
    aggregate::expand(args.into(), input.into()).into()
}

/// Makes an async fn (or every async method of an impl block) a command handler.
///
/// ```text
/// #[command_handler]
/// async fn create_order(cmd: CreateOrder, ctx: CommandContext) -> Result<OrderCreated, OrderError> { … }
/// // register: App::builder(service).command(create_order), or CommandBus::handle
///
/// #[command_handler]
/// impl OrderService {
///     async fn create(&self, cmd: CreateOrder, ctx: &CommandContext) -> Result<OrderCreated, OrderError> { … }
///     async fn cancel(&self, cmd: CancelOrder) -> Result<OrderCancelled, OrderError> { … }
/// }
/// // register: CommandBus::new(events).handlers(Arc::new(service))
/// ```
///
/// The fn stays the plain fn it is (callable directly in a unit test); the attribute checks
/// its shape — async, the command by value first, then extractors by value
/// (`CommandContext`, `State<T>`) — and that it is a `Handler` of its command, reporting a
/// mistake at the fn. Its return type must be `Result<C::Output, C::Error>` of the command.
/// Methods of an impl block take `&self`, the command and optionally `&CommandContext`.
///
/// On an aggregate's impl block, `#[command_handler(aggregate)]` makes every async method
/// taking `&self` (the current state) and a command (with an `#[aggregate_id]`) a handler
/// deciding on the loaded state; register them with
/// `CommandBus::aggregate(Repository::<Aggregate>::new(store))`:
///
/// ```text
/// #[command_handler(aggregate)]
/// impl BankAccount {
///     async fn withdraw(&self, cmd: Withdraw) -> Result<MoneyWithdrawn, AccountError> { … }
/// }
/// ```
#[proc_macro_attribute]
pub fn command_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    handler::expand(handler::Bus::Command, args.into(), input.into()).into()
}

/// Makes an async fn (or every async method of an impl block) a query handler.
///
/// ```text
/// #[query_handler]
/// async fn get_order(q: GetOrder, models: State<ReadModels>) -> Result<Option<OrderSummary>, QueryError> { … }
/// ```
///
/// As with `#[command_handler]`, the fn stays a plain fn: the query by value first, then
/// extractors by value (`QueryContext`, `State<T>` for a resource the app or the
/// `QueryBus` registered, resolved when the handler is bound). Methods of an impl block
/// take `&self`, the query, and optionally `&QueryContext` or `&T` for a resource.
#[proc_macro_attribute]
pub fn query_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    handler::expand(handler::Bus::Query, args.into(), input.into()).into()
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
