use eventbus_core::event;

#[event(version = 0)]
pub struct OrderCreated {
    pub order_id: String,
}

fn main() {}
