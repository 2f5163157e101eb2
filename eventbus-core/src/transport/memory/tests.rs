//! Tests of the in-memory transport.
