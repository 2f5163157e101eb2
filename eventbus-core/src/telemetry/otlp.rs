//! OTLP export (feature `otel`): eventbus's spans — and the application's own `tracing`
//! spans — sent to an OpenTelemetry collector (or Jaeger, Tempo, Honeycomb, …) over
//! OTLP/HTTP with protobuf bodies; optionally the [`metrics`] too.
//!
//! [`Otlp::builder`] sets the exporter up; [`Otlp::layer`] is the `tracing_subscriber`
//! layer the application adds to its subscriber, next to its own log output and filter
//! (a library does not install a subscriber behind the application's back); [`Otlp`] is
//! the guard: [`Otlp::shutdown`], or dropping it, flushes what is still buffered.
//!
//! ```no_run
//! use eventbus_core::telemetry::otlp::Otlp;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//!
//! # fn main() -> Result<(), eventbus_core::Error> {
//! let otlp = Otlp::builder()
//!     .endpoint("http://127.0.0.1:4318") // else OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318
//!     .service_name("billing")           // else OTEL_SERVICE_NAME
//!     .install()?;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::EnvFilter::new("info"))
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(otlp.layer())
//!     .init();
//!
//! // … run the service: each publish is a PRODUCER span `publish {stream}`, each handler
//! // call a CONSUMER span `process {stream}` in the trace the event carries …
//!
//! otlp.shutdown()?; // exports what is buffered; blocks up to 5 s
//! # Ok(())
//! # }
//! ```
//!
//! # How spans are exported
//!
//! Through the SDK's batch span processor, which runs on a thread of its own (not on the
//! tokio runtime) and sends a batch every 5 s or every 512 spans, whichever comes first
//! (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_MAX_QUEUE_SIZE`;
//! spans beyond the queue are dropped, never blocking a handler). The HTTP client is
//! reqwest's blocking one, without TLS: send to a local collector (an agent or sidecar),
//! which forwards over TLS. The exporter retries 429, 502, 503 and 504 answers with
//! backoff.
//!
//! [`Otlp::shutdown`] and [`Otlp::force_flush`] block the calling thread until the export
//! thread is done: don't call them on a current-thread tokio runtime whose thread also
//! serves the collector you export to (use `spawn_blocking`).
//!
//! # Configuration from the environment
//!
//! What the builder leaves unset, the standard variables set: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (a base URL; `/v1/traces` and `/v1/metrics` are appended),
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (full
//! URLs), `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,…`, e.g. an API key),
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (ms, default 10 000), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` (`deployment.environment=prod,…`) and
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60 000).
//!
//! # Metrics
//!
//! With [`OtlpBuilder::metrics`], the [`metrics`] facade that eventbus records through is
//! bridged to OpenTelemetry metrics (`metrics-exporter-opentelemetry`) and exported to
//! `/v1/metrics` periodically, with cumulative temporality. The bridge is installed as the
//! process's global `metrics` recorder, so it replaces, rather than adds to, another
//! recorder such as a Prometheus exporter: pick one per process.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::error::{BoxError, Error, Result};

/// The instrumentation scope of the exported spans and metrics.
const SCOPE: &str = "eventbus";

/// The OTLP exporter, installed: makes the `tracing` layer that exports spans, and flushes
/// and shuts the export down when shut down or dropped.
///
/// Keep it alive as long as the application runs (in `main`): dropping it stops the
/// export.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the export down"]
pub struct Otlp {
    tracer_provider: SdkTracerProvider,
    meter_provider: Option<SdkMeterProvider>,
    tracer: SdkTracer,
    shut_down: bool,
}

impl Otlp {
    /// Starts configuring the exporter.
    pub fn builder() -> OtlpBuilder {
        OtlpBuilder::default()
    }

    /// The `tracing_subscriber` layer that turns `tracing` spans into OpenTelemetry spans and
    /// hands them to this exporter; add it to the application's subscriber. Spans the
    /// subscriber's filters disable are not exported (eventbus's are at `info`, its
    /// broker-operation spans at `debug`).
    pub fn layer<S>(&self) -> impl Layer<S> + 'static
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer.clone())
    }

    /// The OpenTelemetry tracer provider behind the layer, for instrumentation that talks to
    /// OpenTelemetry directly (e.g. `opentelemetry::global::set_tracer_provider`).
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// The OpenTelemetry meter provider, when metrics are exported.
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meter_provider.as_ref()
    }

    /// Exports what is buffered now, blocking until the collector answered (or the export
    /// timed out).
    pub fn force_flush(&self) -> Result<()> {
        self.tracer_provider
            .force_flush()
            .map_err(|e| otlp_error("cannot flush spans", e))?;
        if let Some(meters) = &self.meter_provider {
            meters
                .force_flush()
                .map_err(|e| otlp_error("cannot flush metrics", e))?;
        }
        Ok(())
    }

    /// Exports what is buffered and stops exporting (spans that end later are dropped),
    /// blocking up to 5 s for each of spans and metrics.
    pub fn shutdown(mut self) -> Result<()> {
        self.shut_down = true;
        let spans = self
            .tracer_provider
            .shutdown()
            .map_err(|e| otlp_error("cannot shut the span export down", e));
        let metrics = match &self.meter_provider {
            Some(meters) => meters
                .shutdown()
                .map_err(|e| otlp_error("cannot shut the metrics export down", e)),
            None => Ok(()),
        };
        spans.and(metrics)
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        if self.shut_down {
            return;
        }
        if let Err(e) = self.tracer_provider.shutdown() {
            tracing::warn!(error = %e, "OTLP span export: shutdown failed");
        }
        if let Some(meters) = &self.meter_provider {
            if let Err(e) = meters.shutdown() {
                tracing::warn!(error = %e, "OTLP metrics export: shutdown failed");
            }
        }
    }
}

/// Configures [`Otlp`]; what it leaves unset comes from the standard `OTEL_*` environment
/// variables (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct OtlpBuilder {
    endpoint: Option<String>,
    service_name: Option<String>,
    attributes: Vec<(String, String)>,
    headers: HashMap<String, String>,
    timeout: Option<Duration>,
    metrics: bool,
    metrics_interval: Option<Duration>,
}

impl OtlpBuilder {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`: spans go to
    /// `{endpoint}/v1/traces`, metrics to `{endpoint}/v1/metrics`. Unset:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `…_METRICS_ENDPOINT`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4318`. Only `http://` URLs
    /// work (no TLS stack is built in).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The `service.name` resource attribute (usually the name given to the `EventBus`).
    /// Unset: `OTEL_SERVICE_NAME`, else `unknown_service`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Another resource attribute (`service.version`, `deployment.environment.name`, …),
    /// on top of `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// A header sent with every export (an API key, a tenant), on top of
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// How long one export may take. Unset: `OTEL_EXPORTER_OTLP_TIMEOUT`, else 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Also exports the [`metrics`] eventbus (and the application) record, by installing a
    /// bridge from the `metrics` facade to OpenTelemetry as the global `metrics` recorder
    /// ([`install`](Self::install) fails if one is installed already). Off by default.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// How often metrics are exported. Unset: `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s.
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = Some(interval);
        self
    }

    /// Builds the exporters and starts their export threads.
    ///
    /// # Errors
    ///
    /// [`Error::Otlp`] when an endpoint or header is invalid, or, with
    /// [`metrics`](Self::metrics), when a global `metrics` recorder is installed already.
    pub fn install(self) -> Result<Otlp> {
        let resource = self.resource();
        let spans = self
            .http(SpanExporter::builder().with_http(), "/v1/traces")
            .build()
            .map_err(|e| otlp_error("cannot build the span exporter", e))?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(spans)
            .build();
        let tracer = tracer_provider.tracer_with_scope(scope());
        let meter_provider = if self.metrics {
            let exporter = self
                .http(MetricExporter::builder().with_http(), "/v1/metrics")
                .build()
                .map_err(|e| otlp_error("cannot build the metrics exporter", e))?;
            let mut reader = PeriodicReader::builder(exporter);
            if let Some(interval) = self.metrics_interval {
                reader = reader.with_interval(interval);
            }
            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_reader(reader.build())
                .build();
            let meter = opentelemetry::metrics::MeterProvider::meter_with_scope(&provider, scope());
            let recorder = metrics_exporter_opentelemetry::Recorder::with_meter(meter);
            if let Err(e) = metrics::set_global_recorder(recorder) {
                // Nothing was exported yet: the provider's shutdown cannot fail usefully.
                let _ = provider.shutdown();
                return Err(Error::Otlp {
                    reason: format!("cannot install the metrics bridge: {e}"),
                    source: None,
                });
            }
            Some(provider)
        } else {
            None
        };
        Ok(Otlp {
            tracer_provider,
            meter_provider,
            tracer,
            shut_down: false,
        })
    }

    fn resource(&self) -> Resource {
        let mut resource = Resource::builder().with_attributes(
            self.attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
        if let Some(name) = &self.service_name {
            resource = resource.with_service_name(name.clone());
        }
        resource.build()
    }

    /// The settings both exporters share; the endpoint with the signal's path.
    fn http<B: WithExportConfig + WithHttpConfig>(&self, mut builder: B, path: &str) -> B {
        if let Some(base) = &self.endpoint {
            builder = builder.with_endpoint(format!("{}{path}", base.trim_end_matches('/')));
        }
        if let Some(timeout) = self.timeout {
            builder = builder.with_timeout(timeout);
        }
        if !self.headers.is_empty() {
            builder = builder.with_headers(self.headers.clone());
        }
        builder
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn otlp_error(reason: &str, source: impl Into<BoxError>) -> Error {
    Error::Otlp {
        reason: reason.to_owned(),
        source: Some(source.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_endpoint_is_a_typed_error() {
        let err = Otlp::builder()
            .endpoint("http://bad host:4318")
            .install()
            .unwrap_err();
        assert!(matches!(err, Error::Otlp { .. }), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn the_service_name_and_attributes_make_the_resource() {
        let resource = Otlp::builder()
            .service_name("billing")
            .resource_attribute("deployment.environment.name", "test")
            .resource();
        let get = |key: &'static str| resource.get(&opentelemetry::Key::new(key));
        assert_eq!(get("service.name"), Some("billing".into()));
        assert_eq!(get("deployment.environment.name"), Some("test".into()));
    }
}
