// Generated code must not depend on what the user has in scope: shadow everything it might
// name (tracing's `type_shadowing.rs`). Primitive types are not shadowed: serde's own
// derive does not survive that.
#![allow(dead_code, non_camel_case_types)]

use ::eventbus_core::event;

type Result<T> = ::core::result::Result<T, ()>;
type Option = ();
type Vec = ();
struct Event;
mod serde {}
mod core {}
mod eventbus_core {}

#[event(name = "Shadowed", version = 4)]
pub struct Shadowed {
    pub value: i64,
}

fn main() {
    assert_eq!(<Shadowed as ::eventbus_core::Event>::EVENT_TYPE, "Shadowed");
    assert_eq!(<Shadowed as ::eventbus_core::Event>::VERSION, 4);
}

#[::eventbus_core::command(output = Shadowed)]
pub struct MakeShadowed;

#[::eventbus_core::command_handler]
async fn make_shadowed(_cmd: MakeShadowed) -> ::core::result::Result<Shadowed, ::eventbus_core::NoRejection> {
    ::core::result::Result::Ok(Shadowed { value: 1 })
}

#[::eventbus_core::query(output = i64)]
pub struct Answer;

#[::eventbus_core::query_handler]
async fn answer(_q: Answer) -> ::core::result::Result<i64, ::eventbus_core::QueryError> {
    ::core::result::Result::Ok(42)
}

#[allow(unused)]
fn handlers_are_registrable() {
    let _ = ::eventbus_core::QueryBus::new().handle(answer);
    let _ = make_shadowed;
}
