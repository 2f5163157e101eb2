//! Fuzzes the stream-entry decoder (`eventbus_redis::codec::decode`) with arbitrary
//! `(field, value)` byte pairs. It must never panic; what it decodes must encode and decode
//! again to the same envelope.
//!
//! Input: pairs separated by `0xFF`, each `name 0xFE value` (no `0xFE`: an empty value), so
//! that the seeds in `fuzz/seeds/decode/` are readable entries the fuzzer mutates from.

#![no_main]

use eventbus_redis::codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields: Vec<(&[u8], &[u8])> = data
        .split(|b| *b == 0xFF)
        .map(|pair| match pair.iter().position(|b| *b == 0xFE) {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        })
        .collect();
    match decode(&fields) {
        Ok(envelope) => {
            assert!(!envelope.event_type.is_empty());
            assert!(envelope.timestamp.is_finite());
            assert!(envelope.version >= 1);
            let encoded = encode(&envelope).expect("a decoded envelope encodes");
            assert_eq!(decode(&encoded).as_ref(), Ok(&envelope));
        }
        Err(malformed) => assert!(!malformed.reason.is_empty()),
    }
});
