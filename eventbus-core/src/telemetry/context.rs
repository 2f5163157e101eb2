//! W3C trace context (`traceparent`, `tracestate`) carried in an event's metadata, so that
//! one business flow is one trace across services.
//!
//! Publishing writes the current context into the event's metadata (a child of it: the
//! publish); a consumer's handler runs in the context the event carries (again a child:
//! the processing), so what a handler, a command or a saga step publishes continues the
//! same trace. Outside any of these a publish starts a new trace. With the `otel` feature,
//! the current OpenTelemetry span's context comes first, so traces started by an
//! instrumented HTTP server continue through the bus.
//!
//! The keys are plain metadata entries, which the reference article's Python services keep
//! as they are.

use std::future::Future;

use serde_json::Value;

use crate::envelope::Metadata;

/// The metadata key of the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The metadata key of the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A W3C trace context: trace id, parent span id, flags and vendor state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    state: Option<String>,
}

impl TraceContext {
    /// A new trace (random ids, sampled).
    pub fn new_root() -> Self {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        TraceContext {
            trace_id: bytes,
            span_id: new_span_id(),
            flags: 1,
            state: None,
        }
    }

    /// A context from its parts; `None` when an id is all zeros (invalid per W3C).
    pub fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
            state: None,
        })
    }

    /// The same trace, with a new span id: a child of this one.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: new_span_id(),
            ..self.clone()
        }
    }

    /// With a `tracestate`.
    pub fn with_state(mut self, state: Option<String>) -> Self {
        self.state = state.filter(|s| !s.is_empty());
        self
    }

    /// Parses a `traceparent` (`00-{32 hex}-{16 hex}-{2 hex}`; a later version's first four
    /// fields are read as version 00's, as the recommendation says) and an optional
    /// `tracestate`. `None` when malformed.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || !is_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let [flags]: [u8; 1] = hex_bytes(flags)?;
        Some(
            TraceContext::from_parts(trace_id, span_id, flags)?
                .with_state(tracestate.map(str::to_owned)),
        )
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }

    /// The `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id, 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The trace id's bytes.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id's bytes.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The context an event carries, if any (and well-formed).
    pub fn from_metadata(metadata: &Metadata) -> Option<Self> {
        let parent = metadata.get(TRACEPARENT)?.as_str()?;
        let state = metadata.get(TRACESTATE).and_then(Value::as_str);
        TraceContext::parse(parent, state)
    }

    /// Writes this context into an event's metadata.
    pub fn inject(&self, metadata: &mut Metadata) {
        metadata.insert(TRACEPARENT.into(), Value::String(self.traceparent()));
        match &self.state {
            Some(state) => {
                metadata.insert(TRACESTATE.into(), Value::String(state.clone()));
            }
            None => {
                metadata.remove(TRACESTATE);
            }
        }
    }
}

/// The current trace context: the OpenTelemetry span's (with the `otel` feature), else the
/// one eventbus runs a handler, command or saga step in; `None` outside of both.
pub fn current() -> Option<TraceContext> {
    #[cfg(feature = "otel")]
    if let Some(context) = super::otel::current() {
        return Some(context);
    }
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `f` in the trace context `context` (see [`current`]).
pub async fn scope<F: Future>(context: TraceContext, f: F) -> F::Output {
    CURRENT.scope(context, f).await
}

/// Stamps an event about to be published with the context of its publish, unless it carries
/// one already (a replay, or an event published on behalf of another service); returns the
/// context it carries.
///
/// The context of the publish is the current OpenTelemetry span's as it is (with the `otel`
/// feature; eventbus stamps inside its PRODUCER span, so consumers' spans become children
/// of that exported span), else a child of the context eventbus runs a handler, command or
/// saga step in, else a new trace.
pub fn stamp(metadata: &mut Metadata) -> TraceContext {
    if let Some(existing) = TraceContext::from_metadata(metadata) {
        return existing;
    }
    let context = of_publish();
    context.inject(metadata);
    context
}

/// Stamps the events of one publish (one PRODUCER span) with the context of that publish,
/// computed once and shared by every event that carries none (see [`stamp`]).
pub(crate) fn stamp_all<'a>(metadata: impl IntoIterator<Item = &'a mut Metadata>) {
    let mut shared: Option<(Value, Option<Value>)> = None;
    for m in metadata {
        if TraceContext::from_metadata(m).is_some() {
            continue;
        }
        let (parent, state) = shared.get_or_insert_with(|| {
            let context = of_publish();
            (
                Value::String(context.traceparent()),
                context.state.map(Value::String),
            )
        });
        m.insert(TRACEPARENT.into(), parent.clone());
        match state {
            Some(state) => {
                m.insert(TRACESTATE.into(), state.clone());
            }
            None => {
                m.remove(TRACESTATE);
            }
        }
    }
}

fn of_publish() -> TraceContext {
    #[cfg(feature = "otel")]
    if let Some(span) = super::otel::current() {
        return span;
    }
    CURRENT
        .try_with(TraceContext::child)
        .unwrap_or_else(|_| TraceContext::new_root())
}

fn new_span_id() -> [u8; 8] {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(tp, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(c.traceparent(), tp);
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.tracestate(), Some("congo=t61rcWkgMzE"));
        let child = c.child();
        assert_eq!(child.trace_id(), c.trace_id());
        assert_ne!(child.span_id(), c.span_id());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
        // A later version: its first four fields, read as version 00's.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceContext::parse(later, None).is_some());
    }

    #[tokio::test]
    async fn a_publish_continues_the_current_trace_or_starts_one() {
        let mut outside = Metadata::new();
        let root = stamp(&mut outside);
        assert_eq!(TraceContext::from_metadata(&outside), Some(root.clone()));
        let handled = root.child();
        let inside = scope(handled.clone(), async {
            let mut m = Metadata::new();
            stamp(&mut m)
        })
        .await;
        assert_eq!(inside.trace_id(), root.trace_id());
        assert_ne!(inside.span_id(), handled.span_id());
        // An event that carries a context keeps it.
        let mut carried = outside.clone();
        assert_eq!(stamp(&mut carried), root);
    }
}
