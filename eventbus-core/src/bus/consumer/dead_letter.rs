//! Moving an entry to the group's dead-letter stream, with the reason.

use super::Runner;
use crate::bus::stats::SubscriptionStats;
use crate::transport::{DeadLetterReason, Topic};
use tracing::Instrument;

/// Attempts at dead-lettering before leaving the entry pending for a later delivery.
pub(super) const DEAD_LETTER_ATTEMPTS: u32 = 5;

/// Dead-letters an entry (the backend does it only while the entry is pending for this
/// consumer). After repeated transport errors the entry is left pending: it is delivered
/// again, past `max_deliveries`, and dead-lettered then.
pub(super) async fn dead_letter(
    runner: &Runner,
    topic: &Topic,
    id: &str,
    error: String,
    delivery_count: u32,
) {
    runner.count_unhandled();
    let reason = DeadLetterReason {
        error,
        delivery_count,
        consumer: runner.spec.consumer.clone(),
    };
    for attempt in 1..=DEAD_LETTER_ATTEMPTS {
        let sent = runner
            .consumer
            .dead_letter(topic, id, &reason)
            .instrument(runner.client_span("dead_letter", Some(topic)))
            .await;
        match sent {
            Ok(()) => {
                SubscriptionStats::add(&runner.stats.dead_lettered, 1);
                runner.destination(topic).metrics.dead_lettered();
                SubscriptionStats::add(&runner.stats.acked, 1);
                tracing::warn!(topic = %topic, id, error = %reason.error, deliveries = delivery_count, "entry dead-lettered");
                return;
            }
            Err(e) => {
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                tracing::warn!(topic = %topic, id, error = %e, attempt, "dead-lettering failed");
                if attempt == DEAD_LETTER_ATTEMPTS || runner.cancel.is_cancelled() {
                    break;
                }
                tokio::time::sleep(runner.options.reconnect_backoff.delay(attempt)).await;
            }
        }
    }
}
