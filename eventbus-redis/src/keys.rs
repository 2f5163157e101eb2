//! Every Redis key and naming convention of the backend, in one place.
//!
//! The default layout is the one of the reference article's `StreamEventBus`, so Rust and
//! Python services can share one bus:
//!
//! | what | key (namespace `eventbus`) |
//! |---|---|
//! | per-type stream | `eventbus:stream:{event_type}` |
//! | global stream | `eventbus:stream:all` |
//! | dead letters of a group | `eventbus:dlq:{group}` |
//! | consumer group of a service | `{service}-consumers` |
//!
//! Call sites never format keys themselves, so a partitioned layout for Redis Cluster (keys
//! written by one atomic step sharing a hash tag) can be added here alone.

use eventbus_core::transport::Topic;

/// The default key namespace.
pub const DEFAULT_NAMESPACE: &str = "eventbus";

/// The name of the global stream's last key segment (`{ns}:stream:all`).
const ALL: &str = "all";
/// Prefix of a service's command stream (`{ns}:stream:cmd:{service}`).
const COMMANDS: &str = "cmd:";
/// Prefix of a client instance's reply stream (`{ns}:stream:reply:{instance}`).
const REPLIES: &str = "reply:";

/// Builds the keys of one namespace.
///
/// ```
/// use eventbus_core::Topic;
/// use eventbus_redis::Keys;
///
/// let keys = Keys::default();
/// assert_eq!(keys.stream(&Topic::of_type("OrderCreated")), "eventbus:stream:OrderCreated");
/// assert_eq!(keys.stream(&Topic::All), "eventbus:stream:all");
/// assert_eq!(keys.dead_letters("billing-consumers"), "eventbus:dlq:billing-consumers");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
    stream_prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_NAMESPACE)
    }
}

impl Keys {
    /// Keys under `namespace` (the article uses `eventbus`).
    pub fn new(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let stream_prefix = format!("{namespace}:stream:");
        Keys {
            namespace,
            stream_prefix,
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The stream of a topic: `{ns}:stream:{event_type}`, or `{ns}:stream:all`.
    ///
    /// An event type literally named `all` would share the global stream; don't name one so.
    pub fn stream(&self, topic: &Topic) -> String {
        match topic {
            Topic::Type(event_type) => format!("{}{event_type}", self.stream_prefix),
            Topic::All => format!("{}{ALL}", self.stream_prefix),
            // Event type names can't contain ':', so these never collide with a type stream.
            Topic::Commands(service) => format!("{}{COMMANDS}{service}", self.stream_prefix),
            Topic::Replies(instance) => format!("{}{REPLIES}{instance}", self.stream_prefix),
            other => format!("{}{other}", self.stream_prefix),
        }
    }

    /// The stream of an event type: `{ns}:stream:{event_type}`.
    pub fn type_stream(&self, event_type: &str) -> String {
        format!("{}{event_type}", self.stream_prefix)
    }

    /// The dead-letter stream of a consumer group: `{ns}:dlq:{group}`.
    pub fn dead_letters(&self, group: &str) -> String {
        format!("{}:dlq:{group}", self.namespace)
    }

    /// The `SCAN MATCH` pattern of every stream of the namespace: `{ns}:stream:*`.
    ///
    /// Glob metacharacters in the namespace are escaped.
    pub fn stream_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.stream_prefix.len() + 1);
        for c in self.stream_prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }

    /// The topic of a stream key of this namespace, or `None` for any other key.
    pub fn topic_of(&self, key: &str) -> Option<Topic> {
        let rest = key.strip_prefix(&self.stream_prefix)?;
        if let Some(service) = rest.strip_prefix(COMMANDS) {
            return Some(Topic::Commands(service.to_string()));
        }
        if let Some(instance) = rest.strip_prefix(REPLIES) {
            return Some(Topic::Replies(instance.to_string()));
        }
        match rest {
            "" => None,
            ALL => Some(Topic::All),
            event_type => Some(Topic::of_type(event_type)),
        }
    }
}

/// The consumer group of a service, by the article's convention: `{service}-consumers`.
///
/// ```
/// assert_eq!(eventbus_redis::group_for_service("billing"), "billing-consumers");
/// ```
pub fn group_for_service(service: &str) -> String {
    format!("{service}-consumers")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn article_layout() {
        let keys = Keys::default();
        assert_eq!(keys.namespace(), "eventbus");
        assert_eq!(
            keys.stream(&Topic::of_type("OrderCreated")),
            "eventbus:stream:OrderCreated"
        );
        assert_eq!(
            keys.type_stream("OrderCreated"),
            "eventbus:stream:OrderCreated"
        );
        assert_eq!(keys.stream(&Topic::All), "eventbus:stream:all");
        assert_eq!(
            keys.dead_letters("billing-consumers"),
            "eventbus:dlq:billing-consumers"
        );
        assert_eq!(keys.stream_pattern(), "eventbus:stream:*");
        assert_eq!(
            group_for_service("order-service"),
            "order-service-consumers"
        );
    }

    #[test]
    fn keys_parse_back_to_topics() {
        let keys = Keys::new("test:ns");
        for topic in [
            Topic::of_type("Order.Created"),
            Topic::of_type("a:b"),
            Topic::All,
        ] {
            assert_eq!(keys.topic_of(&keys.stream(&topic)), Some(topic));
        }
        assert_eq!(keys.topic_of("test:ns:dlq:g"), None);
        assert_eq!(keys.topic_of("test:ns:stream:"), None);
        assert_eq!(keys.topic_of("other:stream:X"), None);
    }

    #[test]
    fn pattern_escapes_glob_characters() {
        assert_eq!(
            Keys::new("a*b[1]").stream_pattern(),
            "a\\*b\\[1\\]:stream:*"
        );
    }
}
