//! The envelope every event travels in.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::event::Event;

/// Free-form metadata carried with an event (JSON object).
pub type Metadata = Map<String, Value>;

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
    /// Wraps a typed event, taking its type name and version from [`Event`].
    pub fn from_event(source: impl Into<String>, event: E) -> Self {
        Envelope::new(E::EVENT_TYPE, E::VERSION, source, event)
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
