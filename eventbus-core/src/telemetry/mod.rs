//! Observability: W3C trace context carried in events' metadata, `tracing` spans named
//! after the OpenTelemetry messaging semantic conventions, and metrics through the
//! [`metrics`] facade (the application picks the exporter; see the `prometheus` and `otel`
//! features).
//!
//! Spans: publishing is a PRODUCER span (`publish {destination}`), each handler invocation
//! a CONSUMER span (`process {destination}`) whose parent is the trace context the event
//! carries; commands, queries, projections, saga transitions and aggregate appends get
//! spans of their own. Their fields follow the conventions where they define a name
//! (`messaging.system`, `messaging.destination.name`, `messaging.consumer.group.name`,
//! `messaging.message.id`, `messaging.message.conversation_id`, …) and `eventbus.*`
//! otherwise.
//!
//! Metrics (names in [`names`]) carry only bounded labels: the destination (a stream), the
//! consumer group, the operation, an outcome — never an event id. The consumer groups' lag,
//! pending entries and oldest pending idle time are sampled from the backend by a
//! [`lag::LagSampler`]; the `prometheus` module (feature `prometheus`) serves them all on
//! `GET /metrics`.
//!
//! With the `otel` feature, the spans are OpenTelemetry spans (through
//! `tracing-opentelemetry`) whose trace context is the one events carry, and `otlp` exports
//! them, and optionally the metrics, to an OpenTelemetry collector over OTLP/HTTP.

pub mod context;
pub mod lag;
pub mod metrics;
pub mod names;
#[cfg(feature = "otel")]
pub(crate) mod otel;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otlp;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus;
pub(crate) mod spans;

pub use context::TraceContext;
