//! The in-process scenarios: publishing, end to end, latency at a fixed rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use eventbus_core::{Envelope, EventBus, StartFrom, Subscription, Topic};
use eventbus_redis::RedisTransport;

use crate::support::{self, BenchEvent, Tracker};

/// The service name of every scenario.
pub const SERVICE: &str = "bench";
/// How long a scenario may make no progress before its events count as lost.
pub const STALL: Duration = Duration::from_secs(30);

/// A transport in a fresh namespace, deleted by [`Scope::finish`].
pub struct Scope {
    pub url: String,
    pub transport: RedisTransport,
    maxlen: u64,
}

impl Scope {
    pub async fn open(url: &str, scenario: &str, maxlen: u64) -> anyhow::Result<Self> {
        let transport = support::connect(url, &support::namespace(scenario), maxlen).await?;
        Ok(Scope::from_transport(url, transport, maxlen))
    }

    /// The scope of a transport already connected to its namespace.
    pub fn from_transport(url: &str, transport: RedisTransport, maxlen: u64) -> Self {
        Scope {
            url: url.to_owned(),
            transport,
            maxlen,
        }
    }

    /// Another connection to the same namespace (a consumer of its own).
    pub async fn another(&self) -> anyhow::Result<RedisTransport> {
        support::connect(&self.url, self.transport.keys().namespace(), self.maxlen).await
    }

