//! eventbus's metrics, bridged from the `metrics` facade to OpenTelemetry and exported
//! over OTLP/HTTP to a receiver in this test.
//!
//! Runs with the `otel` feature (`cargo test --workspace` turns it on through the `tests`
//! crate; alone: `cargo test -p eventbus-core --features otel --test otlp_metrics`).

mod otlp_support;

use eventbus_core::telemetry::otlp::Otlp;
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::{event, EventBus};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use otlp_support::{attribute, Receiver};

#[event(name = "PaymentReceived")]
#[derive(Debug, Clone)]
struct PaymentReceived {
    order_id: String,
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
