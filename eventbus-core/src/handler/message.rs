//! What a handler handles: its first argument, decoded from what the runtime delivers.
//! Each runtime implements it for its own messages (events in `bus`, commands and queries
//! in `cqrs`, Pub/Sub deliveries in `dispatch`), so this module depends on none of them.

/// What a handler in context `Ctx` handles: decoded from `Raw`, answered with `Output`.
pub trait Message<Ctx>: Sized + Send + 'static {
    /// What the runtime delivers.
    type Raw: Send + 'static;
    /// What a handler returns.
    type Output: Send + 'static;

    /// Decodes the message; a message that doesn't decode is answered with the `Err` output
    /// (for events: a permanent failure, so the entry is dead-lettered at once).
    fn from_raw(raw: Self::Raw) -> Result<Self, Self::Output>;
}
