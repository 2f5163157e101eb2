//! Helpers for the code `#[projection]` generates. Not public API.

use serde::Serialize;
use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::event::Event;
use crate::projection::{field_string, format_f64, ReadModelOp};

pub use crate::projection::read::read_field;

/// Decodes the payload as `E`; a payload that doesn't fit is a permanent failure.
pub fn decode<E: Event>(event: &Envelope<Value>) -> Result<E, HandlerError> {
    event
        .decode::<E>()
        .map(|e| e.data)
        .map_err(|e| HandlerError::permanent(e.to_string()))
}

/// An event value as stored (`None` for null).
pub fn value<T: Serialize + ?Sized>(v: &T) -> Result<Option<String>, HandlerError> {
    let json = serde_json::to_value(v)
        .map_err(|e| HandlerError::permanent(format!("cannot serialize a field: {e}")))?;
    Ok(field_string(&json))
}

/// An event value used in a key; null is a permanent failure.
pub fn key_part<T: Serialize + ?Sized>(v: &T, name: &str) -> Result<String, HandlerError> {
    value(v)?.ok_or_else(|| {
        HandlerError::permanent(format!("key field `{name}` is null: no key to write"))
    })
}

/// An event value used as an increment.
pub fn number<T: Serialize + ?Sized>(v: &T, name: &str) -> Result<f64, HandlerError> {
    match serde_json::to_value(v) {
        Ok(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| HandlerError::permanent(format!("`{name}` is out of range"))),
        _ => Err(HandlerError::permanent(format!("`{name}` is not a number"))),
    }
}

/// A timestamp as stored (seconds, decimal).
pub fn timestamp(t: f64) -> String {
    format_f64(t)
}

/// The writes one event makes to one hash: fields set, fields removed (null values).
#[derive(Debug)]
pub struct HashWrite {
    key: String,
    set: Vec<(String, String)>,
    del: Vec<String>,
}

impl HashWrite {
    /// Writes to `key`.
    pub fn new(key: String) -> Self {
        HashWrite {
            key,
            set: Vec::new(),
            del: Vec::new(),
        }
    }

    /// Sets `field` (removes it for `None`).
    pub fn set(&mut self, field: &str, value: Option<String>) {
        match value {
            Some(v) => self.set.push((field.to_owned(), v)),
            None => self.del.push(field.to_owned()),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Appends the writes to `ops`.
    pub fn finish(self, ops: &mut Vec<ReadModelOp>) {
        if !self.set.is_empty() {
            ops.push(ReadModelOp::HashSet {
                key: self.key.clone(),
                fields: self.set,
            });
        }
        if !self.del.is_empty() {
            ops.push(ReadModelOp::HashDel {
                key: self.key,
                fields: self.del,
            });
        }
    }
}
