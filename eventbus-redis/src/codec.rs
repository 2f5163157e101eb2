//! The envelope ⇄ stream-entry codec, in the wire format of the reference article.
//!
//! A per-type stream entry has exactly these fields:
//!
//! | field | value |
//! |---|---|
//! | `event_id` | the envelope's id |
//! | `event_type` | the type name |
//! | `source` | the producing service |
//! | `data` | the payload as JSON text |
//! | `timestamp` | seconds since the epoch as a decimal string, like Python's `str(time.time())` |
//! | `metadata` | a JSON object: the user metadata plus `correlation_id`, `causation_id` (omitted when unset) and `schema_version` |
//!
//! Global stream entries carry the same fields plus `original_stream` (the per-type key).
//! Decoding follows the article's consumer: `metadata` is optional (`{}`), `schema_version`
//! defaults to 1, and unknown fields are ignored.

use eventbus_core::transport::Malformed;
use eventbus_core::{Envelope, Error, Metadata};
use serde_json::Value;

/// Field: the event id.
pub const EVENT_ID: &str = "event_id";
/// Field: the event type.
pub const EVENT_TYPE: &str = "event_type";
/// Field: the producing service.
pub const SOURCE: &str = "source";
/// Field: the payload (JSON text).
pub const DATA: &str = "data";
/// Field: seconds since the epoch (decimal text).
pub const TIMESTAMP: &str = "timestamp";
/// Field: metadata (JSON object text).
pub const METADATA: &str = "metadata";
/// Field of global stream entries: the per-type stream the event was published to.
pub const ORIGINAL_STREAM: &str = "original_stream";
/// The fields of a per-type entry, in wire order (what [`encode`] writes).
pub const FIELD_NAMES: [&str; 6] = [EVENT_ID, EVENT_TYPE, SOURCE, DATA, TIMESTAMP, METADATA];

/// Metadata key of the correlation id.
pub const CORRELATION_ID: &str = "correlation_id";
/// Metadata key of the causation id.
pub const CAUSATION_ID: &str = "causation_id";
/// Metadata key of the schema version.
pub const SCHEMA_VERSION: &str = "schema_version";

/// The fields of an entry, in order, as `(field, value)` text pairs.
pub type Fields = Vec<(String, String)>;

/// Encodes an envelope as the fields of a per-type stream entry.
///
/// Fails only when the payload or metadata cannot be written as JSON.
pub fn encode(envelope: &Envelope<Value>) -> Result<Fields, Error> {
    Ok(Encoded::new(envelope)?
        .fields()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect())
}

/// An envelope's entry fields, borrowing what needs no encoding: what publishing writes,
/// without copying every field into owned pairs first.
pub(crate) struct Encoded<'a> {
    envelope: &'a Envelope<Value>,
    data: String,
    timestamp: String,
    metadata: String,
}

impl<'a> Encoded<'a> {
    /// Encodes `data`, `timestamp` and `metadata`.
    pub(crate) fn new(envelope: &'a Envelope<Value>) -> Result<Self, Error> {
        let serialize_error = |source| Error::Serialize {
            event_type: envelope.event_type.clone(),
            source,
        };
        let data = serde_json::to_string(&envelope.data).map_err(serialize_error)?;
        let metadata = encode_metadata(envelope).map_err(serialize_error)?;
        Ok(Encoded {
            envelope,
            data,
            timestamp: format_timestamp(envelope.timestamp),
            metadata,
        })
    }

