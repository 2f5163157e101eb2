//! The [`Event`] trait: what makes a type publishable.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A domain event: a fact that happened, named in the past tense (`OrderCreated`).
///
/// Implement it with `#[event]`, which also derives serde:
///
/// ```
/// use eventbus_core::event;
///
/// #[event(name = "Order.Created", version = 2)]
/// #[derive(Debug, Clone)]
/// pub struct OrderCreated {
///     pub order_id: String,
///     pub total: f64,
/// }
///
/// use eventbus_core::Event;
/// assert_eq!(OrderCreated::EVENT_TYPE, "Order.Created");
/// assert_eq!(OrderCreated::VERSION, 2);
/// ```
///
/// or by hand, with serde's derives:
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct PaymentCompleted { order_id: String }
///
/// impl eventbus_core::Event for PaymentCompleted {
///     const EVENT_TYPE: &'static str = "PaymentCompleted";
///     const VERSION: u32 = 1;
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    note = "add `#[eventbus_core::event]` to the type's definition, or implement `eventbus_core::Event` by hand"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event type name on the wire (stream `eventbus:stream:{EVENT_TYPE}`).
    const EVENT_TYPE: &'static str;
    /// The schema version of the payload; starts at 1.
    const VERSION: u32;
}
