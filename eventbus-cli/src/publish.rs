//! `eventbus publish`: one event, checked the way consumers will read it.

use clap::Args;
use eventbus_core::{Envelope, EventBus};
use eventbus_redis::RedisTransport;
use serde_json::Value;

use crate::output::{print_text, CliResult};

#[derive(Args)]
pub(crate) struct PublishArgs {
    /// Event type, e.g. `OrderCreated` (not empty, not `all`, no `cmd:` or `reply:` prefix).
    event_type: String,
    /// The payload: a JSON object.
    data: String,
    /// Producing service.
    #[arg(long, default_value = "eventbus-cli")]
    source: String,
    /// Correlation id (default: none).
    #[arg(long)]
    correlation_id: Option<String>,
    /// Causation id (default: none).
    #[arg(long)]
    causation_id: Option<String>,
    /// Schema version of the payload (1 or more).
    #[arg(long, default_value_t = 1)]
    schema_version: u32,
    /// Partition key: on a partitioned topic, events with the same key land in one partition
    /// and keep their order (default: none, round-robin).
    #[arg(long)]
    key: Option<String>,
}

impl PublishArgs {
    /// Refuses what consumers would dead-letter, or what would land in another stream than
    /// the event type's.
    pub(crate) fn check(&self) -> CliResult {
        check_event_type(&self.event_type)?;
        if self.schema_version == 0 {
            return Err(
                "the schema version must be 1 or more (consumers dead-letter version 0)".into(),
            );
        }
        if self.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err("the partition key is empty".into());
        }
        self.data()?;
        Ok(())
    }

    /// The envelope to publish: the payload with the ids and partition key given.
    fn envelope(&self) -> CliResult<Envelope> {
        let mut envelope = Envelope::new(
            &self.event_type,
            self.schema_version,
            &self.source,
            self.data()?,
        );
        envelope.correlation_id.clone_from(&self.correlation_id);
        envelope.causation_id.clone_from(&self.causation_id);
        if let Some(key) = &self.key {
            envelope = envelope.with_partition_key(key);
        }
        Ok(envelope)
    }

    fn data(&self) -> CliResult<Value> {
        let data: Value = serde_json::from_str(&self.data)
            .map_err(|e| format!("the event data is not valid JSON: {e}"))?;
        if !data.is_object() {
            return Err(format!(
                "the event data must be a JSON object, not {}",
                eventbus_redis::codec::json_kind(&data)
            )
            .into());
        }
        Ok(data)
    }
}

/// An event type names its stream `{ns}:stream:{type}`: some names are other streams.
fn check_event_type(event_type: &str) -> CliResult {
    if event_type.trim().is_empty() {
        return Err("the event type is empty".into());
    }
    if event_type == "all" {
        return Err("`all` is the global stream, not an event type".into());
    }
    for (prefix, what) in [("cmd:", "command"), ("reply:", "reply")] {
        if event_type.starts_with(prefix) {
            return Err(format!(
                "an event type starting with `{prefix}` would land in a {what} stream"
            )
            .into());
        }
    }
    Ok(())
}

pub(crate) async fn run(transport: RedisTransport, args: PublishArgs) -> CliResult {
    let envelope = args.envelope()?;
    let bus = EventBus::new(transport, args.source);
    let ids = bus.publish_raw(&[envelope]).await?;
    let id = ids.first().ok_or("the server returned no entry id")?;
    print_text(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(event_type: &str, data: &str, schema_version: u32) -> PublishArgs {
        PublishArgs {
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            source: "test".to_owned(),
            correlation_id: None,
            causation_id: None,
            schema_version,
            key: None,
        }
    }

    fn refusal(event_type: &str, data: &str, schema_version: u32) -> String {
        match args(event_type, data, schema_version).check() {
            Ok(()) => panic!("{event_type} {data} v{schema_version} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refuses_what_consumers_reject_or_what_lands_elsewhere() {
        assert!(args("OrderCreated", r#"{"id":1}"#, 1).check().is_ok());
        assert!(args("Order.Created-v2", "{}", 7).check().is_ok());
        assert!(refusal("", "{}", 1).contains("empty"));
        assert!(refusal("  ", "{}", 1).contains("empty"));
        assert!(refusal("all", "{}", 1).contains("global stream"));
        assert!(refusal("cmd:billing", "{}", 1).contains("command stream"));
        assert!(refusal("reply:abc", "{}", 1).contains("reply stream"));
        assert!(refusal("X", "{}", 0).contains("schema version"));
        assert!(refusal("X", "[1]", 1).contains("not an array"));
        assert!(refusal("X", "3", 1).contains("not a number"));
        assert!(refusal("X", "null", 1).contains("not null"));
        assert!(refusal("X", "{nope", 1).contains("not valid JSON"));
        let blank_key = PublishArgs {
            key: Some(" ".to_owned()),
            ..args("X", "{}", 1)
        };
        assert!(blank_key.check().is_err());
    }

    #[test]
    fn key_sets_the_partition_key_metadata() {
        let keyed = PublishArgs {
            key: Some("customer-9".to_owned()),
            correlation_id: Some("c1".to_owned()),
            ..args("OrderPlaced", r#"{"n":1}"#, 2)
        };
        let envelope = keyed.envelope().unwrap();
        assert_eq!(
            envelope.metadata[eventbus_core::META_PARTITION_KEY],
            "customer-9"
        );
        assert_eq!(envelope.partition_key(), Some("customer-9"));
        assert_eq!(
            (envelope.event_type.as_str(), envelope.version),
            ("OrderPlaced", 2)
        );
        assert_eq!(envelope.correlation_id.as_deref(), Some("c1"));
        assert_eq!(envelope.data, serde_json::json!({"n": 1}));

        let unkeyed = args("OrderPlaced", "{}", 1).envelope().unwrap();
        assert!(unkeyed.metadata.is_empty());
        assert_eq!(unkeyed.partition_key(), None);
    }
}