    /// The fields of the per-type entry, in wire order.
    pub(crate) fn fields(&self) -> [(&'static str, &str); 6] {
        let [id, kind, source, data, timestamp, metadata] = FIELD_NAMES;
        [
            (id, &self.envelope.event_id),
            (kind, &self.envelope.event_type),
            (source, &self.envelope.source),
            (data, &self.data),
            (timestamp, &self.timestamp),
            (metadata, &self.metadata),
        ]
    }

    /// Bytes of the field names and values, to size buffers.
    pub(crate) fn size(&self) -> usize {
        self.fields().iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// The `metadata` field: the user metadata plus the correlation and causation ids (when set)
/// and the schema version, as a JSON object.
fn encode_metadata(envelope: &Envelope<Value>) -> Result<String, serde_json::Error> {
    if envelope.metadata.is_empty() {
        // The common case, written directly, in the order a `Metadata` map serializes.
        let mut out = String::with_capacity(128);
        out.push('{');
        for (key, id) in [
            (CAUSATION_ID, &envelope.causation_id),
            (CORRELATION_ID, &envelope.correlation_id),
        ] {
            if let Some(id) = id {
                out.push('"');
                out.push_str(key);
                out.push_str("\":");
                out.push_str(&serde_json::to_string(id)?);
                out.push(',');
            }
        }
        out.push('"');
        out.push_str(SCHEMA_VERSION);
        out.push_str("\":");
        out.push_str(&envelope.version.to_string());
        out.push('}');
        return Ok(out);
    }
    let mut metadata = envelope.metadata.clone();
    for reserved in [CORRELATION_ID, CAUSATION_ID, SCHEMA_VERSION] {
        metadata.remove(reserved);
    }
    if let Some(id) = &envelope.correlation_id {
        metadata.insert(CORRELATION_ID.to_owned(), Value::String(id.clone()));
    }
    if let Some(id) = &envelope.causation_id {
        metadata.insert(CAUSATION_ID.to_owned(), Value::String(id.clone()));
    }
    metadata.insert(SCHEMA_VERSION.to_owned(), Value::from(envelope.version));
    serde_json::to_string(&metadata)
}

/// The fields of the global stream entry for a per-type entry: the same plus
/// `original_stream`.
pub fn global_fields(fields: &[(String, String)], original_stream: &str) -> Fields {
    let mut global = fields.to_vec();
    global.push((ORIGINAL_STREAM.to_owned(), original_stream.to_owned()));
    global
}

/// Formats seconds the way Python's `str(float)` does: the shortest text that reads back
/// to the same number, always with a decimal point (`1732665600.123456`, `1732665600.0`).
pub fn format_timestamp(seconds: f64) -> String {
    let mut text = seconds.to_string();
    if seconds.is_finite() && !text.contains('.') {
        text.push_str(".0");
    }
    text
}

/// Decodes the raw `(field, value)` pairs of a stream entry into an envelope.
///
/// When a field appears twice the last value wins, as in the article's Python consumer.
pub fn decode<K, V>(fields: &[(K, V)]) -> Result<Envelope<Value>, Malformed>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let get = |name: &str| -> Result<Option<&str>, Malformed> {
        match fields
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name.as_bytes())
        {
            None => Ok(None),
            Some((_, value)) => std::str::from_utf8(value.as_ref())
                .map(Some)
                .map_err(|_| malformed(format!("field `{name}` is not valid UTF-8"))),
        }
    };
    let require = |name: &str| -> Result<&str, Malformed> {
        get(name)?.ok_or_else(|| malformed(format!("missing field `{name}`")))
    };

    let event_id = require(EVENT_ID)?;
    let event_type = require(EVENT_TYPE)?;
    if event_type.is_empty() {
        return Err(malformed("field `event_type` is empty"));
    }
    let source = require(SOURCE)?;
    let data: Value = serde_json::from_str(require(DATA)?)
        .map_err(|e| malformed(format!("field `data` is not valid JSON: {e}")))?;
    let timestamp_text = require(TIMESTAMP)?;
    let timestamp = timestamp_text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite())
        .ok_or_else(|| {
            malformed(format!(
                "field `timestamp` is not a number: `{timestamp_text}`"
            ))
        })?;

    let mut metadata = match get(METADATA)? {
        None => Metadata::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(malformed(format!(
                    "field `metadata` is not a JSON object (found {})",
                    json_kind(&other)
                )))
            }
            Err(e) => {
                return Err(malformed(format!(
                    "field `metadata` is not a JSON object: {e}"
                )))
            }
        },
    };
    let correlation_id = take_id(&mut metadata, CORRELATION_ID)?;
    let causation_id = take_id(&mut metadata, CAUSATION_ID)?;
    let version = match metadata.remove(SCHEMA_VERSION) {
        None | Some(Value::Null) => 1,
        Some(value) => value
            .as_u64()
            .filter(|v| *v >= 1)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                malformed(format!(
                    "`metadata.schema_version` is not a positive integer: {value}"
                ))
            })?,
    };

    Ok(Envelope {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        version,
        source: source.to_owned(),
        timestamp,
        correlation_id,
        causation_id,
        metadata,
        data,
    })
}

fn take_id(metadata: &mut Metadata, key: &str) -> Result<Option<String>, Malformed> {
    match metadata.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(id)),
        Some(other) => Err(malformed(format!(
            "`metadata.{key}` is not a string (found {})",
            json_kind(&other)
        ))),
    }
}

/// What kind of JSON value `value` is, for messages ("a string", "an array", …).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn malformed(reason: impl Into<String>) -> Malformed {
    Malformed {
        reason: reason.into(),
    }
}

