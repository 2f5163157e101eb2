//! [`LagSampler`]: the consumer groups' lag, pending entries and oldest pending idle time,
//! sampled from the backend ([`StreamAdmin::lag`](crate::transport::StreamAdmin::lag)) every interval into the group gauges
//! ([`GROUP_LAG`](super::names::GROUP_LAG), [`GROUP_PENDING`](super::names::GROUP_PENDING),
//! [`GROUP_OLDEST_PENDING`](super::names::GROUP_OLDEST_PENDING)).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use eventbus_core::telemetry::lag::LagSampler;
//! use eventbus_core::transport::memory::MemoryTransport;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
//! let transport = Arc::new(MemoryTransport::new());
//! let running = LagSampler::new(transport)
//!     .groups(["billing-consumers"]) // every group of the namespace without it
//!     .every(Duration::from_secs(15))
//!     .start();
//! // … the gauges follow the groups until:
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Every row of [`StreamAdmin::lag`](crate::transport::StreamAdmin::lag) is one series: the stream (as
//! [`StreamTransport::destination`] names it), the partition (empty for an unpartitioned
//! stream) and the group. A series that is gone from one sample to the next (its group or
//! stream deleted) is set to 0 once and then left alone, so that an exporter forgetting
//! idle gauges (as the Prometheus one does) drops it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::transport::{GroupLag, StreamTransport};

use super::metrics::group_health;

/// The interval of a sampler not told otherwise: 15 s, a common scrape interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// The shortest interval a sampler takes (a shorter one is raised to it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One series of the group gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    stream: String,
    partition: Option<u32>,
    group: String,
}

/// Samples the groups' health into the group gauges; see the [module docs](self).
pub struct LagSampler {
    transport: Arc<dyn StreamTransport>,
    interval: Duration,
    groups: Option<BTreeSet<String>>,
    seen: HashSet<Series>,
}

impl std::fmt::Debug for LagSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagSampler")
            .field("transport", &self.transport.describe())
            .field("interval", &self.interval)
            .field("groups", &self.groups)
            .finish()
    }
}

impl LagSampler {
    /// A sampler of every group of every stream of `transport`, every
    /// [`DEFAULT_INTERVAL`].
    pub fn new(transport: Arc<dyn StreamTransport>) -> Self {
        LagSampler {
            transport,
            interval: DEFAULT_INTERVAL,
            groups: None,
            seen: HashSet::new(),
        }
    }

    /// Samples every `interval` (at least [`MIN_INTERVAL`]).
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval.max(MIN_INTERVAL);
        self
    }

    /// Samples only these groups (on every stream they read).
    pub fn groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups = Some(groups.into_iter().map(Into::into).collect());
        self
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes one sample now and records it; returns the rows recorded.
    ///
    /// # Errors
    ///
    /// The backend's, when it cannot tell the groups' health; nothing is recorded then.
    pub async fn sample(&mut self) -> Result<Vec<GroupLag>> {
        let rows = self.rows().await?;
        self.record(&rows);
        Ok(rows)
    }

    /// The groups' health as the backend tells it now, of the groups sampled.
    async fn rows(&self) -> Result<Vec<GroupLag>> {
        Ok(match &self.groups {
            Some(groups) if groups.len() == 1 => {
                let only = groups.iter().next().map(String::as_str);
                self.transport.lag(only).await?
            }
            Some(groups) => {
                let mut rows = self.transport.lag(None).await?;
                rows.retain(|row| groups.contains(&row.group));
                rows
            }
            None => self.transport.lag(None).await?,
        })
    }

    /// Sets the gauges of `rows`, and zeroes those of series gone since the last sample.
    fn record(&mut self, rows: &[GroupLag]) {
        let mut now = HashSet::with_capacity(rows.len());
        for row in rows {
            let series = Series {
                stream: self.transport.destination(&row.topic),
                partition: row.partition,
                group: row.group.clone(),
            };
            group_health(
                &series.stream,
                series.partition,
                &series.group,
                row.lag,
                row.pending,
                row.oldest_pending_idle,
            );
            // A projection's group (`{service}-projection-{name}`): how far it is behind
            // the stream's head, read and unapplied entries included.
            if let (Some(projection), Some(lag)) =
                (crate::projection::projection_of_group(&row.group), row.lag)
            {
                super::metrics::projection_behind(projection, &series.stream, lag + row.pending);
            }
            now.insert(series);
        }
        for gone in self.seen.difference(&now) {
            group_health(&gone.stream, gone.partition, &gone.group, Some(0), 0, None);
        }
        self.seen = now;
    }

    /// Samples now and then every interval, on a task of the current runtime, until the
    /// returned handle is shut down or dropped. A failed sample is logged (once until one
    /// succeeds again) and the next one tried at the next interval.
    pub fn start(mut self) -> RunningLagSampler {
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    () = cancelled.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let sampled = tokio::select! {
                    () = cancelled.cancelled() => break,
                    sampled = self.sample() => sampled,
                };
                match sampled {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("consumer group lag sampled again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot sample the consumer groups' lag; retrying every interval");
                    }
                    Err(_) => {}
                }
            }
        });
        RunningLagSampler {
            stop,
            task: Some(task),
        }
    }
}

