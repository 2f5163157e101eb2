//! In-memory transport with the semantics of Redis Streams consumer groups.
