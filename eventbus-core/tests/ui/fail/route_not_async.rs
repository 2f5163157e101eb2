use eventbus_core::{route, Envelope, HandlerError};
use serde_json::Value;

#[route(priority = 1)]
fn on_order(_event: Envelope<Value>) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