/// Encodes an envelope as the reference article's Pub/Sub message: a JSON object with
/// exactly the keys `event_type`, `source`, `data`, `timestamp` (a number, seconds),
/// `correlation_id` and `causation_id` (`null` when absent).
///
/// The event id, schema version and metadata are not sent: the article's consumer builds its
/// event from exactly these six keys and rejects any other.
///
/// ```
/// use eventbus_core::Envelope;
/// let event = Envelope::new("PaymentCompleted", 1, "payment-service", serde_json::json!({"amount": 9.5}));
/// let text = eventbus_redis::codec::encode_message(&event)?;
/// let json: serde_json::Value = serde_json::from_str(&text)?;
/// assert_eq!(json.as_object().unwrap().len(), 6);
/// assert_eq!(json["causation_id"], serde_json::Value::Null);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_message(envelope: &Envelope<Value>) -> Result<String, Error> {
    let timestamp = serde_json::Number::from_f64(envelope.timestamp)
        .map(Value::Number)
        .unwrap_or(Value::Null);
    let message = serde_json::json!({
        EVENT_TYPE: envelope.event_type,
        SOURCE: envelope.source,
        DATA: envelope.data,
        TIMESTAMP: timestamp,
        CORRELATION_ID: envelope.correlation_id,
        CAUSATION_ID: envelope.causation_id,
    });
    serde_json::to_string(&message).map_err(|source| Error::Serialize {
        event_type: envelope.event_type.clone(),
        source,
    })
}

