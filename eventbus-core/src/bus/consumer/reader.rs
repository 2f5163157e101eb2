//! Reading: new entries, this consumer's own pending entries after a (re)start, and idle
//! entries of other consumers; transport errors are survived with backoff.

use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{lanes, Runner};
use crate::bus::stats::SubscriptionStats;
use crate::envelope::EntryId;
use crate::error::{Error, Result};
use crate::transport::{Delivery, Topic};

/// The cursor value that starts a scan, and that a finished scan returns.
const START: &str = "0-0";

/// A batch of deliveries and how they were taken.
struct Batch {
    deliveries: Vec<Delivery>,
    /// Fresh reads count their delivery; recovered and claimed entries don't yet.
    counted: bool,
    /// When the command that took them was sent: their holds are safe `claim_idle` after.
    sent: Instant,
}

/// Where the recovery of this consumer's own pending entries stands.
struct Recovery {
    topic: usize,
    cursor: EntryId,
}

/// The reader's state between rounds.
struct Reader {
    /// `Some` while own pending entries are being recovered: at start, and after a
    /// transport error (a read whose reply was lost leaves entries pending here unseen).
    recovery: Option<Recovery>,
    claim_cursors: HashMap<Topic, EntryId>,
    next_claim: Instant,
    next_cleanup: Instant,
    /// Entries taken so far, for `limit`.
    taken: u64,
}

