//! The envelope every event travels in.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::event::Event;

/// Free-form metadata carried with an event (JSON object).
pub type Metadata = Map<String, Value>;

/// The metadata entry holding an event's explicit partition key (a JSON string).
///
/// On a partitioned topic, events with the same key land in one partition and keep their
/// order. Without it, the publisher falls back to the aggregate id ([`META_AGGREGATE_ID`]),
/// then to round-robin; see [`Envelope::partition_key`]. Set it with
/// [`Envelope::with_partition_key`], or declare it on the event type with
/// `#[event(partition_key = field)]` ([`Event::partition_key`]).
pub const META_PARTITION_KEY: &str = "partition_key";

/// Metadata key naming the aggregate id on events appended by an event-sourced repository
/// (also the partition key of events that have no explicit one).
pub const META_AGGREGATE_ID: &str = "aggregate_id";

/// The stream id Redis (or the in-memory transport) gave an entry, e.g. `1700000000000-0`.
pub type EntryId = String;

/// An event with everything the bus needs to route, trace and version it.
///
/// `T` is the payload: a typed event, or [`serde_json::Value`] for an event whose type is not
/// known at compile time (the raw form transports carry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T = Value> {
    /// Unique, time-ordered id (UUIDv7 for events made here; any string from other producers).
    pub event_id: String,
    /// The event type name, e.g. `OrderCreated` or `Order.Created`.
    pub event_type: String,
    /// Schema version of `data`.
    pub version: u32,
    /// The service that produced the event.
    pub source: String,
    /// When the event was produced, in seconds since the Unix epoch.
    pub timestamp: f64,
    /// Id shared by every command and event of one business flow.
    pub correlation_id: Option<String>,
    /// Id of the command or event that caused this one.
    pub causation_id: Option<String>,
    /// Free metadata (user-defined keys).
    pub metadata: Metadata,
    /// The payload.
    pub data: T,
}

/// A fresh unique, time-ordered id (UUIDv7, hyphenated).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The current time in seconds since the Unix epoch.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The metadata a typed event declares about itself: its partition key, if any, under
/// [`META_PARTITION_KEY`]. Every envelope built from a typed event starts with it.
pub(crate) fn event_metadata<E: Event>(event: &E) -> Metadata {
    let mut metadata = Metadata::new();
    if let Some(key) = event.partition_key() {
        metadata.insert(META_PARTITION_KEY.into(), key.into());
    }
    metadata
}

impl<T> Envelope<T> {
    /// Wraps `data` in a new envelope with a fresh id and the current time.
    pub fn new(
        event_type: impl Into<String>,
        version: u32,
        source: impl Into<String>,
        data: T,
    ) -> Self {
        Envelope {
            event_id: new_id(),
            event_type: event_type.into(),
            version,
            source: source.into(),
            timestamp: now_seconds(),
            correlation_id: None,
            causation_id: None,
            metadata: Metadata::new(),
            data,
        }
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the explicit partition key ([`META_PARTITION_KEY`]), replacing any the event
    /// declared.
    pub fn with_partition_key(self, key: impl Into<String>) -> Self {
        self.with_metadata(META_PARTITION_KEY, key.into())
    }

    /// The key that picks this event's partition on a partitioned topic: the explicit key
    /// ([`META_PARTITION_KEY`]) if set, else the aggregate id ([`META_AGGREGATE_ID`]) an
    /// event-sourced aggregate stamps, else `None` (the publisher then spreads events
    /// round-robin).
    ///
    /// Only JSON strings count: an entry holding a number or anything else is ignored, as if
    /// absent, so that `7` and `"7"` can't silently pick different partitions.
    ///
    /// ```
    /// use eventbus_core::Envelope;
    ///
    /// let env = Envelope::new("OrderShipped", 1, "shop", ())
    ///     .with_metadata("aggregate_id", "order-1");
    /// assert_eq!(env.partition_key(), Some("order-1"));
    /// assert_eq!(env.with_partition_key("customer-9").partition_key(), Some("customer-9"));
    /// assert_eq!(Envelope::new("Tick", 1, "clock", ()).partition_key(), None);
    /// ```
    pub fn partition_key(&self) -> Option<&str> {
        [META_PARTITION_KEY, META_AGGREGATE_ID]
            .into_iter()
            .find_map(|key| self.metadata.get(key).and_then(Value::as_str))
    }

    /// Makes this envelope a consequence of `cause`: same correlation id (or the cause's
    /// event id when the cause has none), and the cause's event id as causation id.
    pub fn caused_by<U>(mut self, cause: &Envelope<U>) -> Self {
        self.correlation_id = Some(
            cause
                .correlation_id
                .clone()
                .unwrap_or_else(|| cause.event_id.clone()),
        );
        self.causation_id = Some(cause.event_id.clone());
        self
    }

    /// Replaces the payload, keeping everything else.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            event_id: self.event_id,
            event_type: self.event_type,
            version: self.version,
            source: self.source,
            timestamp: self.timestamp,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            metadata: self.metadata,
            data: f(self.data),
        }
    }
}