/// Decodes a Pub/Sub message in the article's format into an envelope with a fresh event id,
/// schema version 1 and empty metadata (none of them travel on Pub/Sub).
///
/// `event_type`, `source`, `data` and `timestamp` are required; `correlation_id` and
/// `causation_id` may be absent or `null`; other keys are ignored.
pub fn decode_message(payload: &[u8]) -> Result<Envelope<Value>, Malformed> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| malformed(format!("message is not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(malformed("message is not a JSON object"));
    };
    let text = |object: &serde_json::Map<String, Value>, key: &str| match object.get(key) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(malformed(format!("`{key}` is not a string"))),
    };
    let event_type = text(&object, EVENT_TYPE)?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("missing `event_type`"))?;
    let source = text(&object, SOURCE)?.ok_or_else(|| malformed("missing `source`"))?;
    let timestamp = match object.get(TIMESTAMP) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|t| t.is_finite())
    .ok_or_else(|| malformed("`timestamp` is missing or not a number"))?;
    let correlation_id = text(&object, CORRELATION_ID)?;
    let causation_id = text(&object, CAUSATION_ID)?;
    let data = object
        .remove(DATA)
        .ok_or_else(|| malformed("missing `data`"))?;
    let mut envelope = Envelope::new(event_type, 1, source, data);
    envelope.timestamp = timestamp;
    envelope.correlation_id = correlation_id;
    envelope.causation_id = causation_id;
    Ok(envelope)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("<missing>")
    }

    fn sample() -> Envelope<Value> {
        let mut env = Envelope::new(
            "OrderCreated",
            2,
            "order-service",
            json!({"order_id": "o1"}),
        )
        .with_correlation_id("corr-1")
        .with_metadata("tenant", "acme");
        env.timestamp = 1732665600.123456;
        env
    }

    #[test]
    fn encodes_the_article_fields_in_order() {
        let env = sample();
        let fields = encode(&env).unwrap();
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [EVENT_ID, EVENT_TYPE, SOURCE, DATA, TIMESTAMP, METADATA]
        );
        assert_eq!(field(&fields, EVENT_ID), env.event_id);
        assert_eq!(field(&fields, DATA), r#"{"order_id":"o1"}"#);
        assert_eq!(field(&fields, TIMESTAMP), "1732665600.123456");
        let metadata: Value = serde_json::from_str(field(&fields, METADATA)).unwrap();
        assert_eq!(
            metadata,
            json!({"tenant": "acme", "correlation_id": "corr-1", "schema_version": 2})
        );
        let global = global_fields(&fields, "eventbus:stream:OrderCreated");
        assert_eq!(global.len(), 7);
        assert_eq!(
            field(&global, ORIGINAL_STREAM),
            "eventbus:stream:OrderCreated"
        );
    }

    #[test]
    fn metadata_without_user_keys_is_written_like_a_map() {
        for (correlation, causation) in [
            (None, None),
            (Some("c\"1"), None),
            (None, Some("d")),
            (Some("c"), Some("d")),
        ] {
            let mut env = Envelope::new("T", 3, "s", json!(null));
            env.correlation_id = correlation.map(str::to_owned);
            env.causation_id = causation.map(str::to_owned);
            let mut map = Metadata::new();
            if let Some(c) = correlation {
                map.insert(CORRELATION_ID.into(), json!(c));
            }
            if let Some(c) = causation {
                map.insert(CAUSATION_ID.into(), json!(c));
            }
            map.insert(SCHEMA_VERSION.into(), json!(3));
            assert_eq!(
                encode_metadata(&env).unwrap(),
                serde_json::to_string(&map).unwrap()
            );
        }
    }

    #[test]
    fn round_trips() {
        let env = sample().with_causation_id("cause-1");
        let fields = encode(&env).unwrap();
        assert_eq!(decode(&fields).unwrap(), env);
        assert_eq!(decode(&global_fields(&fields, "k")).unwrap(), env);
    }

    #[test]
    fn timestamps_look_like_python() {
        assert_eq!(format_timestamp(1732665600.0), "1732665600.0");
        assert_eq!(format_timestamp(1732665600.5), "1732665600.5");
        assert_eq!(format_timestamp(0.25), "0.25");
    }

    #[test]
    fn decodes_what_the_python_article_writes() {
        // Exactly the entry of `StreamEventBus.publish`: no correlation, no schema version.
        let entry = [
            ("event_id", "5f0c6f9e-3c1a-4a53-9a57-5d1c1f0f8f11"),
            ("event_type", "OrderCreated"),
            ("source", "order-service"),
            ("data", r#"{"order_id": "ord_1", "total": 99.5}"#),
            ("timestamp", "1732665600.123456"),
            ("metadata", r#"{"user": "u1"}"#),
            ("original_stream", "eventbus:stream:OrderCreated"),
        ];
        let env = decode(&entry).unwrap();
        assert_eq!(env.event_id, "5f0c6f9e-3c1a-4a53-9a57-5d1c1f0f8f11");
        assert_eq!(env.event_type, "OrderCreated");
        assert_eq!(env.source, "order-service");
        assert_eq!(env.data, json!({"order_id": "ord_1", "total": 99.5}));
        assert_eq!(env.timestamp, 1732665600.123456);
        assert_eq!(env.version, 1);
        assert_eq!(env.correlation_id, None);
        assert_eq!(
            env.metadata,
            json!({"user": "u1"}).as_object().cloned().unwrap()
        );

        // metadata is optional, as in `decoded.get("metadata", "{}")`.
        let env = decode(&entry[..5]).unwrap();
        assert!(env.metadata.is_empty());
    }

    fn reason(fields: &[(&str, &[u8])]) -> String {
        decode(fields).unwrap_err().reason
    }

    #[test]
    fn precise_reasons() {
        let good: Vec<(&str, &[u8])> = vec![
            ("event_id", b"e1"),
            ("event_type", b"T"),
            ("source", b"s"),
            ("data", b"{}"),
            ("timestamp", b"1.5"),
            ("metadata", b"{}"),
        ];
        let with = |name: &str, value: &'static [u8]| {
            let mut f = good.clone();
            for (k, v) in f.iter_mut() {
                if *k == name {
                    *v = value;
                }
            }
            f
        };
        for missing in ["event_id", "event_type", "source", "data", "timestamp"] {
            let f: Vec<_> = good
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(reason(&f), format!("missing field `{missing}`"));
        }
        let r = reason(&with("data", b"{not json"));
        assert!(
            r.starts_with("field `data` is not valid JSON: key must be a string"),
            "{r}"
        );
        assert_eq!(
            reason(&with("timestamp", b"soon")),
            "field `timestamp` is not a number: `soon`"
        );
        assert!(reason(&with("timestamp", b"NaN")).contains("not a number"));
        assert_eq!(
            reason(&with("metadata", b"[1]")),
            "field `metadata` is not a JSON object (found an array)"
        );
        assert!(
            reason(&with("metadata", b"{")).starts_with("field `metadata` is not a JSON object: ")
        );
        for bad in [
            &b"{\"schema_version\": 0}"[..],
            b"{\"schema_version\": -1}",
            b"{\"schema_version\": \"2\"}",
            b"{\"schema_version\": 1.5}",
        ] {
            let mut f = good.clone();
            f[5].1 = bad;
            assert!(
                reason(&f).contains("`metadata.schema_version` is not a positive integer"),
                "{bad:?}"
            );
        }
        assert_eq!(
            reason(&with("metadata", b"{\"correlation_id\": 5}")),
            "`metadata.correlation_id` is not a string (found a number)"
        );
        assert_eq!(
            reason(&with("event_type", b"")),
            "field `event_type` is empty"
        );
        assert_eq!(
            reason(&with("source", b"\xff\xfe")),
            "field `source` is not valid UTF-8"
        );
    }

    #[test]
    fn ignores_unknown_fields_and_lifts_reserved_metadata() {
        let fields = [
            ("event_id", "e1"),
            ("event_type", "T"),
            ("source", "s"),
            ("data", "[1,2]"),
            ("timestamp", "7"),
            (
                "metadata",
                r#"{"correlation_id":"c","causation_id":"d","schema_version":3,"k":true}"#,
            ),
            ("extra", "ignored"),
        ];
        let env = decode(&fields).unwrap();
        assert_eq!(env.correlation_id.as_deref(), Some("c"));
        assert_eq!(env.causation_id.as_deref(), Some("d"));
        assert_eq!(env.version, 3);
        assert_eq!(env.timestamp, 7.0);
        assert_eq!(
            env.metadata,
            json!({"k": true}).as_object().cloned().unwrap()
        );
    }
}
