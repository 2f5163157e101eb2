//! The spans of a real flow, exported over OTLP/HTTP to a receiver in this test: an event
//! published, its handler publishing a second event, that one handled; and eventbus's
//! metrics, bridged from the `metrics` facade. The receiver is a small HTTP/1.1 server on
//! std threads that decodes `ExportTraceServiceRequest`s and `ExportMetricsServiceRequest`s.
//!
//! Runs with the `otel` feature (`cargo test --workspace` turns it on through the `tests`
//! crate; alone: `cargo test -p eventbus-core --features otel --test otlp`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventbus_core::telemetry::otlp::Otlp;
use eventbus_core::telemetry::TraceContext;
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::{event, Envelope, EventBus, HandlerError, Metadata};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
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

/// Published by the metrics test alone, so that the other test's events don't add to its
/// counts (the `metrics` recorder is global to the process).
#[event(name = "PaymentReceived")]
#[derive(Debug, Clone)]
struct PaymentReceived {
    order_id: String,
}

/// One export the receiver got.
struct Export {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// An OTLP/HTTP receiver: answers every `POST` with an empty `ExportTraceServiceResponse`
/// and hands the decoded requests over.
struct Receiver {
    url: String,
    exports: mpsc::Receiver<Export>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("receiver address")
        );
        let (tx, exports) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                std::thread::spawn(move || serve(stream, &tx));
            }
        });
        Receiver { url, exports }
    }

    /// The next export to `path` within 10 s, its body decoded (OTLP/HTTP with protobuf).
    fn next<M: prost::Message + Default>(&self, path: &str) -> M {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let export = self
                .exports
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no export to {path} within 10 s"));
            if export.path == path {
                assert_eq!(export.content_type, "application/x-protobuf");
                return M::decode(export.body.as_slice()).expect("a protobuf body");
            }
        }
    }

    /// The spans received until `done` says they are all there (or 10 s passed).
    fn spans_until(
        &self,
        done: impl Fn(&[(Span, Vec<KeyValue>)]) -> bool,
    ) -> Vec<(Span, Vec<KeyValue>)> {
        let mut spans = Vec::new();
        while !done(&spans) {
            let request: ExportTraceServiceRequest = self.next("/v1/traces");
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
}

/// Serves one connection (HTTP/1.1, kept alive): each request's body decoded and sent.
fn serve(stream: TcpStream, tx: &mpsc::Sender<Export>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = tx.send(Export {
            path,
            content_type,
            body,
        });
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
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
    let spans = receiver.spans_until(|spans| names.iter().all(|n| find(spans, n).is_some()));
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

#[tokio::test]
async fn eventbus_metrics_reach_the_receiver_through_the_metrics_bridge() {
    let receiver = Receiver::start();
    let otlp = Otlp::builder()
        .endpoint(&receiver.url)
        .service_name("otlp-metrics-test")
        .metrics(true)
        .install()
        .expect("install the exporter with metrics");
    let bus = EventBus::new(MemoryTransport::new(), "billing");
    for n in 0..3 {
        bus.publish(PaymentReceived {
            order_id: format!("ord_{n}"),
        })
        .await
        .expect("publish");
    }
    otlp.force_flush().expect("flush the metrics");

    let request: ExportMetricsServiceRequest = receiver.next("/v1/metrics");
    let [resource_metrics] = request.resource_metrics.as_slice() else {
        panic!("one resource expected: {request:#?}")
    };
    let resource = resource_metrics.resource.clone().unwrap_or_default();
    assert_eq!(
        attribute(&resource.attributes, "service.name"),
        Some("otlp-metrics-test")
    );
    let sent = resource_metrics
        .scope_metrics
        .iter()
        .flat_map(|scope| &scope.metrics)
        .find(|m| m.name == "messaging_client_sent_messages_total")
        .unwrap_or_else(|| panic!("no sent-messages counter in {request:#?}"));
    let Some(metric::Data::Sum(sum)) = &sent.data else {
        panic!("the sent-messages counter is not a sum: {sent:#?}")
    };
    assert!(sum.is_monotonic);
    let point = sum
        .data_points
        .iter()
        .find(|p| attribute(&p.attributes, "messaging_destination_name") == Some("PaymentReceived"))
        .unwrap_or_else(|| panic!("no PaymentReceived series in {sum:#?}"));
    assert_eq!(
        point.value,
        Some(number_data_point::Value::AsInt(3)),
        "three events published"
    );
    assert_eq!(
        attribute(&point.attributes, "messaging_system"),
        Some("memory")
    );
    otlp.shutdown().expect("shut the exporter down");
}
