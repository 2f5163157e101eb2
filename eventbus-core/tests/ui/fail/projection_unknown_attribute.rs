use eventbus_core::{event, projection};

#[event]
pub struct OrderCreated {
    pub order_id: String,
}

#[projection(hash = "orders:{order_id}", colour = "red")]
pub struct OrderSummary {
    #[set(from = OrderCreated)]
    pub order_id: String,
}

fn main() {}
