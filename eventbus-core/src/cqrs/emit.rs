//! [`Emit`]: what a command handler's output publishes.

use serde_json::Value;

use crate::envelope::{event_metadata, Envelope};
use crate::error::Result;
use crate::event::Event;

/// Collects the events a command's output stands for, so the command bus can publish them.
///
/// Implemented for every [`Event`] (the output is the event), for `()`, `String`, numbers and
/// `bool` (plain values: nothing to publish),
/// `Option<T>`, `Vec<T>` and tuples of emitters, and for [`Emitted`] (a result value plus
/// events). Implement it for your own output types to publish what they contain.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a command's output",
    note = "a command's output must be an event (`#[event]`), `()`, a `Vec`/`Option`/tuple of events, or `Emitted<T>`; implement `eventbus_core::Emit` for other types"
)]
pub trait Emit {
    /// Appends the events (payloads as JSON, with type name and version) to `out`.
    fn emit(&self, source: &str, out: &mut Vec<Envelope<Value>>) -> Result<()>;
}

impl<E: Event> Emit for E {
    fn emit(&self, source: &str, out: &mut Vec<Envelope<Value>>) -> Result<()> {
        let data = serde_json::to_value(self).map_err(|source| crate::Error::Serialize {
            event_type: E::EVENT_TYPE.to_string(),
            source,
        })?;
        out.push(Envelope {
            metadata: event_metadata(self),
            ..Envelope::new(E::EVENT_TYPE, E::VERSION, source, data)
        });
        Ok(())
    }
}

/// Plain values (an id, a count, a flag) are outputs that publish nothing.
macro_rules! emit_nothing {
    ($($t:ty),*) => {
        $(
            impl Emit for $t {
                fn emit(&self, _: &str, _: &mut Vec<Envelope<Value>>) -> Result<()> {
                    Ok(())
                }
            }
        )*
    };
}
emit_nothing!(
    (),
    bool,
    String,
    u8,
    u16,
    u32,
    u64,
    i8,
    i16,
    i32,
    i64,
    usize,
    isize,
    f32,
    f64
);

impl<T: Emit> Emit for Option<T> {
    fn emit(&self, source: &str, out: &mut Vec<Envelope<Value>>) -> Result<()> {
        match self {
            Some(t) => t.emit(source, out),
            None => Ok(()),
        }
    }
}

impl<T: Emit> Emit for Vec<T> {
    fn emit(&self, source: &str, out: &mut Vec<Envelope<Value>>) -> Result<()> {
        self.iter().try_for_each(|t| t.emit(source, out))
    }
}

macro_rules! emit_tuple {
    ($($name:ident),+) => {
        impl<$($name: Emit),+> Emit for ($($name,)+) {
            #[allow(non_snake_case)]
            fn emit(&self, source: &str, out: &mut Vec<Envelope<Value>>) -> Result<()> {
                let ($($name,)+) = self;
                $($name.emit(source, out)?;)+
                Ok(())
            }
        }
    };
}
emit_tuple!(A, B);
emit_tuple!(A, B, C);
emit_tuple!(A, B, C, D);

/// A command output that is a value for the caller plus events to publish.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Emitted<T, Ev> {
    /// What the caller gets.
    pub value: T,
    /// What gets published.
    pub events: Ev,
}

impl<T, Ev: Emit> Emit for Emitted<T, Ev> {
    fn emit(&self, source: &str, out: &mut Vec<Envelope<Value>>) -> Result<()> {
        self.events.emit(source, out)
    }
}
