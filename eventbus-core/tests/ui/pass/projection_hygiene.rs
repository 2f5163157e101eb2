// Generated code must not depend on what the user has in scope.
#![allow(dead_code, non_camel_case_types)]

use ::eventbus_core::{event, projection};

type Result<T> = ::core::result::Result<T, ()>;
type Option = ();
type Vec = ();
type String = ();
struct Event;
struct ReadModels;
mod serde {}
mod core {}
mod std {}
mod eventbus_core {}

#[event]
pub struct Created {
    pub id: ::std::string::String,
    pub n: i64,
}

#[projection(hash = "things:{id}")]
pub struct Thing {
    #[set(from = Created)]
    pub n: i64,
    #[incr(Created)]
    pub seen: i64,
}

#[projection(list = "all:things", push = id, on = Created)]
pub struct AllThings;

fn main() {
    assert_eq!(<Thing as ::eventbus_core::projection::ReadModel>::event_types(), ["Created"]);
    assert_eq!(AllThings::key(), "all:things");
}
