//! One entry to its end: counting the delivery, the poison and malformed checks, then the
//! handlers (each call bounded by `handler_timeout` and shielded from panics), retried with
//! backoff until they succeed, the entry is dead-lettered, or the loop stops.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;

use super::holdings::{self, Renewal};
use super::{acker, dead_letter, Job, Runner};
use crate::bus::context::{Context, DeliveryInfo};
use crate::bus::handler::ErasedHandler;
use crate::bus::stats::SubscriptionStats;
use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::telemetry::metrics::Outcome;
use crate::telemetry::spans;
use crate::transport::{Delivery, Topic};
use tracing::Instrument;

/// Handles one delivery to the end: ack, dead letter, or left pending (lost, given back, or
/// cancelled at shutdown).
pub(super) async fn process(runner: &Arc<Runner>, job: Job) {
    if runner.cancel.is_cancelled() {
        // Shutting down before it started: it stays pending for a later delivery.
        return;
    }
    let (topic, id) = (job.delivery.topic.clone(), job.delivery.entry_id.clone());
    tokio::select! {
        biased;
        _ = runner.abandon.cancelled() => {
            SubscriptionStats::add(&runner.stats.abandoned, 1);
            tracing::warn!(topic = %topic, id = %id, "handler cancelled at shutdown; the entry stays pending");
        }
        _ = handle(runner, job) => {}
    }
}

