use eventbus_core::event;

#[event(name = "A", version = 1, name = "B")]
pub struct OrderCreated {
    pub order_id: String,
}

fn main() {}
