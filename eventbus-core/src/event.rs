//! The [`Event`] trait: what makes a type publishable.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::BoxError;

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
    /// How payloads of older schema versions are upgraded on read, one version at a time
    /// (see [`Upcaster`]). Empty by default: an older version is then a decode error.
    const UPCASTERS: &'static [Upcaster] = &[];

    /// The explicit partition key of this event, if it has one: on a partitioned topic,
    /// events with the same key land in one partition and keep their order. `None` by
    /// default, which leaves the choice to the aggregate id, then round-robin (see
    /// [`Envelope::partition_key`](crate::Envelope::partition_key)).
    ///
    /// Envelopes built from the event ([`Envelope::from_event`](crate::Envelope::from_event),
    /// [`EventBus::publish`](crate::EventBus::publish), a command's output) store it in their
    /// metadata under [`META_PARTITION_KEY`](crate::envelope::META_PARTITION_KEY).
    ///
    /// Declare it with `#[event(partition_key = field)]`, or by hand:
    ///
    /// ```
    /// use eventbus_core::{event, Envelope, Event};
    ///
    /// #[event(partition_key = customer_id)]
    /// pub struct OrderPlaced { pub order_id: String, pub customer_id: u64 }
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct StockMoved { sku: String, warehouse: String }
    ///
    /// impl Event for StockMoved {
    ///     const EVENT_TYPE: &'static str = "StockMoved";
    ///     const VERSION: u32 = 1;
    ///
    ///     fn partition_key(&self) -> Option<String> {
    ///         Some(format!("{}@{}", self.sku, self.warehouse))
    ///     }
    /// }
    ///
    /// let placed = OrderPlaced { order_id: "o1".into(), customer_id: 42 };
    /// assert_eq!(Envelope::from_event("shop", placed).partition_key(), Some("42"));
    /// let moved = StockMoved { sku: "tea".into(), warehouse: "north".into() };
    /// assert_eq!(Envelope::from_event("stock", moved).partition_key(), Some("tea@north"));
    /// ```
    fn partition_key(&self) -> Option<String> {
        None
    }
}

/// The signature of an upcaster: the payload of one schema version in, the next one's out.
pub type UpcastFn = fn(Value) -> Result<Value, BoxError>;

/// Upgrades an event's payload from schema version `from` to `from + 1`.
///
/// Declared on the event with `#[event(version = N, upcasters = [v1_to_v2, …])]` (the
/// `n`-th function upgrades version `n`), or by hand as [`Event::UPCASTERS`]. They are
/// applied on read, wherever events are decoded ([`Envelope::decode`](crate::Envelope::decode)):
/// subscribers, projections, routers and aggregate loads alike. Stored entries are never
/// rewritten.
///
/// ```
/// use eventbus_core::{event, BoxError, Envelope};
/// use serde_json::{json, Value};
///
/// /// v1 had `amount` in euros as a float; v2 has cents.
/// fn euros_to_cents(mut v1: Value) -> Result<Value, BoxError> {
///     let euros = v1["amount"].as_f64().ok_or("`amount` is not a number")?;
///     v1["amount"] = json!((euros * 100.0).round() as i64);
///     Ok(v1)
/// }
///
/// #[event(version = 2, upcasters = [euros_to_cents])]
/// #[derive(Debug)]
/// pub struct MoneyDeposited { pub amount: i64 }
///
/// let old = Envelope::new("MoneyDeposited", 1, "bank", json!({"amount": 12.5}));
/// assert_eq!(old.decode::<MoneyDeposited>().unwrap().data.amount, 1250);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The version this upcaster reads; it produces `from + 1`.
    pub from: u32,
    /// The conversion.
    pub upcast: UpcastFn,
}

impl Upcaster {
    /// An upcaster from version `from` to `from + 1`.
    pub const fn new(from: u32, upcast: UpcastFn) -> Self {
        Upcaster { from, upcast }
    }
}

/// Upgrades `data` of schema `version` to `E::VERSION` with `E::UPCASTERS`.
///
/// Fails with the reason when the version is newer than `E::VERSION`, when a step has no
/// upcaster, or when an upcaster fails.
pub fn upcast<E: Event>(version: u32, data: Value) -> Result<Value, String> {
    if version > E::VERSION {
        return Err(format!(
            "unsupported schema version {version} (this service reads version {} and cannot \
             downcast a newer one)",
            E::VERSION
        ));
    }
    let mut data = data;
    for from in version..E::VERSION {
        let Some(step) = E::UPCASTERS.iter().find(|u| u.from == from) else {
            return Err(format!(
                "unsupported schema version {version} (this service reads version {}): no \
                 upcaster from version {from} to {}",
                E::VERSION,
                from + 1
            ));
        };
        data = (step.upcast)(data)
            .map_err(|e| format!("upcasting from version {from} to {} failed: {e}", from + 1))?;
    }
    Ok(data)
}