async fn handle(runner: &Arc<Runner>, job: Job) {
    let Job {
        delivery,
        counted,
        key,
        generation,
        _permit,
    } = job;
    let Delivery {
        topic,
        entry_id,
        mut delivery_count,
        event,
    } = delivery;
    let settle = Settle {
        runner,
        topic: &topic,
        id: &entry_id,
        key: &key,
        generation,
    };

    let event = match event
        .map_err(|m| m.reason)
        .and_then(|e| check_type(&topic, e))
    {
        Ok(event) => Arc::new(event),
        Err(reason) => {
            tracing::warn!(topic = %topic, id = %entry_id, reason = %reason, "malformed entry; dead-lettering");
            settle
                .dead_letter(format!("malformed entry: {reason}"), delivery_count)
                .await;
            return;
        }
    };

    // Deliveries that ended without a verdict (the consumer crashed, was killed or hung)
    // count like failed attempts: an entry that kills its consumer can't loop forever.
    let attempts_before = if counted {
        delivery_count.saturating_sub(1)
    } else {
        delivery_count
    };
    if attempts_before >= runner.options.max_deliveries {
        SubscriptionStats::add(&runner.stats.poison, 1);
        settle
            .dead_letter(
                format!(
                    "delivered {attempts_before} times without a verdict (max_deliveries {}): \
                     the consumers handling it crashed, were killed or hung",
                    runner.options.max_deliveries
                ),
                attempts_before,
            )
            .await;
        return;
    }

    let Some(handlers) = runner.handlers.get(&topic).cloned() else {
        SubscriptionStats::add(&runner.stats.skipped, 1);
        runner.count_unhandled();
        acker::ack(runner, topic, entry_id, key, generation);
        return;
    };

    // A recovered or claimed entry may be what took its last consumer down: its first
    // attempt here runs alone, so that if it takes this process down too, no other entry's
    // attempt is charged for it.
    // (Only its last allowed attempt: an innocent entry in flight when a poison took the
    // process down is charged for that crash, but never for the one that would dead-letter
    // it, while the poison exhausts its attempts.)
    let alone = !counted && delivery_count.saturating_add(1) >= runner.options.max_deliveries;
    let Some(first) = Gate::enter(runner, alone).await else {
        return; // shutting down: stays pending
    };
    // Make sure the entry is still ours before a handler starts; count the attempt of a
    // recovered or claimed entry.
    let held = if counted {
        settle.confirm().await
    } else {
        settle.count_attempt().await
    };
    match held {
        Hold::Held(count) => delivery_count = count.unwrap_or(delivery_count),
        Hold::Lost => {
            runner.count_unhandled();
            return;
        }
        Hold::Stopped => return, // shutting down: stays pending
    }
    if runner.handler_acks {
        // The handlers acknowledge it themselves, atomically with their writes and only
        // while it is this consumer's: from here on a renewal can't tell a loss from that.
        runner.holdings().set_settling(&key, generation, true);
    }

    let destination = runner.destination(&topic);
    let group = runner.spec.group.as_str();
    let metrics = &destination.metrics;
    metrics.consumed();
    let mut done = vec![false; handlers.len()];
    let mut gate = Some(first);
    // Rounds in a row that failed only because the backend was unavailable.
    let mut unavailable: u32 = 0;
    loop {
        let guard = match gate.take() {
            Some(guard) => guard,
            None => match Gate::enter(runner, false).await {
                Some(guard) => guard,
                None => return, // shutting down: stays pending
            },
        };
        let info = Arc::new(DeliveryInfo {
            topic: topic.clone(),
            entry_id: entry_id.clone(),
            delivery_count,
            group: runner.spec.group.clone(),
            consumer: runner.spec.consumer.clone(),
        });
        let ctx = Context::new(runner.bus.clone(), event.clone(), info);
        let mut failure: Option<HandlerError> = None;
        let mut only_unavailable = true;
        let started = Instant::now();
        let delivered = spans::Delivered {
            system: runner.system,
            destination: &destination.name,
            group,
            consumer: &runner.spec.consumer,
            entry_id: &entry_id,
            delivery_count,
        };
        for (i, handler) in handlers.iter().enumerate() {
            if done[i] {
                continue;
            }
            match call(runner, handler, event.clone(), ctx.clone(), &delivered).await {
                Ok(()) => done[i] = true,
                Err(e) if e.is_abandon() => {
                    failure = Some(e);
                    break;
                }
                Err(e) => {
                    only_unavailable &= backend_unavailable(&e);
                    SubscriptionStats::add(&runner.stats.failed_attempts, 1);
                    metrics.handler_failed();
                    tracing::warn!(
                        topic = %topic, id = %entry_id, event_type = %event.event_type,
                        attempt = delivery_count, error = %e, "handler failed"
                    );
                    let permanent = failure.as_ref().is_some_and(HandlerError::is_permanent)
                        || e.is_permanent();
                    failure = Some(if permanent { e.into_permanent() } else { e });
                }
            }
        }
        let took = started.elapsed();
        let Some(failure) = failure else {
            metrics.processed(took, Outcome::Ok);
            SubscriptionStats::add(&runner.stats.handled, 1);
            if runner.handler_acks {
                drop(guard);
                SubscriptionStats::add(&runner.stats.acked, 1);
                runner.holdings().release(&key, generation);
            } else if guard.is_alone() {
                // A last attempt runs alone because a poison may be about: its verdict is
                // acknowledged before the next attempt (perhaps that poison's) may start,
                // or a crash right after would charge this entry a delivery it survived.
                acker::ack_now(runner, topic, entry_id, key, generation).await;
                drop(guard);
            } else {
                drop(guard);
                acker::ack(runner, topic, entry_id, key, generation);
            }
            return;
        };
        drop(guard);
        if failure.is_abandon() {
            metrics.processed(took, Outcome::Abandoned);
            // Given back: stays pending, uncounted, for this group's next delivery.
            tracing::info!(topic = %topic, id = %entry_id, reason = %failure, "entry given back");
            let back = runner.holdings().take_back(&key, generation);
            super::give_back(runner, back.into_iter().collect()).await;
            runner.count_unhandled();
            return;
        }
        if only_unavailable && !failure.is_permanent() {
            // The backend refused (connection lost, out of memory, failing over): not the
            // entry's fault, so no delivery is counted; wait for the backend and go again.
            unavailable = unavailable.saturating_add(1);
            let delay = runner.options.reconnect_backoff.delay(unavailable);
            tracing::warn!(topic = %topic, id = %entry_id, error = %failure, ?delay, "backend unavailable; retrying without counting a delivery");
            tokio::select! {
                _ = runner.cancel.cancelled() => return, // stays pending
                _ = tokio::time::sleep(delay) => {}
            }
            match settle.confirm().await {
                Hold::Held(_) => continue,
                Hold::Lost => {
                    runner.count_unhandled();
                    return;
                }
                Hold::Stopped => return,
            }
        }
        unavailable = 0;
        runner.holdings().verdict(&key, generation);
        if failure.is_permanent() || delivery_count >= runner.options.max_deliveries {
            metrics.processed(took, Outcome::DeadLetter);
            settle.dead_letter(failure.message(), delivery_count).await;
            return;
        }
        metrics.processed(took, Outcome::Retry);
        metrics.retried();
        let delay = runner.options.retry_backoff.delay(delivery_count);
        tokio::select! {
            _ = runner.cancel.cancelled() => return, // stays pending; redelivered later
            _ = tokio::time::sleep(delay) => {}
        }
        let sent = Instant::now();
        match runner.consumer.redeliver(&topic, &entry_id).await {
            Ok(Some(again)) => {
                delivery_count = again.delivery_count;
                let mut holdings = runner.holdings();
                holdings.renewed(&key, generation, sent + runner.options.claim_idle);
                holdings.charged(&key, generation, delivery_count);
            }
            Ok(None) => {
                // Acknowledged or claimed elsewhere meanwhile.
                runner.holdings().release(&key, generation);
                runner.count_unhandled();
                return;
            }
            Err(e) => {
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                tracing::warn!(topic = %topic, id = %entry_id, error = %e, "cannot redeliver for retry; left pending for reclaim");
                runner.holdings().release(&key, generation);
                runner.count_unhandled();
                return;
            }
        }
    }
}