/// Reads, recovers and reclaims until cancelled.
pub(super) async fn read_loop(runner: &Arc<Runner>) {
    let opts = &runner.options;
    let prefetch = Arc::new(Semaphore::new(opts.prefetch.max(opts.batch_size)));
    let mut failures: u32 = 0;
    let mut reader = Reader {
        recovery: Some(Recovery {
            topic: 0,
            cursor: START.to_owned(),
        }),
        claim_cursors: HashMap::new(),
        next_claim: Instant::now() + opts.claim_interval,
        next_cleanup: Instant::now(),
        taken: 0,
    };

    while !runner.cancel.is_cancelled() {
        let want = match opts.limit {
            Some(limit) => {
                let counted = reader
                    .taken
                    .saturating_sub(runner.uncounted.load(AtomicOrdering::SeqCst));
                let left = usize::try_from(limit.saturating_sub(counted)).unwrap_or(usize::MAX);
                opts.batch_size.min(left)
            }
            None => opts.batch_size,
        };
        if want == 0 {
            // The limit is reached: read again only if some entry gets dead-lettered or
            // skipped instead of handled.
            tokio::select! {
                _ = runner.cancel.cancelled() => break,
                _ = runner.uncounted_changed.notified() => continue,
            }
        }
        // Wait for room for a whole batch before reading one.
        let permits = tokio::select! {
            _ = runner.cancel.cancelled() => break,
            p = prefetch.clone().acquire_many_owned(want as u32) => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };

        let result = tokio::select! {
            _ = runner.cancel.cancelled() => break,
            r = step(runner, &mut reader, want) => r,
        };

        match result {
            Ok(batch) => {
                failures = 0;
                reader.taken += batch.deliveries.len() as u64;
                let mut permits = permits;
                for delivery in batch.deliveries {
                    // A claim can return a little more than a batch; wait for room then.
                    let permit = match permits.split(1) {
                        Some(p) => p,
                        None => match prefetch.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    let until = batch.sent + opts.claim_idle;
                    if !lanes::dispatch(runner, delivery, batch.counted, until, permit) {
                        // Held already (still being handled here): not taken twice.
                        reader.taken = reader.taken.saturating_sub(1);
                    }
                }
            }
            Err(err) => {
                drop(permits);
                failures = failures.saturating_add(1);
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                let delay = opts.reconnect_backoff.delay(failures);
                if let Error::GroupMissing { .. } = err {
                    tracing::warn!(group = %runner.spec.group, error = %err, ?delay, "consumer group missing; recreating");
                } else {
                    tracing::warn!(group = %runner.spec.group, error = %err, ?delay, "transport error in consumer loop; backing off");
                }
                tokio::select! {
                    _ = runner.cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                if let Error::GroupMissing { .. } = err {
                    recreate_groups(runner).await;
                    reader.claim_cursors.clear();
                }
                // A read whose reply was lost left its entries pending for this consumer:
                // take them back now rather than after `claim_idle`.
                reader.recovery = Some(Recovery {
                    topic: 0,
                    cursor: START.to_owned(),
                });
            }
        }
    }
}

/// One round: a page of recovery, a reclaim, or a read.
async fn step(runner: &Runner, reader: &mut Reader, want: usize) -> Result<Batch> {
    let opts = &runner.options;
    let topics = &runner.spec.topics;
    if let Some(recovery) = &mut reader.recovery {
        // Own pending entries first, all of them, in stream order, before anything new.
        let sent = Instant::now();
        let Some(topic) = topics.get(recovery.topic) else {
            reader.recovery = None;
            return Ok(Batch {
                deliveries: Vec::new(),
                counted: false,
                sent,
            });
        };
        let page = runner
            .consumer
            .recover_own(topic, &recovery.cursor, want)
            .instrument(runner.client_span("recover", Some(topic)))
            .await?;
        if page.next_cursor == START {
            recovery.topic += 1;
            recovery.cursor = START.to_owned();
            if recovery.topic >= topics.len() {
                reader.recovery = None;
            }
        } else {
            recovery.cursor = page.next_cursor;
        }
        if !page.deliveries.is_empty() {
            tracing::info!(
                topic = %topic,
                group = %runner.spec.group,
                consumer = %runner.spec.consumer,
                count = page.deliveries.len(),
                "recovered own pending entries"
            );
        }
        SubscriptionStats::add(&runner.stats.claimed, page.deliveries.len() as u64);
        if !page.deliveries.is_empty() {
            runner
                .destination(topic)
                .metrics
                .claimed(page.deliveries.len() as u64);
        }
        return Ok(Batch {
            deliveries: page.deliveries,
            counted: false,
            sent,
        });
    }
    if Instant::now() >= reader.next_claim {
        reader.next_claim = Instant::now() + opts.claim_interval;
        let mut out = Vec::new();
        let sent = Instant::now();
        for topic in topics {
            let cursor = reader
                .claim_cursors
                .get(topic)
                .map(String::as_str)
                .unwrap_or(START);
            let claimed = runner
                .consumer
                .claim_idle(topic, opts.claim_idle, cursor, want)
                .instrument(runner.client_span("claim", Some(topic)))
                .await?;
            if !claimed.deliveries.is_empty() {
                tracing::info!(
                    topic = %topic,
                    group = %runner.spec.group,
                    count = claimed.deliveries.len(),
                    "reclaimed entries from idle consumers"
                );
                // More may be waiting: look again right away.
                reader.next_claim = Instant::now();
            }
            SubscriptionStats::add(&runner.stats.claimed, claimed.deliveries.len() as u64);
            if !claimed.deliveries.is_empty() {
                runner
                    .destination(topic)
                    .metrics
                    .claimed(claimed.deliveries.len() as u64);
            }
            reader
                .claim_cursors
                .insert(topic.clone(), claimed.next_cursor);
            out.extend(claimed.deliveries);
            if out.len() >= want {
                break;
            }
        }
        if !out.is_empty() {
            return Ok(Batch {
                deliveries: out,
                counted: false,
                sent,
            });
        }
    }
    if let Some(idle) = opts.remove_idle_consumers_after {
        if Instant::now() >= reader.next_cleanup {
            reader.next_cleanup = Instant::now() + Duration::from_secs(300);
            for topic in topics {
                let removed = runner.consumer.remove_idle_consumers(topic, idle).await?;
                if !removed.is_empty() {
                    tracing::info!(topic = %topic, ?removed, "removed idle consumers with nothing pending");
                }
            }
        }
    }
    let block = opts.block.min(
        reader
            .next_claim
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    );
    let sent = Instant::now();
    let deliveries = runner
        .consumer
        .read(want, block)
        .instrument(runner.client_span("receive", None))
        .await?;
    Ok(Batch {
        deliveries,
        counted: true,
        sent,
    })
}

async fn recreate_groups(runner: &Runner) {
    for topic in &runner.spec.topics {
        if let Err(e) = runner
            .bus
            .transport()
            .ensure_group(topic, &runner.spec.group, runner.options.start_from)
            .await
        {
            tracing::warn!(topic = %topic, error = %e, "could not recreate consumer group");
        }
    }
}