    /// Checks that the group has nothing pending and nothing unread, then deletes the
    /// namespace.
    pub async fn finish(self, scenario: &str, group: Option<&str>) -> anyhow::Result<()> {
        use eventbus_core::StreamAdmin;
        let checked = match group {
            Some(group) => {
                let lags = self.transport.lag(Some(group)).await?;
                let pending: u64 = lags.iter().map(|l| l.pending).sum();
                let unread: u64 = lags.iter().map(|l| l.lag.unwrap_or(0)).sum();
                if pending != 0 || unread != 0 {
                    Err(anyhow::anyhow!(
                        "{scenario}: {pending} entries left pending, {unread} unread"
                    ))
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        };
        self.transport.delete_namespace().await?;
        checked
    }
}

/// Publishes `n` events, `batch` per `publish_batch` (1: `publish`), from `publishers`
/// tasks sharing one transport, each awaiting its calls one after another, in a namespace
/// that writes the global stream or not. Returns events/s, after checking the type stream
/// (and the global stream, when written) holds exactly `n` entries.
pub async fn publish(
    url: &str,
    n: u64,
    batch: u64,
    publishers: u64,
    global: bool,
) -> anyhow::Result<f64> {
    let scenario = format!("publish-{batch}-{publishers}");
    let scope = Scope::open(url, &scenario, n + 1000).await?;
    scope.transport.client().set_global_stream(global).await?;
    let bus = EventBus::new(scope.transport.clone(), SERVICE);
    let start = Instant::now();
    let share = n.div_ceil(publishers);
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let bus = bus.clone();
            let (mut seq, last) = (p * share, ((p + 1) * share).min(n));
            tokio::spawn(async move {
                while seq < last {
                    let end = (seq + batch).min(last);
                    if batch == 1 {
                        bus.publish(BenchEvent::new(seq)).await?;
                    } else {
                        bus.publish_batch((seq..end).map(BenchEvent::new)).await?;
                    }
                    seq = end;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    let keys = scope.transport.keys();
    for (key, expected) in [
        (keys.type_stream("BenchEvent"), n),
        (keys.stream(&Topic::All), if global { n } else { 0 }),
    ] {
        let len = support::xlen(url, &key).await?;
        ensure!(
            len == expected,
            "{scenario}: {key} holds {len} entries, not {expected}"
        );
    }
    scope.finish(&scenario, None).await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Starts a consumer of the benchmark group that records into `tracker`.
pub async fn subscribe(
    transport: RedisTransport,
    name: &str,
    tracker: &Arc<Tracker>,
) -> anyhow::Result<Subscription> {
    let t = tracker.clone();
    EventBus::new(transport, SERVICE)
        .subscribe()
        .consumer_name(name)
        .start_from(StartFrom::Beginning)
        .on(move |e: Envelope<BenchEvent>| {
            t.record(&e.data);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .context("starting a subscription")
}

/// Figures of an end-to-end run.
pub struct EndToEnd {
    /// Events/s from the first publish to the last ack.
    pub events_per_sec: f64,
    /// Events/s the producer managed meanwhile.
    pub publish_per_sec: f64,
}

/// A producer publishes `n` events in batches of `batch` while `consumers` consumers of one
/// group handle them with a no-op handler; measured from the first publish to the last ack.
/// `global`: whether the namespace writes the global stream.
pub async fn end_to_end(
    url: &str,
    n: u64,
    batch: u64,
    consumers: usize,
    global: bool,
) -> anyhow::Result<EndToEnd> {
    let scenario = format!("e2e-{consumers}");
    let scope = Scope::open(url, &scenario, n + 1000).await?;
    scope.transport.client().set_global_stream(global).await?;
    let tracker = Arc::new(Tracker::new(n, false));
    let mut subs = Vec::new();
    for i in 0..consumers {
        subs.push(subscribe(scope.another().await?, &format!("bench-{i}"), &tracker).await?);
    }
    let bus = EventBus::new(scope.transport.clone(), SERVICE);
    let acked = |subs: &[Subscription]| subs.iter().map(|s| s.stats().acked()).sum::<u64>();

    let start = Instant::now();
    let mut seq = 0;
    while seq < n {
        let end = (seq + batch).min(n);
        bus.publish_batch((seq..end).map(BenchEvent::new)).await?;
        seq = end;
    }
    let published = start.elapsed();
    support::wait_until(
        &scenario,
        STALL,
        || acked(&subs) + tracker.distinct(),
        || acked(&subs) >= n && tracker.distinct() >= n,
    )
    .await?;
    let elapsed = start.elapsed();

    let acked_total = acked(&subs);
    for sub in subs {
        ensure!(
            sub.stats().dead_lettered() == 0 && sub.stats().failed_attempts() == 0,
            "{scenario}: handler failures"
        );
        sub.shutdown().await?;
    }
    tracker.verify(&scenario)?;
    ensure!(
        acked_total == n,
        "{scenario}: {acked_total} acks for {n} events"
    );
    scope.finish(&scenario, Some(&group())).await?;
    Ok(EndToEnd {
        events_per_sec: n as f64 / elapsed.as_secs_f64(),
        publish_per_sec: n as f64 / published.as_secs_f64(),
    })
}

/// The benchmark's consumer group.
pub fn group() -> String {
    eventbus_core::bus::group_for_service(SERVICE)
}

/// Publish-to-handler latencies at a fixed rate.
pub struct Latency {
    pub rate: u64,
    pub achieved_rate: f64,
    pub samples: usize,
    pub p50_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
}

/// Publishes at `rate` events/s for `secs` seconds (each millisecond, the events due are
/// published as one batch) to one consumer, and reports the latency from just before the
/// publish call to the handler. The first quarter second is warm-up, left out of the
/// percentiles (but still verified).
pub async fn latency(url: &str, rate: u64, secs: f64) -> anyhow::Result<Latency> {
    let scenario = format!("latency-{rate}");
    let n = ((rate as f64 * secs) as u64).max(1);
    let warmup = (rate / 4).min(n / 2);
    let scope = Scope::open(url, &scenario, n + 1000).await?;
    let tracker = Arc::new(Tracker::new(n, true));
    let sub = subscribe(scope.another().await?, "bench-0", &tracker).await?;
    let bus = EventBus::new(scope.transport.clone(), SERVICE);

    let start = tokio::time::Instant::now();
    let mut seq = 0;
    while seq < n {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(n);
        if due > seq {
            if due - seq == 1 {
                bus.publish(BenchEvent::new(seq)).await?;
            } else {
                bus.publish_batch((seq..due).map(BenchEvent::new)).await?;
            }
            seq = due;
        } else {
            let next = start + Duration::from_secs_f64(seq as f64 / rate as f64);
            tokio::time::sleep_until(next).await;
        }
    }
    let achieved_rate = n as f64 / start.elapsed().as_secs_f64();
    support::wait_until(
        &scenario,
        STALL,
        || sub.stats().acked() + tracker.distinct(),
        || sub.stats().acked() >= n && tracker.distinct() >= n,
    )
    .await?;
    sub.shutdown().await?;
    tracker.verify(&scenario)?;
    scope.finish(&scenario, Some(&group())).await?;

    let sorted = tracker.sorted_latencies(warmup);
    Ok(Latency {
        rate,
        achieved_rate,
        samples: sorted.len(),
        p50_us: support::quantile(&sorted, 0.50),
        p99_us: support::quantile(&sorted, 0.99),
        p999_us: support::quantile(&sorted, 0.999),
        max_us: sorted.last().copied().unwrap_or(0),
    })
}
