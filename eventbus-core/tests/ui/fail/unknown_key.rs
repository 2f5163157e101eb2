use eventbus_core::event;

#[event(nam = "OrderCreated")]
pub struct OrderCreated {
    pub order_id: String,
}

fn main() {}
