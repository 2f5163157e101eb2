use eventbus_core::event;

#[event(name = "Order Created")]
pub struct OrderCreated {
    pub order_id: String,
}

#[event(name = "orders:created")]
pub struct Colon;

#[event(name = "Order.*")]
pub struct Star;

fn main() {}
