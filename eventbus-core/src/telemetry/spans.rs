//! The spans eventbus opens, named and shaped after the OpenTelemetry messaging semantic
//! conventions (`otel.name`, `otel.kind` are what `tracing-opentelemetry` reads).

use serde_json::Value;
use tracing::field::Empty;
use tracing::Span;

use super::context::TraceContext;
use crate::envelope::Envelope;

/// Where a delivery came from and who handles it.
pub(crate) struct Delivered<'a> {
    pub(crate) system: &'static str,
    pub(crate) destination: &'a str,
    pub(crate) group: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) entry_id: &'a str,
    pub(crate) delivery_count: u32,
}

/// The CONSUMER span of one handler invocation, child of the trace context the event
/// carries (a new trace when it carries none), and the invocation's own trace context: the
/// span's OpenTelemetry context (feature `otel`, with its layer installed), else a child of
/// the event's.
pub(crate) fn process(d: &Delivered<'_>, event: &Envelope<Value>) -> (Span, TraceContext) {
    let parent = TraceContext::from_metadata(&event.metadata);
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {}", d.destination),
        otel.kind = "consumer",
        messaging.system = d.system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %d.destination,
        messaging.consumer.group.name = %d.group,
        messaging.message.id = %event.event_id,
        messaging.message.conversation_id = Empty,
        eventbus.event_type = %event.event_type,
        eventbus.entry_id = %d.entry_id,
        eventbus.delivery_count = d.delivery_count,
        eventbus.consumer = %d.consumer,
        trace_id = Empty,
        span_id = Empty,
    );
    if let Some(correlation) = &event.correlation_id {
        span.record("messaging.message.conversation_id", correlation.as_str());
    }
    let context = own_context(&span, parent.as_ref());
    span.record("trace_id", context.trace_id_hex().as_str());
    span.record("span_id", context.span_id_hex().as_str());
    (span, context)
}

/// The trace context a CONSUMER span runs its handler in: with `otel` (and the layer
/// installed), the span's own OpenTelemetry context once `parent` is made its parent.
#[cfg(feature = "otel")]
fn own_context(span: &Span, parent: Option<&TraceContext>) -> TraceContext {
    super::otel::set_parent(span, parent);
    super::otel::of(span).unwrap_or_else(|| child_of(parent))
}

/// The trace context a CONSUMER span runs its handler in: a child of `parent`.
#[cfg(not(feature = "otel"))]
fn own_context(_span: &Span, parent: Option<&TraceContext>) -> TraceContext {
    child_of(parent)
}

/// A child of `parent`, or a new trace.
fn child_of(parent: Option<&TraceContext>) -> TraceContext {
    parent.map_or_else(TraceContext::new_root, TraceContext::child)
}

/// The PRODUCER span of a publish of `events` (the first one's ids when one), each of which
/// it stamps with the context of the publish, from inside the span (see
/// [`context::stamp`](super::context::stamp)).
pub(crate) fn publish(
    system: &'static str,
    destination: &str,
    events: &mut [Envelope<Value>],
) -> Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {destination}"),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %destination,
        messaging.batch.message_count = events.len(),
        messaging.message.id = Empty,
        messaging.message.conversation_id = Empty,
        eventbus.event_type = Empty,
        trace_id = Empty,
    );
    span.in_scope(|| super::context::stamp_all(events.iter_mut().map(|e| &mut e.metadata)));
    if let [event] = events {
        span.record("messaging.message.id", event.event_id.as_str());
        span.record("eventbus.event_type", event.event_type.as_str());
        if let Some(correlation) = &event.correlation_id {
            span.record("messaging.message.conversation_id", correlation.as_str());
        }
        if let Some(context) = TraceContext::from_metadata(&event.metadata) {
            span.record("trace_id", context.trace_id_hex().as_str());
        }
    }
    span
}

/// A CLIENT span (at debug level) of a broker operation: `receive`, `ack`, `claim`,
/// `dead_letter`, ….
pub(crate) fn client(system: &'static str, operation: &'static str, destination: &str) -> Span {
    tracing::debug_span!(
        "client",
        otel.name = %format_args!("{operation} {destination}"),
        otel.kind = "client",
        messaging.system = system,
        messaging.operation.name = operation,
        messaging.destination.name = %destination,
    )
}

/// An INTERNAL span of eventbus's own work: a command, a query, a projection's commit, a
/// saga transition, an aggregate append.
pub(crate) fn internal(kind: &'static str, name: &str) -> Span {
    tracing::info_span!(
        "eventbus",
        otel.name = %format_args!("{kind} {name}"),
        otel.kind = "internal",
        eventbus.operation = kind,
        eventbus.name = %name,
        trace_id = Empty,
    )
}

/// The span of one saga transition: on a reply, or on a deadline (`timeout`).
pub(crate) fn saga(saga_id: &str, timeout: bool) -> Span {
    tracing::info_span!(
        "eventbus",
        otel.name = if timeout { "saga timeout" } else { "saga transition" },
        otel.kind = "internal",
        eventbus.operation = "saga",
        eventbus.saga_id = %saga_id,
        eventbus.saga = Empty,
        eventbus.saga.state = Empty,
    )
}
