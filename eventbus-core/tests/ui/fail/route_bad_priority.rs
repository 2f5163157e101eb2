use eventbus_core::{route, Envelope, HandlerError};
use serde_json::Value;

#[route("Order.*", priority = "high")]
async fn on_order(_event: Envelope<Value>) -> Result<(), HandlerError> {
    Ok(())
}

#[route("Order.*", priority = 3000000000)]
async fn on_big(_event: Envelope<Value>) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
