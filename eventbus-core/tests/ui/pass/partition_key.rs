// `#[event(partition_key = field)]`: any `Display` field is the key; an `Option<T>` field
// is a key only when `Some`; events without the argument have none.
use std::fmt;

use eventbus_core::{event, Envelope, Event, META_PARTITION_KEY};

#[event(partition_key = customer_id)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: u64,
}

#[event(name = "Tenant.Moved", version = 2, partition_key = tenant)]
pub struct TenantMoved {
    pub tenant: Tenant,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Tenant(String);

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant/{}", self.0)
    }
}

#[event(partition_key = region)]
pub struct Shipped {
    pub region: std::option::Option<String>,
}

#[event(partition_key = key)]
pub struct Wrapped<T> {
    pub key: T,
}

#[event]
pub struct Tick;

fn main() {
    let placed = OrderPlaced { order_id: "o1".into(), customer_id: 7 };
    assert_eq!(placed.partition_key().as_deref(), Some("7"));
    let env = Envelope::from_event("shop", placed);
    assert_eq!(env.metadata[META_PARTITION_KEY], "7");

    let moved = TenantMoved { tenant: Tenant("acme".into()) };
    assert_eq!(moved.partition_key().as_deref(), Some("tenant/acme"));
    assert_eq!(TenantMoved::EVENT_TYPE, "Tenant.Moved");

    assert_eq!(Shipped { region: Some("eu".into()) }.partition_key().as_deref(), Some("eu"));
    assert_eq!(Shipped { region: None }.partition_key(), None);

    assert_eq!(Wrapped { key: 'x' }.partition_key().as_deref(), Some("x"));
    assert_eq!(Tick.partition_key(), None);
}