impl<E: Event> Envelope<E> {
    /// Wraps a typed event, taking its type name and version from [`Event`], and its
    /// partition key ([`Event::partition_key`], stored under [`META_PARTITION_KEY`]) when it
    /// declares one.
    pub fn from_event(source: impl Into<String>, event: E) -> Self {
        Envelope {
            metadata: event_metadata(&event),
            ..Envelope::new(E::EVENT_TYPE, E::VERSION, source, event)
        }
    }

    /// Encodes the payload as JSON, for transports.
    pub fn to_raw(&self) -> Result<Envelope<Value>> {
        let data = serde_json::to_value(&self.data).map_err(|source| Error::Serialize {
            event_type: self.event_type.clone(),
            source,
        })?;
        Ok(self.with_data(data))
    }

    /// Encodes the payload as JSON, for transports, consuming the envelope (no copies of
    /// its ids and metadata).
    pub fn into_raw(self) -> Result<Envelope<Value>> {
        match serde_json::to_value(&self.data) {
            Ok(data) => Ok(self.map(|_| data)),
            Err(source) => Err(Error::Serialize {
                event_type: self.event_type,
                source,
            }),
        }
    }
}

impl<T> Envelope<T> {
    /// A copy of everything but the payload, around `data`.
    fn with_data<U>(&self, data: U) -> Envelope<U> {
        Envelope {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            version: self.version,
            source: self.source.clone(),
            timestamp: self.timestamp,
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            metadata: self.metadata.clone(),
            data,
        }
    }
}

impl Envelope<Value> {
    /// Decodes the payload as event `E`, checking the type name, and upgrading a payload of
    /// an older schema version with the event's [upcasters](crate::event::Upcaster). The
    /// returned envelope carries `E::VERSION`.
    ///
    /// A version with no upcaster path, or newer than `E::VERSION`, is an [`Error::Decode`]
    /// (a consumer dead-letters such an entry with this reason).
    pub fn decode<E: Event>(&self) -> Result<Envelope<E>> {
        if self.event_type != E::EVENT_TYPE {
            return Err(Error::Decode {
                event_type: self.event_type.clone(),
                reason: format!("expected event type `{}`", E::EVENT_TYPE),
            });
        }
        let upcast;
        let data = if self.version == E::VERSION {
            &self.data
        } else {
            upcast =
                crate::event::upcast::<E>(self.version, self.data.clone()).map_err(|reason| {
                    Error::Decode {
                        event_type: self.event_type.clone(),
                        reason,
                    }
                })?;
            &upcast
        };
        let data = E::deserialize(data).map_err(|e| Error::Decode {
            event_type: self.event_type.clone(),
            reason: format!("invalid data: {e}"),
        })?;
        // Copies the envelope's fields but not its JSON payload; upcast data is now at
        // the code's version.
        let mut out = self.with_data(data);
        out.version = E::VERSION;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }
    impl Event for Ping {
        const EVENT_TYPE: &'static str = "Ping";
        const VERSION: u32 = 2;
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn raw_round_trip_and_checks() {
        let env = Envelope::from_event("svc", Ping { n: 7 }).with_correlation_id("c1");
        let raw = env.to_raw().unwrap();
        assert_eq!(raw.data, serde_json::json!({"n": 7}));
        assert_eq!(raw.decode::<Ping>().unwrap(), env);

        let mut old = raw.clone();
        old.version = 1;
        let err = old.decode::<Ping>().unwrap_err().to_string();
        assert!(err.contains("unsupported schema version 1"), "{err}");

        let mut bad = raw;
        bad.data = serde_json::json!({"n": "seven"});
        assert!(bad
            .decode::<Ping>()
            .unwrap_err()
            .to_string()
            .contains("invalid data"));
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Renamed {
        count: u32,
        unit: String,
    }
    impl Event for Renamed {
        const EVENT_TYPE: &'static str = "Renamed";
        const VERSION: u32 = 3;
        const UPCASTERS: &'static [crate::event::Upcaster] = &[
            crate::event::Upcaster::new(1, |mut v| {
                let n = v["n"].take();
                Ok(serde_json::json!({ "count": n }))
            }),
            crate::event::Upcaster::new(2, |mut v| {
                if v["count"].as_u64() == Some(13) {
                    return Err("unlucky".into());
                }
                v["unit"] = "items".into();
                Ok(v)
            }),
        ];
    }

