//! The names of the metrics eventbus records, and of their labels.
//!
//! `messaging_*` follow the OpenTelemetry messaging semantic conventions (their dots as
//! underscores, as Prometheus exports them); `eventbus_*` are this crate's own.

/// Counter: events published (label [`DESTINATION`]).
pub const SENT: &str = "messaging_client_sent_messages_total";
/// Counter: deliveries handed to handlers ([`DESTINATION`], [`GROUP`]).
pub const CONSUMED: &str = "messaging_client_consumed_messages_total";
/// Histogram, seconds: one delivery's handling, all handlers and retries of one attempt
/// ([`DESTINATION`], [`GROUP`], [`OUTCOME`]).
pub const PROCESS_DURATION: &str = "messaging_process_duration_seconds";
/// Histogram, seconds: a client operation against the broker ([`OPERATION`],
/// [`DESTINATION`]).
pub const OPERATION_DURATION: &str = "messaging_client_operation_duration_seconds";
/// Counter: handler calls that failed ([`DESTINATION`], [`GROUP`]).
pub const HANDLER_FAILURES: &str = "eventbus_handler_failures_total";
/// Counter: deliveries retried after a failure ([`DESTINATION`], [`GROUP`]).
pub const RETRIES: &str = "eventbus_retries_total";
/// Counter: entries moved to a dead-letter stream ([`DESTINATION`], [`GROUP`]).
pub const DEAD_LETTERS: &str = "eventbus_dead_letters_total";
/// Counter: entries reclaimed from idle consumers or recovered after a restart
/// ([`DESTINATION`], [`GROUP`]).
pub const CLAIMED: &str = "eventbus_claimed_total";
/// Gauge: entries of a stream not yet delivered to a group ([`STREAM`], [`GAUGE_GROUP`],
/// [`PARTITION`]); not exported while the server cannot tell (after trimming).
pub const GROUP_LAG: &str = "eventbus_consumer_group_lag";
/// Gauge: entries delivered to a group and not acknowledged ([`STREAM`], [`GAUGE_GROUP`],
/// [`PARTITION`]).
pub const GROUP_PENDING: &str = "eventbus_consumer_group_pending";
/// Gauge, seconds: idle time of a group's oldest pending entry, 0 with nothing pending
/// ([`STREAM`], [`GAUGE_GROUP`], [`PARTITION`]).
pub const GROUP_OLDEST_PENDING: &str = "eventbus_consumer_group_oldest_pending_seconds";
/// Gauge: entries of a stream a projection has not applied yet ([`STREAM`], `projection`).
pub const PROJECTION_BEHIND: &str = "eventbus_projection_behind_entries";
/// Counter: saga transitions into a state (`state`, `saga`).
pub const SAGA_TRANSITIONS: &str = "eventbus_saga_transitions_total";
/// Counter: saga steps that timed out (`saga`).
pub const SAGA_TIMEOUTS: &str = "eventbus_saga_timeouts_total";
/// Gauge: sagas in each state (`state`), as last counted.
pub const SAGAS: &str = "eventbus_sagas";
/// Histogram, seconds: a command's dispatch (`command`, [`OUTCOME`]).
pub const COMMAND_DURATION: &str = "eventbus_command_duration_seconds";

/// Label: the destination (the stream's name).
pub const DESTINATION: &str = "messaging_destination_name";
/// Label: the consumer group.
pub const GROUP: &str = "messaging_consumer_group_name";
/// Label: the messaging system (`redis`, `memory`).
pub const SYSTEM: &str = "messaging_system";
/// Label: the client operation (`publish`, `receive`, `ack`, `claim`, `dead_letter`, …).
pub const OPERATION: &str = "messaging_operation_name";
/// Label: `ok`, `retry`, `dead_letter`, `abandoned` (processing); `ok`, `rejected`,
/// `error` (commands).
pub const OUTCOME: &str = "outcome";
/// Label of the group gauges: the stream, named as [`DESTINATION`] names it (on Redis the
/// stream's key, `eventbus:stream:OrderCreated`; a partitioned topic's base key).
pub const STREAM: &str = "stream";
/// Label of the group gauges: the consumer group.
pub const GAUGE_GROUP: &str = "group";
/// Label of the group gauges: the partition (empty for an unpartitioned stream).
pub const PARTITION: &str = "partition";
