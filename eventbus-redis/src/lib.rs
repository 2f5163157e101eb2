//! Redis backend for eventbus.
