//! Reading Redis replies (`redis::Value`) of the stream commands, RESP2 or RESP3.

use redis::Value;

/// One stream entry as Redis returned it; `fields` is `None` for an entry that was deleted
/// while pending (older servers return it as nil).
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub(crate) id: String,
    pub(crate) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl RawEntry {
    /// The fields as text, replacing invalid UTF-8 (for dead letters, which are JSON).
    pub(crate) fn text_fields(&self) -> Vec<(String, String)> {
        self.fields
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        Value::Okay => Some(b"OK"),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text(value: &Value) -> Option<String> {
    bytes(value)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_owned)
}

/// An integer reply (or a string holding one).
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::Double(d) if d.fract() == 0.0 => Some(*d as i64),
        other => bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    }
}

/// The items of an array reply (`Nil` is empty).
pub(crate) fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// A map reply (RESP3) or a flat `[name, value, …]` array (RESP2) as name/value pairs.
pub(crate) fn map(value: &Value) -> Option<Vec<(String, &Value)>> {
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| Some((text(k)?, v))).collect(),
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|pair| Some((text(&pair[0])?, &pair[1])))
            .collect(),
        _ => None,
    }
}

/// The value of `name` in a map reply.
pub(crate) fn field<'a>(pairs: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// One entry `[id, [field, value, …]]`.
pub(crate) fn entry(value: &Value) -> Option<RawEntry> {
    let parts = items(value)?;
    let id = text(parts.first()?)?;
    let fields = match parts.get(1) {
        None | Some(Value::Nil) => None,
        Some(Value::Map(pairs)) => Some(
            pairs
                .iter()
                .map(|(k, v)| Some((bytes(k)?.to_vec(), bytes(v)?.to_vec())))
                .collect::<Option<Vec<_>>>()?,
        ),
        Some(list) => {
            let flat = items(list)?;
            if flat.len() % 2 != 0 {
                return None;
            }
            Some(
                flat.chunks(2)
                    .map(|pair| Some((bytes(&pair[0])?.to_vec(), bytes(&pair[1])?.to_vec())))
                    .collect::<Option<Vec<_>>>()?,
            )
        }
    };
    Some(RawEntry { id, fields })
}

/// A list of entries (`XRANGE`, `XCLAIM`); nil items (deleted entries on old servers) are
/// skipped.
pub(crate) fn entries(value: &Value) -> Option<Vec<RawEntry>> {
    items(value)?
        .iter()
        .filter(|v| !matches!(v, Value::Nil))
        .map(entry)
        .collect()
}

/// An `XREADGROUP` reply: entries per stream key.
pub(crate) fn streams(value: &Value) -> Option<Vec<(String, Vec<RawEntry>)>> {
    match value {
        Value::Nil => Some(Vec::new()),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| Some((text(k)?, entries(v)?)))
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let parts = items(item)?;
                Some((text(parts.first()?)?, entries(parts.get(1)?)?))
            })
            .collect(),
        _ => None,
    }
}

/// The bytes of a string reply, moved out.
fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// A string reply as text, moved out.
fn into_text(value: Value) -> Option<String> {
    into_bytes(value).and_then(|b| String::from_utf8(b).ok())
}

/// The items of an array reply, moved out (`Nil` is empty).
fn into_items(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// [`entry`], moving the field bytes out of the reply instead of copying them.
pub(crate) fn into_entry(value: Value) -> Option<RawEntry> {
    let mut parts = into_items(value)?.into_iter();
    let id = into_text(parts.next()?)?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(Value::Map(pairs)) => Some(
            pairs
                .into_iter()
                .map(|(k, v)| Some((into_bytes(k)?, into_bytes(v)?)))
                .collect::<Option<Vec<_>>>()?,
        ),
        Some(list) => {
            let flat = into_items(list)?;
            if flat.len() % 2 != 0 {
                return None;
            }
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                fields.push((into_bytes(k)?, into_bytes(v)?));
            }
            Some(fields)
        }
    };
    Some(RawEntry { id, fields })
}

/// [`entries`], moving the entries out of the reply.
pub(crate) fn into_entries(value: Value) -> Option<Vec<RawEntry>> {
    into_items(value)?
        .into_iter()
        .filter(|v| !matches!(v, Value::Nil))
        .map(into_entry)
        .collect()
}

/// [`streams`], moving the entries out of the reply instead of copying them.
pub(crate) fn into_streams(value: Value) -> Option<Vec<(String, Vec<RawEntry>)>> {
    match value {
        Value::Nil => Some(Vec::new()),
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Some((into_text(k)?, into_entries(v)?)))
            .collect(),
        Value::Array(list) => list
            .into_iter()
            .map(|item| {
                let mut parts = into_items(item)?.into_iter();
                let key = into_text(parts.next()?)?;
                Some((key, into_entries(parts.next()?)?))
            })
            .collect(),
        _ => None,
    }
}

/// One row of the extended `XPENDING` form (id, owner, idle ms, delivery count): its idle
/// time.
#[derive(Debug, Clone)]
pub(crate) struct PendingRow {
    pub(crate) id: String,
    pub(crate) idle_ms: u64,
}

/// The rows of an extended `XPENDING` reply.
pub(crate) fn pending_rows(value: &Value) -> Option<Vec<PendingRow>> {
    items(value)?
        .iter()
        .map(|row| {
            let parts = items(row)?;
            Some(PendingRow {
                id: text(parts.first()?)?,
                idle_ms: u64::try_from(int(parts.get(2)?)?).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries_and_nil() {
        let v = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("b")])]),
            Value::Nil,
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let e = entries(&v).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].id, "1-0");
        assert_eq!(e[0].text_fields(), vec![("a".to_owned(), "b".to_owned())]);
        assert!(e[1].fields.is_none());
    }

    #[test]
    fn moving_parsers_agree_with_borrowing_ones() {
        let entry_list = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("b")])]),
            Value::Nil,
            Value::Array(vec![bulk("2-0"), Value::Nil]),
            Value::Array(vec![bulk("3-0"), Value::Map(vec![(bulk("c"), bulk("d"))])]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), entry_list.clone()])]);
        let resp3 = Value::Map(vec![(bulk("k"), entry_list)]);
        for reply in [resp2, resp3, Value::Nil] {
            let borrowed = streams(&reply).unwrap();
            let moved = into_streams(reply).unwrap();
            assert_eq!(format!("{borrowed:?}"), format!("{moved:?}"));
        }
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("a")]),
            ])]),
        ])]);
        assert!(streams(&odd).is_none());
        assert!(into_streams(odd).is_none());
    }

    #[test]
    fn parses_maps_both_ways() {
        let resp2 = Value::Array(vec![
            bulk("lag"),
            Value::Nil,
            bulk("pending"),
            Value::Int(3),
        ]);
        let m = map(&resp2).unwrap();
        assert_eq!(field(&m, "pending").and_then(int), Some(3));
        assert_eq!(field(&m, "lag"), Some(&Value::Nil));
        let resp3 = Value::Map(vec![(bulk("pending"), Value::Int(4))]);
        assert_eq!(
            field(&map(&resp3).unwrap(), "pending").and_then(int),
            Some(4)
        );
    }
}
