use eventbus_core::event;

const NAME: &str = "OrderCreated";

#[event(name = NAME)]
pub struct OrderCreated {
    pub order_id: String,
}

fn main() {}
