// Generated code must not depend on what the user has in scope: shadow everything it might
// name (tracing's `type_shadowing.rs`). Primitive types are not shadowed: serde's own
// derive does not survive that.
#![allow(dead_code, non_camel_case_types)]

use ::eventbus_core::event;

type Result<T> = ::core::result::Result<T, ()>;
type Option = ();
type Vec = ();
type String = ();
trait ToString {}
struct Event;
mod serde {}
mod core {}
mod eventbus_core {}

#[event(name = "Shadowed", version = 4)]
pub struct Shadowed {
    pub value: i64,
}

#[event(partition_key = key)]
pub struct Keyed {
    pub key: i64,
    pub region: ::core::option::Option<u8>,
}

#[event(partition_key = region)]
pub struct KeyedMaybe {
    pub region: ::core::option::Option<u8>,
}

fn main() {
    let keyed = Keyed { key: 3, region: ::core::option::Option::None };
    let key = <Keyed as ::eventbus_core::Event>::partition_key(&keyed);
    assert_eq!(key.as_deref(), ::core::option::Option::Some("3"));
    let maybe = KeyedMaybe { region: ::core::option::Option::Some(9) };
    let key = <KeyedMaybe as ::eventbus_core::Event>::partition_key(&maybe);
    assert_eq!(key.as_deref(), ::core::option::Option::Some("9"));
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