/// A [`LagSampler`] running on a task. Stops when [shut down](Self::shutdown) or dropped.
#[derive(Debug)]
pub struct RunningLagSampler {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningLagSampler {
    /// Stops sampling and waits until the task has ended.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // The loop ends when told to; a panic in it has nothing to hand back.
            let _ = task.await;
        }
    }
}

impl Drop for RunningLagSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(all(test, feature = "prometheus"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::transport::memory::MemoryTransport;
    use crate::transport::{StartFrom, Topic};
    use crate::Envelope;

    /// The value of the series of `name` whose labels include `labels`, in `text`.
    fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn a_sample_sets_the_group_gauges_and_zeroes_a_group_gone_since() {
        let transport = MemoryTransport::new();
        let topic = Topic::of_type("Sampled");
        for group in ["a-consumers", "b-consumers"] {
            transport
                .ensure_group(&topic, group, StartFrom::Beginning)
                .await
                .unwrap();
        }
        let events: Vec<_> = (0..5)
            .map(|n| Envelope::new("Sampled", 1, "test", serde_json::json!({ "n": n })))
            .collect();
        transport.publish(&events).await.unwrap();

        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut sampler = LagSampler::new(Arc::new(transport.clone()));
        let rows = sampler.rows().await.unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        ::metrics::with_local_recorder(&recorder, || sampler.record(&rows));
        let text = handle.render();
        for group in ["a-consumers", "b-consumers"] {
            let labels = [
                r#"stream="Sampled""#,
                &format!(r#"group="{group}""#),
                r#"partition="""#,
            ];
            assert_eq!(
                value(&text, "eventbus_consumer_group_lag", &labels),
                Some(5.0),
                "{text}"
            );
            assert_eq!(
                value(&text, "eventbus_consumer_group_pending", &labels),
                Some(0.0)
            );
            assert_eq!(
                value(
                    &text,
                    "eventbus_consumer_group_oldest_pending_seconds",
                    &labels
                ),
                Some(0.0)
            );
        }

        // One group only, then: the other one's series goes to 0.
        let mut only_a = LagSampler::new(Arc::new(transport)).groups(["a-consumers"]);
        only_a.seen = sampler.seen.clone();
        let rows = only_a.rows().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].group, "a-consumers");
        ::metrics::with_local_recorder(&recorder, || only_a.record(&rows));
        let text = handle.render();
        assert_eq!(
            value(
                &text,
                "eventbus_consumer_group_lag",
                &[r#"group="a-consumers""#]
            ),
            Some(5.0)
        );
        assert_eq!(
            value(
                &text,
                "eventbus_consumer_group_lag",
                &[r#"group="b-consumers""#]
            ),
            Some(0.0),
            "{text}"
        );
    }
}
