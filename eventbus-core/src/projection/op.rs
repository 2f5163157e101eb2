//! [`ReadModelOp`]: the writes a projection asks for, and how event values become the
//! strings Redis stores.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which end of a list a value is pushed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ListEnd {
    /// The head (`LPUSH`), as the reference article does: newest first.
    #[default]
    Front,
    /// The tail (`RPUSH`): oldest first.
    Back,
}

/// One write to a read model. Keys are the read model's own keys (a store may prefix them).
///
/// Values are strings, as Redis stores them: numbers as decimal strings, the way the
/// reference article's Python service writes and reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReadModelOp {
    /// `HSET key field value …`.
    HashSet {
        /// The hash.
        key: String,
        /// Field/value pairs.
        fields: Vec<(String, String)>,
    },
    /// `HINCRBY key field by`.
    HashIncr {
        /// The hash.
        key: String,
        /// The field.
        field: String,
        /// The increment.
        by: i64,
    },
    /// `HINCRBYFLOAT key field by`.
    HashIncrFloat {
        /// The hash.
        key: String,
        /// The field.
        field: String,
        /// The increment.
        by: f64,
    },
    /// `HDEL key field …`.
    HashDel {
        /// The hash.
        key: String,
        /// The fields to remove.
        fields: Vec<String>,
    },
    /// `DEL key`: removes the entity (hash, list, set or counter).
    Delete {
        /// The key.
        key: String,
    },
    /// `LPUSH`/`RPUSH key value …`, then `LTRIM` to `max_len` when set (keeping the values
    /// nearest the end pushed to).
    ListPush {
        /// The list.
        key: String,
        /// Values, pushed in order.
        values: Vec<String>,
        /// The end pushed to.
        end: ListEnd,
        /// Bound on the list's length.
        max_len: Option<usize>,
    },
    /// `LREM key 0 value`: removes every occurrence.
    ListRemove {
        /// The list.
        key: String,
        /// The value.
        value: String,
    },
    /// `SADD key member …`.
    SetAdd {
        /// The set.
        key: String,
        /// Members.
        members: Vec<String>,
    },
    /// `SREM key member …`.
    SetRemove {
        /// The set.
        key: String,
        /// Members.
        members: Vec<String>,
    },
    /// `INCRBY key by` on a plain counter key.
    Incr {
        /// The counter.
        key: String,
        /// The increment (negative to decrement).
        by: i64,
    },
}

impl ReadModelOp {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            ReadModelOp::HashSet { key, .. }
            | ReadModelOp::HashIncr { key, .. }
            | ReadModelOp::HashIncrFloat { key, .. }
            | ReadModelOp::HashDel { key, .. }
            | ReadModelOp::Delete { key }
            | ReadModelOp::ListPush { key, .. }
            | ReadModelOp::ListRemove { key, .. }
            | ReadModelOp::SetAdd { key, .. }
            | ReadModelOp::SetRemove { key, .. }
            | ReadModelOp::Incr { key, .. } => key,
        }
    }

    /// The same write on another key.
    pub fn with_key(mut self, new_key: String) -> Self {
        match &mut self {
            ReadModelOp::HashSet { key, .. }
            | ReadModelOp::HashIncr { key, .. }
            | ReadModelOp::HashIncrFloat { key, .. }
            | ReadModelOp::HashDel { key, .. }
            | ReadModelOp::Delete { key }
            | ReadModelOp::ListPush { key, .. }
            | ReadModelOp::ListRemove { key, .. }
            | ReadModelOp::SetAdd { key, .. }
            | ReadModelOp::SetRemove { key, .. }
            | ReadModelOp::Incr { key, .. } => *key = new_key,
        }
        self
    }
}

/// Formats a float the way JSON (and Python's `str`) does: `99.5`, `100.0`, `1e-7`.
pub fn format_f64(v: f64) -> String {
    match serde_json::Number::from_f64(v) {
        Some(n) => n.to_string(),
        None => v.to_string(),
    }
}

/// How an event value is stored in a read model: strings as they are, numbers as decimal
/// strings (`99.5`, `100.0`, `3`), booleans as `true`/`false`, objects and arrays as JSON;
/// `None` for null (the field is removed rather than set).
pub fn field_string(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_render_like_the_article() {
        assert_eq!(field_string(&json!("ord_1")).as_deref(), Some("ord_1"));
        assert_eq!(field_string(&json!(99.5)).as_deref(), Some("99.5"));
        assert_eq!(field_string(&json!(100.0)).as_deref(), Some("100.0"));
        assert_eq!(field_string(&json!(3)).as_deref(), Some("3"));
        assert_eq!(field_string(&json!(true)).as_deref(), Some("true"));
        assert_eq!(field_string(&json!(["a"])).as_deref(), Some("[\"a\"]"));
        assert_eq!(field_string(&Value::Null), None);
        assert_eq!(format_f64(1700000000.25), "1700000000.25");
    }

    #[test]
    fn a_write_moves_to_another_key() {
        let op = ReadModelOp::ListPush {
            key: "l".into(),
            values: vec!["a".into()],
            end: ListEnd::Back,
            max_len: Some(3),
        };
        assert_eq!(op.with_key("m".into()).key(), "m");
    }
}
