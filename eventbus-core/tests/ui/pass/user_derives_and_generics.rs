use eventbus_core::{event, Event};
use serde::{Deserialize, Serialize};

// The user already derives serde: the macro must not derive it again.
#[event(name = "Custom")]
#[derive(Serialize, Deserialize, Debug)]
pub struct Custom {
    #[serde(rename = "ID")]
    pub id: String,
}

// Only one of the two derived by the user.
#[event]
#[derive(serde::Deserialize)]
pub struct HalfDerived {
    pub n: u8,
}

// Generic events work when the parameters fit the bounds.
#[event(name = "Wrapped")]
pub struct Wrapped<T> {
    pub inner: T,
}

fn assert_event<E: Event>() {}

fn main() {
    assert_eq!(Custom::EVENT_TYPE, "Custom");
    let json = eventbus_core::__private::serde_json::to_string(&Custom { id: "x".into() }).unwrap();
    assert_eq!(json, r#"{"ID":"x"}"#);
    assert_eq!(HalfDerived::EVENT_TYPE, "HalfDerived");
    assert_event::<Wrapped<u32>>();
    assert_eq!(<Wrapped<String> as Event>::EVENT_TYPE, "Wrapped");
}
