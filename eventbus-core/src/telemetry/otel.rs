//! The OpenTelemetry bridge (feature `otel`): the current OpenTelemetry span's context as a
//! [`TraceContext`], and a span's parent set from the context an event carries.

use super::context::TraceContext;

/// The current OpenTelemetry span's context, when there is a valid one.
pub(crate) fn current() -> Option<TraceContext> {
    None
}

/// Makes `parent` (the context an event carries) the OpenTelemetry parent of `span`.
pub(crate) fn set_parent(_span: &tracing::Span, _parent: Option<&TraceContext>) {}
