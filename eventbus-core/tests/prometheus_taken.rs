//! A process whose `metrics` recorder is not eventbus's: serving the Prometheus endpoint is
//! a typed error, not a panic (a process of its own: the recorder is process-wide).

#![cfg(feature = "prometheus")]
#![allow(clippy::unwrap_used)] // Tests fail loudly.

use eventbus_core::telemetry::prometheus;
use eventbus_core::{App, Error};

#[tokio::test]
async fn another_recorder_installed_first_is_a_typed_error() {
    metrics::set_global_recorder(metrics::NoopRecorder).unwrap();
    let refused = prometheus::serve(([127, 0, 0, 1], 0).into()).await;
    assert!(
        matches!(refused, Err(Error::MetricsRecorderTaken)),
        "{refused:?}"
    );
    assert!(!refused.unwrap_err().is_retryable());
    let app = App::builder("svc")
        .in_memory()
        .metrics_addr(([127, 0, 0, 1], 0))
        .start()
        .await;
    assert!(matches!(app, Err(Error::MetricsRecorderTaken)), "{app:?}");
}
