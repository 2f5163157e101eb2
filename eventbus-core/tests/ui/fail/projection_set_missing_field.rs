use eventbus_core::{event, projection};

#[event]
pub struct OrderCreated {
    pub order_id: String,
}

#[projection(hash = "orders:summary:{order_id}")]
pub struct OrderSummary {
    #[set(from = OrderCreated)]
    pub total: f64,
    #[set(from = OrderCreated, field = amount)]
    pub amount_paid: f64,
}

fn main() {}
