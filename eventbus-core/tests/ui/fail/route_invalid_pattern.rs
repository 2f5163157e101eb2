use eventbus_core::{route, Envelope, HandlerError, Router};
use serde_json::Value;

#[route("Order.Cre*")]
async fn on_order(_event: Envelope<Value>) -> Result<(), HandlerError> {
    Ok(())
}

#[route("Order..Created")]
async fn on_created(_event: Envelope<Value>) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {
    // No error cascades from the uses of the broken rules.
    let mut router = Router::new();
    router.add(on_order).unwrap();
    router.add(on_created).unwrap();
}
