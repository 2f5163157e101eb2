//! Property tests of the entry codec (`codec::decode`, `codec::encode`): decoding never
//! panics on any field list, and every envelope round-trips. No Redis needed.
//! The cargo-fuzz target `fuzz/fuzz_targets/decode.rs` explores the same decoder further.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use eventbus_core::{Envelope, Metadata};
use eventbus_redis::codec::{self, decode, encode, global_fields};
use proptest::prelude::*;
use serde_json::Value;

const NAMES: [&str; 8] = [
    "event_id",
    "event_type",
    "source",
    "data",
    "timestamp",
    "metadata",
    "original_stream",
    "extra",
];

/// A field name: mostly one the decoder reads, sometimes arbitrary bytes.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(&NAMES[..]).prop_map(|n| n.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

/// A value: arbitrary bytes, or text that gets further into the decoder (JSON, numbers).
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        json().prop_map(|v| v.to_string().into_bytes()),
        any::<f64>().prop_map(|f| f.to_string().into_bytes()),
        metadata_text().prop_map(String::into_bytes),
        Just(b"{}".to_vec()),
        Just(b"1700000000.5".to_vec()),
    ]
}

/// Metadata text with the reserved keys holding values of every kind.
fn metadata_text() -> impl Strategy<Value = String> {
    (
        proptest::option::of(json()),
        proptest::option::of(json()),
        proptest::option::of(json()),
    )
        .prop_map(|(c, d, v)| {
            let mut map = serde_json::Map::new();
            for (key, value) in [
                (codec::CORRELATION_ID, c),
                (codec::CAUSATION_ID, d),
                (codec::SCHEMA_VERSION, v),
            ] {
                if let Some(value) = value {
                    map.insert(key.to_owned(), value);
                }
            }
            Value::Object(map).to_string()
        })
}

/// Any JSON value, nested a few levels, with arbitrary strings and numbers.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// User metadata: any keys but the reserved ones (which are envelope fields on the wire).
fn user_metadata() -> impl Strategy<Value = Metadata> {
    proptest::collection::btree_map(
        any::<String>().prop_filter("not a reserved key", |k| {
            ![
                codec::CORRELATION_ID,
                codec::CAUSATION_ID,
                codec::SCHEMA_VERSION,
            ]
            .contains(&k.as_str())
        }),
        json(),
        0..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn envelope() -> impl Strategy<Value = Envelope<Value>> {
    (
        (
            any::<String>(),
            any::<String>().prop_filter("event types are not empty", |t| !t.is_empty()),
            1..=u32::MAX,
            any::<String>(),
            any::<f64>().prop_filter("timestamps are finite", |t| t.is_finite()),
        ),
        (
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
            user_metadata(),
            proptest::collection::btree_map(any::<String>(), json(), 0..5),
        ),
    )
        .prop_map(
            |(
                (event_id, event_type, version, source, timestamp),
                (corr, cause, metadata, data),
            )| {
                Envelope {
                    event_id,
                    event_type,
                    version,
                    source,
                    timestamp,
                    correlation_id: corr,
                    causation_id: cause,
                    metadata,
                    data: Value::Object(data.into_iter().collect()),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any field list decodes to an envelope or to a reason, and never panics; what decodes
    /// encodes and decodes again to the same envelope.
    #[test]
    fn decoding_any_fields_never_panics(
        fields in proptest::collection::vec((name(), value()), 0..10)
    ) {
        match decode(&fields) {
            Ok(envelope) => {
                prop_assert!(!envelope.event_type.is_empty());
                prop_assert!(envelope.timestamp.is_finite());
                prop_assert!(envelope.version >= 1);
                let again = decode(&encode(&envelope).expect("a decoded envelope encodes"));
                prop_assert_eq!(again, Ok(envelope));
            }
            Err(malformed) => prop_assert!(!malformed.reason.is_empty()),
        }
    }

    /// Every field present and valid except one arbitrary value: still no panic.
    #[test]
    fn decoding_one_bad_field_never_panics(which in 0usize..6, bad in value()) {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = [
            ("event_id", "e1"),
            ("event_type", "T"),
            ("source", "s"),
            ("data", "{}"),
            ("timestamp", "1.5"),
            ("metadata", "{}"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        fields[which].1 = bad;
        if let Err(malformed) = decode(&fields) {
            prop_assert!(!malformed.reason.is_empty());
        }
    }

    /// encode → decode is the identity, on per-type and on global stream entries.
    #[test]
    fn every_envelope_round_trips(envelope in envelope()) {
        let fields = encode(&envelope).expect("JSON values always encode");
        prop_assert_eq!(decode(&fields), Ok(envelope.clone()));
        let global = global_fields(&fields, "eventbus:stream:T");
        prop_assert_eq!(decode(&global), Ok(envelope));
    }
}

/// Found by `every_envelope_round_trips`: without serde_json's `float_roundtrip` a payload
/// number came back one ulp off.
#[test]
fn payload_floats_read_back_exactly() {
    let mut envelope = Envelope::new(
        "T",
        1,
        "s",
        serde_json::json!({"x": [-1.6898495968542336e-9, 0.1, 1e300, 5e-324, -2.2250738585072014e-308]}),
    );
    envelope.timestamp = 1732665600.123456;
    let fields = encode(&envelope).unwrap();
    assert_eq!(decode(&fields).unwrap(), envelope);
}
