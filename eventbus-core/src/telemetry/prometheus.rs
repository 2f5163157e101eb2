//! Prometheus export (feature `prometheus`): every metric recorded through the [`metrics`]
//! facade in this process — eventbus's (names in [`names`](super::names)) and the
//! application's own — served as `GET /metrics` in the Prometheus text exposition format.
//!
//! ```no_run
//! use eventbus_core::telemetry::prometheus;
//!
//! # #[tokio::main] async fn main() -> eventbus_core::Result<()> {
//! // Port 0 picks a free port; `local_addr` says which.
//! let server = prometheus::serve(([0, 0, 0, 0], 9464).into()).await?;
//! println!("scrape http://{}/metrics", server.local_addr());
//! # server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The first call installs eventbus's recorder as the process's `metrics` recorder (the
//! facade takes one per process); later calls, from this module or from
//! [`AppBuilder::metrics_addr`](crate::AppBuilder::metrics_addr), reuse it, so several
//! endpoints of one process serve the same metrics. A process that installed another
//! recorder first gets [`Error::MetricsRecorderTaken`].
//!
//! Histograms named `*_duration_seconds` are exported as Prometheus histograms with the
//! buckets of [`DURATION_BUCKETS`] (100 µs to 10 s); other histograms as summaries. A gauge
//! that nobody sets for [`DEFAULT_GAUGE_IDLE`] (or [`PrometheusExporter::gauge_idle`]) leaves
//! the scrape until it is set again: the group gauges of a stream or group that was deleted
//! don't stay forever.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Bucket upper bounds, in seconds, of every histogram whose name ends in
/// `_duration_seconds`: 100 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How long a gauge that is not set again stays in the scrape, by default: 5 minutes.
pub const DEFAULT_GAUGE_IDLE: Duration = Duration::from_secs(300);

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often the recorder's histograms are drained into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// How long one scrape connection may take, request and response.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// eventbus's recorder, once installed.
static RECORDER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Serves `GET /metrics` on `addr` with the default settings; see [`PrometheusExporter`].
///
/// # Errors
///
/// [`Error::MetricsRecorderTaken`] when another recorder is installed;
/// [`Error::MetricsListen`] when `addr` cannot be bound.
pub async fn serve(addr: SocketAddr) -> Result<MetricsServer> {
    PrometheusExporter::new(addr).serve().await
}

/// A `/metrics` endpoint to start: where it listens, and how the recorder treats gauges.
#[derive(Debug, Clone)]
pub struct PrometheusExporter {
    addr: SocketAddr,
    gauge_idle: Duration,
}

impl PrometheusExporter {
    /// An endpoint on `addr` (port 0: a free port, see [`MetricsServer::local_addr`]).
    pub fn new(addr: impl Into<SocketAddr>) -> Self {
        PrometheusExporter {
            addr: addr.into(),
            gauge_idle: DEFAULT_GAUGE_IDLE,
        }
    }

    /// How long a gauge not set again stays in the scrape ([`DEFAULT_GAUGE_IDLE`] by
    /// default); keep it well above the interval of whatever sets the gauges (a
    /// [`LagSampler`](super::lag::LagSampler)). Applies when this call installs the recorder;
    /// a recorder already installed keeps its setting.
    pub fn gauge_idle(mut self, idle: Duration) -> Self {
        self.gauge_idle = idle;
        self
    }

    /// Installs the recorder unless it is, binds the address and serves the endpoint on a
    /// task of the current runtime until the returned server is shut down or dropped.
    ///
    /// # Errors
    ///
    /// [`Error::MetricsRecorderTaken`] when another recorder is installed;
    /// [`Error::MetricsListen`] when the address cannot be bound.
    pub async fn serve(self) -> Result<MetricsServer> {
        let handle = recorder(self.gauge_idle)?;
        let listen_error = |source| Error::MetricsListen {
            addr: self.addr,
            source,
        };
        let listener = TcpListener::bind(self.addr).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, handle.clone(), stop.clone()));
        tracing::debug!(addr = %local_addr, "serving metrics");
        Ok(MetricsServer {
            local_addr,
            handle,
            stop,
            task: Some(task),
        })
    }
}

