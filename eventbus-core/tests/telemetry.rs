//! Spans, their fields and the trace context, captured with a test subscriber layer: a
//! publish is a PRODUCER span, a handler call a CONSUMER span holding the handler's own
//! events, a panic is logged once inside it, and what a handler publishes continues the
//! trace of the event it handles.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::telemetry::TraceContext;
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::{Context, Envelope, Event, EventBus, HandlerError};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl Event for Ping {
    const EVENT_TYPE: &'static str = "Tel.Ping";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pong {
    n: u32,
}
impl Event for Pong {
    const EVENT_TYPE: &'static str = "Tel.Pong";
    const VERSION: u32 = 1;
}

/// A span as the layer saw it.
#[derive(Debug, Clone, Default)]
struct SeenSpan {
    name: String,
    fields: BTreeMap<String, String>,
    parent: Option<u64>,
}

/// An event as the layer saw it, with the span it was recorded in.
#[derive(Debug, Clone, Default)]
struct SeenEvent {
    level: String,
    fields: BTreeMap<String, String>,
    span: Option<u64>,
}

#[derive(Default)]
struct Captured {
    spans: BTreeMap<u64, SeenSpan>,
    events: Vec<SeenEvent>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut span = SeenSpan {
            name: attrs.metadata().name().to_owned(),
            ..SeenSpan::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        span.parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        self.0.lock().unwrap().spans.insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: LayerContext<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().spans.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        let mut seen = SeenEvent {
            level: event.metadata().level().to_string(),
            ..SeenEvent::default()
        };
        event.record(&mut Fields(&mut seen.fields));
        seen.span = ctx.event_span(event).map(|s| s.id().into_u64());
        self.0.lock().unwrap().events.push(seen);
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn spans_carry_the_messaging_fields_and_the_trace_continues_through_a_handler() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let transport = MemoryTransport::new();
    let bus = EventBus::new(transport.clone(), "tel");
    let pongs: Arc<Mutex<Vec<Envelope<Pong>>>> = Arc::default();
    let sub = bus
        .subscribe()
        .max_deliveries(1)
        .on(|e: Envelope<Ping>, ctx: Context| async move {
            tracing::info!(marker = "inside", "handler ran");
            if e.data.n == 13 {
                panic!("unlucky {}", e.data.n);
            }
            ctx.publish(Pong { n: e.data.n }).await?;
            Ok::<(), HandlerError>(())
        })
        .start()
        .await
        .unwrap();
    let seen = pongs.clone();
    let pong_sub = bus
        .subscribe()
        .group("pongs")
        .on(move |e: Envelope<Pong>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(e);
                Ok::<(), HandlerError>(())
            }
        })
        .start()
        .await
        .unwrap();

    let ping = bus.envelope(Ping { n: 1 }).with_correlation_id("flow-1");
    let ping_id = ping.event_id.clone();
    bus.publish_envelope(ping).await.unwrap();
    bus.publish(Ping { n: 13 }).await.unwrap();
    wait_for("the pong", || !pongs.lock().unwrap().is_empty()).await;
    wait_for("the dead letter", || sub.stats().dead_lettered() == 1).await;
    sub.shutdown().await.unwrap();
    pong_sub.shutdown().await.unwrap();

    let captured = capture.0.lock().unwrap();
    let spans = &captured.spans;
    let process = |message_id: &str| {
        spans
            .iter()
            .find(|(_, s)| {
                s.name == "process"
                    && s.fields.get("messaging.message.id").map(String::as_str) == Some(message_id)
            })
            .map(|(id, s)| (*id, s.clone()))
            .unwrap_or_else(|| panic!("no process span of {message_id}: {spans:#?}"))
    };

    // The PRODUCER span of the ping's publish.
    let publish = spans
        .values()
        .find(|s| s.name == "publish" && s.fields.get("messaging.message.id") == Some(&ping_id))
        .expect("a publish span");
    assert_eq!(publish.fields["otel.kind"], "producer");
    assert_eq!(publish.fields["messaging.system"], "memory");
    assert_eq!(publish.fields["messaging.destination.name"], "Tel.Ping");
    assert_eq!(
        publish.fields["messaging.message.conversation_id"],
        "flow-1"
    );

    // The CONSUMER span of its handling, with every field.
    let (process_id, span) = process(&ping_id);
    for (field, value) in [
        ("otel.kind", "consumer"),
        ("otel.name", "process Tel.Ping"),
        ("messaging.system", "memory"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "Tel.Ping"),
        ("messaging.consumer.group.name", "tel-consumers"),
        ("messaging.message.conversation_id", "flow-1"),
        ("eventbus.event_type", "Tel.Ping"),
        ("eventbus.delivery_count", "1"),
    ] {
        assert_eq!(
            span.fields.get(field).map(String::as_str),
            Some(value),
            "{field}: {span:#?}"
        );
    }
    assert!(span.fields.contains_key("eventbus.entry_id"));
    assert!(span.fields.contains_key("eventbus.consumer"));

    // The handler's own event is recorded inside it.
    let inside = captured.events.iter().find(|e| {
        e.fields.get("marker").map(String::as_str) == Some("inside") && e.span == Some(process_id)
    });
    assert!(inside.is_some(), "the handler's event in its span");

    // The pong continues the ping's trace: same trace id, and the CONSUMER span's.
    let pong = pongs.lock().unwrap()[0].clone();
    let pong_trace = TraceContext::from_metadata(&pong.metadata).expect("the pong's traceparent");
    let ping_trace = span.fields["trace_id"].clone();
    assert_eq!(pong_trace.trace_id_hex(), ping_trace);
    let (_, pong_span) = process(&pong.event_id);
    assert_eq!(pong_span.fields["trace_id"], ping_trace);

    // The panic: logged once, as an error with its message and location, in its span.
    let panics: Vec<&SeenEvent> = captured
        .events
        .iter()
        .filter(|e| e.fields.contains_key("panic.message"))
        .collect();
    assert_eq!(panics.len(), 1, "{panics:#?}");
    let panic = panics[0];
    assert_eq!(panic.level, "ERROR");
    assert_eq!(panic.fields["panic.message"], "unlucky 13");
    assert!(
        panic.fields["panic.location"].contains("telemetry.rs"),
        "{panic:?}"
    );
    let panic_span = &spans[&panic.span.expect("in a span")];
    assert_eq!(panic_span.name, "process");
}
