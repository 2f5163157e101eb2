use eventbus_core::{event, projection};
use eventbus_core::projection::ReadModel;

#[event]
pub struct OrderCreated {
    pub order_id: String,
}

// One mistake, and no "not a read model" or "no function `load`" errors cascade from it.
#[projection(hash = "orders:{order_id}", colour = "red")]
pub struct OrderSummary {
    #[set(from = OrderCreated)]
    pub order_id: String,
}

fn main() {
    let _ = OrderSummary::projection();
    let _ = OrderSummary::key("o1");
}
