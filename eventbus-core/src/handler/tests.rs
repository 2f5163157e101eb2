#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::cqrs::CommandContext;
use crate::envelope::Envelope;
use crate::error::HandlerError;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Greeted {
    name: String,
}

impl crate::Event for Greeted {
    const EVENT_TYPE: &'static str = "Test.Greeted";
    const VERSION: u32 = 1;
}

struct Greeting {
    text: &'static str,
}

fn raw(event_type: &str, data: Value) -> Arc<Envelope<Value>> {
    Arc::new(Envelope::new(event_type, 1, "test", data))
}

#[tokio::test]
async fn a_bound_handler_gets_its_message_decoded_and_its_state() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |event: Envelope<Greeted>, greeting: State<Greeting>| {
        let tx = tx.clone();
        async move {
            tx.send(format!("{} {}", greeting.text, event.data.name))
                .unwrap();
            Ok::<_, HandlerError>(())
        }
    };
    let mut resources = Resources::default();
    resources.insert(Greeting { text: "hello" });
    let bound: Bound<(), Envelope<Greeted>> = match Handler::<(), _>::bind(handler, &resources) {
        Ok(bound) => bound,
        Err(e) => panic!("{e}"),
    };
    bound
        .call(raw("Test.Greeted", json!({"name": "Ada"})), ())
        .await
        .unwrap();
    assert_eq!(rx.recv().await.as_deref(), Some("hello Ada"));
}

#[tokio::test]
async fn an_event_that_does_not_decode_is_a_permanent_failure() {
    let handler = |_event: Envelope<Greeted>| async { Ok::<_, HandlerError>(()) };
    let bound: Bound<(), Envelope<Greeted>> =
        Handler::<(), _>::bind(handler, &Resources::default()).unwrap();
    let err = bound
        .call(raw("Test.Other", json!({"name": "Ada"})), ())
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    let err = bound
        .call(raw("Test.Greeted", json!({"nom": 1})), ())
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
}

#[test]
fn a_state_never_registered_is_refused_when_bound() {
    let handler =
        |_event: Envelope<Greeted>, _greeting: State<Greeting>| async { Ok::<_, HandlerError>(()) };
    let err = Handler::<(), _>::bind(handler, &Resources::default()).unwrap_err();
    assert!(err.type_name.ends_with("Greeting"), "{err}");
}

#[test]
#[should_panic(expected = "State<")]
fn binding_here_panics_naming_the_missing_state() {
    let handler =
        |_event: Envelope<Greeted>, _greeting: State<Greeting>| async { Ok::<_, HandlerError>(()) };
    let _ = bind_here::<(), _, _>(handler, &Resources::default());
}

#[test]
fn an_unbound_handler_names_the_line_that_registered_it() {
    let handler =
        |_event: Envelope<Greeted>, _greeting: State<Greeting>| async { Ok::<_, HandlerError>(()) };
    let unbound: Unbound<(), Envelope<Greeted>> = Unbound::new(handler);
    let line = line!() - 1;
    let err = unbound.bind(&Resources::default()).unwrap_err();
    assert!(err.contains(&format!("{}:{line}", file!())), "{err}");
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Double(i64);

impl crate::Command for Double {
    const COMMAND_TYPE: &'static str = "Test.Double";
    type Output = i64;
    type Error = crate::NoRejection;
}

/// A command handler is a plain fn too, callable directly.
async fn double(cmd: Double, _ctx: CommandContext) -> Result<i64, crate::NoRejection> {
    Ok(cmd.0 * 2)
}

#[test]
fn a_command_handler_fn_is_a_handler_of_its_command() {
    fn assert_handler<A, H: Handler<CommandContext, A, Message = Double>>(_: H) {}
    assert_handler(double);
}
