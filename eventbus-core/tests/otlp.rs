//! The spans of a real flow, exported over OTLP/HTTP to a receiver in this test: an event
//! published, its handler publishing a second event, that one handled.
//!
//! Runs with the `otel` feature (`cargo test --workspace` turns it on through the `tests`
//! crate; alone: `cargo test -p eventbus-core --features otel --test otlp`). The metrics
//! export is tested in `otlp_metrics.rs`, a process of its own: a test publishing on
//! another thread meanwhile can leave `tracing`'s callsite cache disabled for the spans
//! of this one, whose subscriber is the thread's default.

mod otlp_support;

use std::time::Duration;

use eventbus_core::telemetry::otlp::Otlp;
use eventbus_core::telemetry::TraceContext;
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::{event, Envelope, EventBus, HandlerError, Metadata};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp_support::{attribute, Receiver};
use tracing_subscriber::layer::SubscriberExt as _;

#[event(name = "OrderPlaced")]
#[derive(Debug, Clone)]
struct OrderPlaced {
    order_id: String,
}

#[event(name = "InvoiceRequested")]
#[derive(Debug, Clone)]
struct InvoiceRequested {
    order_id: String,
}

/// The spans received until `done` says they are all there (or 10 s passed).
fn spans_until(
    receiver: &Receiver,
    done: impl Fn(&[(Span, Vec<KeyValue>)]) -> bool,
) -> Vec<(Span, Vec<KeyValue>)> {
    let mut spans = Vec::new();
    while !done(&spans) {
        let request: ExportTraceServiceRequest = receiver.next("/v1/traces");
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default().attributes;
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans.scope.unwrap_or_default();
                assert_eq!(scope.name, "eventbus");
                for span in scope_spans.spans {
                    spans.push((span, resource.clone()));
                }
            }
        }
    }
    spans
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn find<'a>(spans: &'a [(Span, Vec<KeyValue>)], name: &str) -> Option<&'a Span> {
    spans.iter().map(|(s, _)| s).find(|s| s.name == name)
}

fn traceparent(metadata: &Metadata) -> TraceContext {
    TraceContext::from_metadata(metadata).expect("the event carries a traceparent")
}

#[tokio::test]
async fn a_flow_s_producer_and_consumer_spans_reach_an_otlp_receiver_in_the_events_trace() {
    let receiver = Receiver::start();
    let otlp = Otlp::builder()
        .endpoint(&receiver.url)
        .service_name("otlp-test")
        .install()
        .expect("install the exporter");
    // This test's runtime runs every task on this thread: a thread default is enough.
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(otlp.layer()));

    let bus = EventBus::new(MemoryTransport::new(), "billing");
    let (placed_tx, mut placed) = tokio::sync::mpsc::unbounded_channel();
    let (invoice_tx, mut invoices) = tokio::sync::mpsc::unbounded_channel();
    let publisher = bus.clone();
    let orders = bus
        .subscribe()
        .on(move |event: Envelope<OrderPlaced>| {
            let (bus, tx) = (publisher.clone(), placed_tx.clone());
            async move {
                bus.publish(InvoiceRequested {
                    order_id: event.data.order_id.clone(),
                })
                .await?;
                tx.send(event.metadata).map_err(HandlerError::from)?;
                Ok(())
            }
        })
        .start()
        .await
        .expect("start the OrderPlaced subscription");
    let billing = bus
        .subscribe()
        .on(move |event: Envelope<InvoiceRequested>| {
            let tx = invoice_tx.clone();
            async move {
                tx.send((event.data.order_id, event.metadata))
                    .map_err(HandlerError::from)?;
                Ok(())
            }
        })
        .start()
        .await
        .expect("start the InvoiceRequested subscription");

    bus.publish(OrderPlaced {
        order_id: "ord_1".into(),
    })
    .await
    .expect("publish");
    let wait = Duration::from_secs(10);
    let first = tokio::time::timeout(wait, placed.recv())
        .await
        .expect("OrderPlaced handled in time")
        .expect("OrderPlaced handled");
    let (order_id, second) = tokio::time::timeout(wait, invoices.recv())
        .await
        .expect("InvoiceRequested handled in time")
        .expect("InvoiceRequested handled");
    assert_eq!(order_id, "ord_1");
    // Every handler returned, so every span has ended: flush them to the receiver.
    orders.shutdown().await.expect("stop OrderPlaced");
    billing.shutdown().await.expect("stop InvoiceRequested");
    otlp.force_flush().expect("flush the spans");

    let names = [
        "publish OrderPlaced",
        "process OrderPlaced",
        "publish InvoiceRequested",
        "process InvoiceRequested",
    ];
    let spans = spans_until(&receiver, |spans| {
        names.iter().all(|n| find(spans, n).is_some())
    });
    let span = |name: &str| find(&spans, name).expect("span received");
    let (publish1, process1) = (span(names[0]), span(names[1]));
    let (publish2, process2) = (span(names[2]), span(names[3]));
    for (span, kind) in [
        (publish1, SpanKind::Producer),
        (process1, SpanKind::Consumer),
        (publish2, SpanKind::Producer),
        (process2, SpanKind::Consumer),
    ] {
        assert_eq!(span.kind(), kind, "{}", span.name);
    }
    for (_, resource) in &spans {
        assert_eq!(attribute(resource, "service.name"), Some("otlp-test"));
    }

    // The first event's traceparent is its PRODUCER span; the CONSUMER span is in that
    // trace, child of the publish.
    let first = traceparent(&first);
    assert_eq!(hex(&publish1.trace_id), first.trace_id_hex());
    assert_eq!(hex(&publish1.span_id), first.span_id_hex());
    assert!(
        publish1.parent_span_id.is_empty(),
        "a publish outside any span starts the trace"
    );
    assert_eq!(hex(&process1.trace_id), first.trace_id_hex());
    assert_eq!(hex(&process1.parent_span_id), first.span_id_hex());
    assert_eq!(
        attribute(&process1.attributes, "messaging.destination.name"),
        Some("OrderPlaced")
    );
    assert_eq!(
        attribute(&process1.attributes, "messaging.consumer.group.name"),
        Some("billing-consumers")
    );

    // What the handler published continues the trace: its publish is a child of the
    // handler's CONSUMER span, and its handler's span a child of that publish.
    let second = traceparent(&second);
    assert_eq!(second.trace_id(), first.trace_id());
    assert_eq!(hex(&publish2.trace_id), first.trace_id_hex());
    assert_eq!(hex(&publish2.parent_span_id), hex(&process1.span_id));
    assert_eq!(hex(&publish2.span_id), second.span_id_hex());
    assert_eq!(hex(&process2.trace_id), first.trace_id_hex());
    assert_eq!(hex(&process2.parent_span_id), second.span_id_hex());

    otlp.shutdown().expect("shut the exporter down");
}