/// Whether a handler failed only because the backend is unavailable: a retryable transport
/// error (connection lost, timeout, busy or out of memory).
fn backend_unavailable(e: &HandlerError) -> bool {
    e.source()
        .and_then(|s| s.downcast_ref::<crate::Error>())
        .is_some_and(|e| matches!(e, crate::Error::Transport(t) if t.is_retryable()))
}

/// Admission of one attempt: shared with other attempts, or alone (held until dropped).
struct Gate<'a> {
    _shared: Option<RwLockReadGuard<'a, ()>>,
    _alone: Option<RwLockWriteGuard<'a, ()>>,
}

impl<'a> Gate<'a> {
    /// Waits for admission; `None` when the loop stops meanwhile.
    /// Whether this attempt holds the gate alone.
    fn is_alone(&self) -> bool {
        self._alone.is_some()
    }

    async fn enter(runner: &'a Runner, alone: bool) -> Option<Gate<'a>> {
        tokio::select! {
            _ = runner.cancel.cancelled() => None,
            gate = async {
                if alone {
                    Gate { _shared: None, _alone: Some(runner.gate.write().await) }
                } else {
                    Gate { _shared: Some(runner.gate.read().await), _alone: None }
                }
            } => Some(gate),
        }
    }
}

/// An entry read from a type's stream must be of that type: anything else landed there by
/// mistake (or malice) and would reach handlers of the wrong type.
fn check_type(topic: &Topic, event: Envelope<Value>) -> Result<Envelope<Value>, String> {
    match topic {
        Topic::Type(expected) if event.event_type != *expected => Err(format!(
            "event_type `{}` on the stream of `{expected}`",
            event.event_type
        )),
        _ => Ok(event),
    }
}

/// Whether an entry is still this consumer's before its handler starts.
enum Hold {
    /// Held, with its delivery count when this check counted the attempt.
    Held(Option<u32>),
    /// Another consumer has it: neither start nor acknowledge it.
    Lost,
    /// Stopping while the server could not be asked: it stays pending.
    Stopped,
}

/// The entry being settled, with its place in the holdings.
struct Settle<'a> {
    runner: &'a Runner,
    topic: &'a Topic,
    id: &'a str,
    key: &'a super::InflightKey,
    generation: u64,
}

