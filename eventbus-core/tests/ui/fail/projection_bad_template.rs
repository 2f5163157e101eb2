use eventbus_core::{event, projection};

#[event]
pub struct OrderCreated {
    pub order_id: String,
}

#[projection(hash = "orders:{order_id")]
pub struct Unclosed {
    #[set(from = OrderCreated)]
    pub order_id: String,
}

#[projection(counter = "orders:{}", on = OrderCreated)]
pub struct Empty;

#[projection(hash = "orders:{order_id}")]
pub struct ReadsNothing {
    pub order_id: String,
}

#[projection(counter = "n", on = OrderCreated)]
pub struct FieldAttrOnCounter {
    #[incr(OrderCreated)]
    pub n: i64,
}

fn main() {}
