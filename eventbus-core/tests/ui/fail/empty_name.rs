use eventbus_core::event;

#[event(name = "")]
pub struct OrderCreated {
    pub order_id: String,
}

fn main() {}