impl Settle<'_> {
    async fn dead_letter(&self, error: String, delivery_count: u32) {
        self.runner
            .holdings()
            .set_settling(self.key, self.generation, true);
        dead_letter::dead_letter(self.runner, self.topic, self.id, error, delivery_count).await;
        self.runner.holdings().release(self.key, self.generation);
    }

    /// Confirms the hold of a freshly read entry, renewing it when stale.
    async fn confirm(&self) -> Hold {
        let mut failures = 0;
        loop {
            let until = self.runner.holdings().until(self.key, self.generation);
            match until {
                None => return Hold::Lost,
                Some(until) if holdings::is_fresh(until, self.runner.options.claim_idle) => {
                    return Hold::Held(None)
                }
                Some(_) => {}
            }
            let entry = [(self.key.clone(), self.generation, self.id.to_owned())];
            match holdings::renew(self.runner, self.topic, &entry).await {
                Ok(r) if matches!(r.first(), Some(Renewal::Held)) => return Hold::Held(None),
                Ok(_) => return Hold::Lost,
                Err(e) => {
                    failures += 1;
                    if !self.transport_error(&e, failures).await {
                        return Hold::Stopped;
                    }
                }
            }
        }
    }

    /// Counts the attempt on a recovered or claimed entry (which also renews its hold).
    async fn count_attempt(&self) -> Hold {
        let mut failures = 0;
        loop {
            let sent = Instant::now();
            match self.runner.consumer.redeliver(self.topic, self.id).await {
                Ok(Some(d)) => {
                    let mut holdings = self.runner.holdings();
                    holdings.renewed(
                        self.key,
                        self.generation,
                        sent + self.runner.options.claim_idle,
                    );
                    holdings.charged(self.key, self.generation, d.delivery_count);
                    return Hold::Held(Some(d.delivery_count));
                }
                Ok(None) => {
                    self.runner.holdings().release(self.key, self.generation);
                    SubscriptionStats::add(&self.runner.stats.lost, 1);
                    return Hold::Lost;
                }
                Err(e) => {
                    failures += 1;
                    if !self.transport_error(&e, failures).await {
                        return Hold::Stopped;
                    }
                }
            }
        }
    }

    /// Backs off after a failed ownership check; `false` when stopping meanwhile.
    async fn transport_error(&self, e: &crate::Error, failures: u32) -> bool {
        SubscriptionStats::add(&self.runner.stats.transport_errors, 1);
        let delay = self.runner.options.reconnect_backoff.delay(failures);
        tracing::warn!(topic = %self.topic, id = self.id, error = %e, ?delay, "cannot confirm the entry is still held; retrying before its handler starts");
        tokio::select! {
            _ = self.runner.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// Calls one handler, turning a panic or a timeout into a failure, in a CONSUMER span and
/// in the trace context of the event (a child of it), so that what it publishes continues
/// the trace.
async fn call(
    runner: &Runner,
    handler: &ErasedHandler,
    event: Arc<Envelope<Value>>,
    ctx: Context,
    delivered: &spans::Delivered<'_>,
) -> Result<(), HandlerError> {
    let (span, context) = spans::process(delivered, &event);
    let limit = runner.options.handler_timeout;
    let outcome = crate::panic::catch(|| {
        let fut = handler(event, ctx);
        async move {
            match limit {
                Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                    Err(HandlerError::retryable(format!(
                        "handler timed out after {limit:?}"
                    )))
                }),
                None => fut.await,
            }
        }
    });
    let outcome = crate::telemetry::context::scope(context, outcome)
        .instrument(span.clone())
        .await;
    let result = outcome.unwrap_or_else(|panic| {
        Err(HandlerError::retryable(format!(
            "handler panicked: {panic}"
        )))
    });
    if let Err(e) = &result {
        span.in_scope(|| tracing::debug!(error = %e, "handler failed"));
        #[cfg(feature = "otel")]
        crate::telemetry::otel::set_error(&span, e.to_string());
    }
    result
}
