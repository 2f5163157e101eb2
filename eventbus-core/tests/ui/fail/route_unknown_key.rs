use eventbus_core::{route, Envelope, HandlerError};
use serde_json::Value;

#[route("Order.*", prio = 10)]
async fn on_order(_event: Envelope<Value>) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
