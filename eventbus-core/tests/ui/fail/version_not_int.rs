use eventbus_core::event;

#[event(version = "2")]
pub struct OrderCreated {
    pub order_id: String,
}

fn main() {}
