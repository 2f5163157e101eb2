//! The OpenTelemetry bridge (feature `otel`): the current OpenTelemetry span's context as a
//! [`TraceContext`], and a span's parent set from the context an event carries.
//!
//! Both go through `tracing-opentelemetry`'s [`OpenTelemetrySpanExt`]: without its layer in
//! the application's subscriber (see [`super::otlp`]) a span has no OpenTelemetry context,
//! [`current`] answers `None` and eventbus falls back to its own trace context, so the
//! feature on its own changes nothing.

use std::str::FromStr as _;

use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::context::TraceContext;

/// The current OpenTelemetry span's context, when there is a valid one.
pub(crate) fn current() -> Option<TraceContext> {
    of(&tracing::Span::current())
}

/// The OpenTelemetry context of `span`, when it has a valid one (the layer is installed and
/// the span is enabled).
pub(crate) fn of(span: &tracing::Span) -> Option<TraceContext> {
    let context = span.context();
    let otel_span = context.span();
    from_span_context(otel_span.span_context())
}

/// Makes `parent` (the context an event carries) the OpenTelemetry parent of `span`, a
/// freshly created span; without one, `span` starts a new trace rather than hanging under
/// whatever span happens to be current (an event that carries no context starts a trace,
/// as it does without the feature).
pub(crate) fn set_parent(span: &tracing::Span, parent: Option<&TraceContext>) {
    let context = match parent {
        Some(parent) => {
            opentelemetry::Context::new().with_remote_span_context(to_span_context(parent))
        }
        None => opentelemetry::Context::new(),
    };
    // Fails only without the layer or for a disabled span: then there is nothing to parent.
    let _ = span.set_parent(context);
}

/// Marks `span` failed, with `message` as the status description.
pub(crate) fn set_error(span: &tracing::Span, message: String) {
    span.set_status(Status::error(message));
}

fn from_span_context(context: &SpanContext) -> Option<TraceContext> {
    if !context.is_valid() {
        return None;
    }
    let state = context.trace_state().header();
    TraceContext::from_parts(
        context.trace_id().to_bytes(),
        context.span_id().to_bytes(),
        context.trace_flags().to_u8(),
    )
    .map(|c| c.with_state(Some(state)))
}

fn to_span_context(context: &TraceContext) -> SpanContext {
    // A `tracestate` OpenTelemetry cannot parse is dropped, as W3C says a malformed one is.
    let state = context
        .tracestate()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(context.trace_id()),
        SpanId::from_bytes(context.span_id()),
        TraceFlags::new(context.flags()),
        true,
        state,
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn span_contexts_convert_both_ways() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ours = TraceContext::parse(tp, Some("congo=t61rcWkgMzE")).unwrap();
        let theirs = to_span_context(&ours);
        assert!(theirs.is_remote() && theirs.is_sampled());
        assert_eq!(
            format!("{:032x}", theirs.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(from_span_context(&theirs), Some(ours));
        assert_eq!(from_span_context(&SpanContext::empty_context()), None);
    }

    #[test]
    fn without_the_layer_there_is_no_opentelemetry_context() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("process");
            set_parent(&span, Some(&TraceContext::new_root()));
            let _entered = span.enter();
            assert_eq!(current(), None);
        });
    }

    #[test]
    fn a_span_continues_the_parent_it_is_given_and_is_the_current_context() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let parent = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        )
        .unwrap();
        let inside = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("process");
            set_parent(&span, Some(&parent));
            set_error(&span, "boom".into());
            let inside = span.in_scope(current).unwrap();
            assert_eq!(of(&span), Some(inside.clone()));
            inside
        });
        assert_eq!(inside.trace_id(), parent.trace_id());
        assert_ne!(inside.span_id(), parent.span_id());
        let spans = exporter.get_finished_spans().unwrap();
        let [span] = spans.as_slice() else {
            panic!("one span expected, got {spans:?}")
        };
        assert_eq!(span.span_context.span_id().to_bytes(), inside.span_id());
        assert_eq!(span.parent_span_id.to_bytes(), parent.span_id());
        assert!(span.parent_span_is_remote);
        assert_eq!(span.status, Status::error("boom"));
    }
}
