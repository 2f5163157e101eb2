use eventbus_core::{event, projection};

#[event]
pub struct OrderCreated {
    pub order_id: String,
}

#[event]
pub struct OrderShipped {
    pub id: String,
}

// `OrderShipped` has no `order_id`: the error points at the key template.
#[projection(hash = "orders:summary:{order_id}")]
pub struct OrderSummary {
    #[set(OrderCreated = "created", OrderShipped = "shipped")]
    pub status: String,
}

#[projection(list = "customers:{customer_id}:orders", push = order_id, on = OrderCreated)]
pub struct CustomerOrders;

fn main() {}
