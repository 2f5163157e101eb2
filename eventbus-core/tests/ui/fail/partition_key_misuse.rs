use eventbus_core::event;

#[event(partition_key = customer)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: u64,
}

#[event(partition_key = id)]
pub enum PaymentEvent {
    Authorized { id: String },
}

#[event(partition_key = id)]
pub struct Tagged(pub String);

#[event(partition_key = "order_id")]
pub struct Quoted {
    pub order_id: String,
}

#[event(partition_key = order_id, partition_key = order_id)]
pub struct Twice {
    pub order_id: String,
}

fn assert_event<E: eventbus_core::Event>() {}

fn main() {
    // No "not an event" error cascades from the mistakes above.
    assert_event::<OrderPlaced>();
    assert_event::<PaymentEvent>();
    assert_event::<Tagged>();
}
