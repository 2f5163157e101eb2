use eventbus_core::event;

// Both mistakes are reported, and no "not an event" error cascades from them.
#[event(name = "", colour = "red")]
pub struct OrderCreated {
    pub order_id: String,
}

fn assert_event<E: eventbus_core::Event>() {}

fn main() {
    assert_event::<OrderCreated>();
}
