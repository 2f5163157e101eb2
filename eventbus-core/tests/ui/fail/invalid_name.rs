use eventbus_core::event;

#[event(name = "Order Created")]
pub struct OrderCreated {
    pub order_id: String,
}

#[event(name = "orders:created")]
pub struct Colon;

#[event(name = "Order.*")]
pub struct Star;

#[event(name = "Order[1]")]
pub struct Bracket;

fn main() {}
