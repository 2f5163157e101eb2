use eventbus_core::{event, route, Envelope, HandlerError, Router};
use serde_json::Value;

// Shadowed prelude names must not break the generated code.
#[allow(dead_code)]
struct Result;
#[allow(dead_code)]
struct Vec;

#[event(name = "Order.Created")]
pub struct OrderCreated {
    pub total: f64,
}

fn high_value(e: &Envelope<OrderCreated>) -> bool {
    e.data.total > 1000.0
}

/// Every order event, as JSON.
#[route("Order.*")]
async fn on_order(_event: Envelope<Value>) -> core::result::Result<(), HandlerError> {
    Ok(())
}

#[route("Order.Created", priority = 10, filter = high_value, name = "high-value")]
pub async fn on_high_value(_event: Envelope<OrderCreated>) -> core::result::Result<(), HandlerError> {
    Ok(())
}

#[route("**.Failed", priority = -5)]
pub(crate) async fn on_failure(_event: Envelope<Value>) -> core::result::Result<(), HandlerError> {
    Ok(())
}

fn main() {
    let mut router = Router::new();
    router.add(on_order).unwrap();
    router.add(on_high_value).unwrap();
    router.add(on_failure).unwrap();
    let names: std::vec::Vec<&str> = router.rules().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["high-value", "on_order", "on_failure"]);
    assert_eq!(router.rules()[2].priority(), -5);
}
