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
    use ::eventbus_core::Event as _;
    assert_eq!(<Shadowed as ::eventbus_core::Event>::EVENT_TYPE, "Shadowed");
    assert_eq!(<Shadowed as ::eventbus_core::Event>::VERSION, 4);
}