    #[test]
    fn upcasters_chain_on_decode() {
        let v1 = Envelope::new("Renamed", 1, "s", serde_json::json!({"n": 4}));
        let decoded = v1.decode::<Renamed>().unwrap();
        assert_eq!(decoded.version, 3);
        assert_eq!(
            decoded.data,
            Renamed {
                count: 4,
                unit: "items".into()
            }
        );
        let v2 = Envelope::new("Renamed", 2, "s", serde_json::json!({"count": 5}));
        assert_eq!(v2.decode::<Renamed>().unwrap().data.count, 5);

        let failing = Envelope::new("Renamed", 2, "s", serde_json::json!({"count": 13}));
        let err = failing.decode::<Renamed>().unwrap_err().to_string();
        assert!(err.contains("from version 2 to 3 failed: unlucky"), "{err}");

        let newer = Envelope::new("Renamed", 4, "s", serde_json::json!({}));
        let err = newer.decode::<Renamed>().unwrap_err().to_string();
        assert!(err.contains("unsupported schema version 4"), "{err}");

        // Ping (version 2) declares no upcaster: version 1 has no path.
        let old = Envelope::new("Ping", 1, "s", serde_json::json!({"n": 1}));
        let err = old.decode::<Ping>().unwrap_err().to_string();
        assert!(err.contains("no upcaster from version 1 to 2"), "{err}");
    }

    #[crate::event(partition_key = customer_id)]
    struct OrderPlaced {
        order_id: String,
        customer_id: u64,
    }

    #[crate::event(partition_key = region)]
    struct Shipped {
        region: Option<String>,
    }

    #[test]
    fn derived_partition_key_goes_into_the_metadata() {
        let placed = OrderPlaced {
            order_id: "o1".into(),
            customer_id: 42,
        };
        assert_eq!(placed.partition_key().as_deref(), Some("42"));
        let env = Envelope::from_event("shop", placed);
        assert_eq!(env.metadata[META_PARTITION_KEY], serde_json::json!("42"));
        assert_eq!(env.partition_key(), Some("42"));
        assert_eq!(env.data.order_id, "o1");
        // The key survives the trip to the wire form.
        assert_eq!(env.into_raw().unwrap().partition_key(), Some("42"));

        let north = Envelope::from_event(
            "s",
            Shipped {
                region: Some("north".into()),
            },
        );
        assert_eq!(north.partition_key(), Some("north"));
        let nowhere = Envelope::from_event("s", Shipped { region: None });
        assert!(nowhere.metadata.is_empty());
        assert_eq!(nowhere.partition_key(), None);
    }

    #[test]
    fn command_outputs_carry_the_partition_key() {
        use crate::cqrs::Emit;

        let mut out = Vec::new();
        let placed = |customer_id| OrderPlaced {
            order_id: "o".into(),
            customer_id,
        };
        (placed(1), Ping { n: 1 }, placed(2))
            .emit("shop", &mut out)
            .unwrap();
        let keys: Vec<_> = out.iter().map(Envelope::partition_key).collect();
        assert_eq!(keys, [Some("1"), None, Some("2")]);
        assert_eq!(out[0].event_type, "OrderPlaced");
    }

    #[test]
    fn explicit_key_wins_over_the_aggregate_id() {
        let by_aggregate = Envelope::new("A", 1, "s", ()).with_metadata(META_AGGREGATE_ID, "agg-1");
        assert_eq!(by_aggregate.partition_key(), Some("agg-1"));
        let explicit = by_aggregate.clone().with_partition_key("k");
        assert_eq!(explicit.partition_key(), Some("k"));
        assert_eq!(
            explicit.metadata[META_PARTITION_KEY],
            serde_json::json!("k")
        );

        // Only strings are keys: a number is ignored, as if absent.
        let numeric = by_aggregate.with_metadata(META_PARTITION_KEY, 7);
        assert_eq!(numeric.partition_key(), Some("agg-1"));
        let only_numeric = Envelope::new("A", 1, "s", ()).with_metadata(META_PARTITION_KEY, 7);
        assert_eq!(only_numeric.partition_key(), None);
    }

    #[test]
    fn no_key_is_none() {
        let env = Envelope::from_event("svc", Ping { n: 1 });
        assert!(env.metadata.is_empty());
        assert_eq!(env.partition_key(), None);
        let other = Envelope::new("A", 1, "s", ()).with_metadata("tenant", "t1");
        assert_eq!(other.partition_key(), None);
    }

    #[test]
    fn caused_by_propagates_correlation() {
        let cause = Envelope::new("A", 1, "s", ()).with_correlation_id("corr");
        let effect = Envelope::new("B", 1, "s", ()).caused_by(&cause);
        assert_eq!(effect.correlation_id.as_deref(), Some("corr"));
        assert_eq!(
            effect.causation_id.as_deref(),
            Some(cause.event_id.as_str())
        );

        let root = Envelope::new("A", 1, "s", ());
        let child = Envelope::new("B", 1, "s", ()).caused_by(&root);
        assert_eq!(
            child.correlation_id.as_deref(),
            Some(root.event_id.as_str())
        );
    }
}