/// A running `/metrics` endpoint. Stops when [shut down](Self::shutdown) or dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    handle: PrometheusHandle,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (with the port picked when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What a scrape returns now.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Stops listening and answering, and waits until it has.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // The loop ends when told to; a panic in it has nothing to hand back.
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// eventbus's recorder: installed by the first call, the same one after.
fn recorder(gauge_idle: Duration) -> Result<PrometheusHandle> {
    let mut installed = RECORDER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            DURATION_BUCKETS,
        )
        .map_err(|e| Error::Config(format!("Prometheus buckets: {e}")))?
        .idle_timeout(MetricKindMask::GAUGE, Some(gauge_idle))
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| Error::MetricsRecorderTaken)?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Accepts scrapes until `stop`, each answered on a task of its own (aborted at `stop`),
/// and drains the histograms every [`UPKEEP`].
async fn accept(listener: TcpListener, handle: PrometheusHandle, stop: CancellationToken) {
    let mut upkeep = tokio::time::interval(UPKEEP);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            () = stop.cancelled() => break,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    connections.spawn(async move {
                        let answered = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &handle)).await;
                        if let Ok(Err(e)) = answered {
                            tracing::debug!(error = %e, "metrics scrape failed");
                        }
                    });
                }
                // Out of file descriptors, or a connection reset before it was accepted:
                // carry on after a pause rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Reads one request's head and writes the response, then closes the connection.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !complete(&head) && head.len() <= MAX_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let response = respond(&head, || handle.render());
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Whether `head` holds a whole request head (up to its blank line).
fn complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The response to a request whose head is `head`: the metrics (`render`) for `GET` or
/// `HEAD /metrics`, an error status otherwise.
fn respond(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response("400 Bad Request", "text/plain", "bad request\n", &[], true);
    };
    if !version.starts_with("HTTP/1.") || !complete(head) {
        return response("400 Bad Request", "text/plain", "bad request\n", &[], true);
    }
    let path = target.split('?').next().unwrap_or_default();
    let with_body = method != "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => response("200 OK", CONTENT_TYPE, &render(), &[], with_body),
        (_, "/metrics") => response(
            "405 Method Not Allowed",
            "text/plain",
            "use GET\n",
            &[("Allow", "GET, HEAD")],
            with_body,
        ),
        _ => response(
            "404 Not Found",
            "text/plain",
            "not found: the metrics are at /metrics\n",
            &[],
            with_body,
        ),
    }
}

/// An HTTP/1.1 response that closes the connection.
fn response(
    status: &str,
    content_type: &str,
    body: &str,
    headers: &[(&str, &str)],
    with_body: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if with_body {
        out.push_str(body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn text(head: &str) -> String {
        String::from_utf8(respond(head.as_bytes(), || "m 1\n".to_owned())).unwrap()
    }

    #[test]
    fn get_metrics_renders_the_exposition_text() {
        let out = text("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{out}"
        );
        assert!(out.contains("Content-Length: 4\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nm 1\n"), "{out}");
        // A query string is ignored; HEAD has the headers only.
        assert!(text("GET /metrics?x=1 HTTP/1.0\n\n").starts_with("HTTP/1.1 200 OK"));
        let head = text("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.contains("Content-Length: 4") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn other_requests_get_an_error_status_and_never_render() {
        let never = || -> String { unreachable!("rendered") };
        let status = |head: &str| {
            let out = String::from_utf8(respond(head.as_bytes(), never)).unwrap();
            out.lines().next().unwrap().to_owned()
        };
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(status("nonsense\r\n\r\n"), "HTTP/1.1 400 Bad Request");
        assert_eq!(status(""), "HTTP/1.1 400 Bad Request");
        assert_eq!(
            status("GET /metrics SPDY/3\r\n\r\n"),
            "HTTP/1.1 400 Bad Request"
        );
        // Cut off before the blank line.
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\n"),
            "HTTP/1.1 400 Bad Request"
        );
    }
}
