use eventbus_core::{event, projection};

#[event]
pub struct OrderCreated {
    pub order_id: String,
}

#[projection(hash = "orders:{order_id}", list = "orders", push = order_id, on = OrderCreated)]
pub struct Orders {
    #[set(from = OrderCreated)]
    pub order_id: String,
}

#[projection(name = "NoShape")]
pub struct NoShape;

fn main() {}
