use eventbus_core::projection;

#[projection(list = "customers:{customer_id}:orders", push = order_id)]
pub struct CustomerOrders;

#[projection(set = "skus")]
pub struct Skus;

fn main() {}
