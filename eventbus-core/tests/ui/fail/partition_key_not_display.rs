use eventbus_core::event;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Customer {
    pub id: u64,
}

#[event(partition_key = customer)]
pub struct OrderPlaced {
    pub customer: Customer,
}

fn main() {}
