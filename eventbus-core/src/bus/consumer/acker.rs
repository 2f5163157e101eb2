//! Batched acknowledgements, of entries this consumer still holds only.
//!
//! Whatever accumulated while the previous flush was in flight goes in the next one, so
//! batches grow with load and a lone ack goes out at once. An entry whose hold may have
//! lapsed (the heartbeat could not reach the server) is renewed first; one that another
//! consumer took meanwhile is not acknowledged: that consumer settles it.

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use tokio::sync::mpsc;

use super::dead_letter::DEAD_LETTER_ATTEMPTS;
use super::holdings::{self, Renewal};
use super::{InflightKey, Runner};
use crate::bus::stats::SubscriptionStats;
use crate::envelope::EntryId;
use crate::transport::Topic;

/// Acks buffered before a flush is forced.
const MAX_ACK_BATCH: usize = 1024;

/// An entry to acknowledge, with its place in the holdings.
pub(super) struct AckItem {
    topic: Topic,
    id: EntryId,
    key: InflightKey,
    generation: u64,
}

/// Queues an entry for acknowledgement.
pub(super) fn ack(runner: &Runner, topic: Topic, id: EntryId, key: InflightKey, generation: u64) {
    // The acker outlives every task (it stops after the tracker drained), so a send only
    // fails during teardown; the entry then stays pending and is redelivered.
    let _ = runner.ack_tx.send(AckItem {
        topic,
        id,
        key,
        generation,
    });
}

/// Acknowledges an entry now, waiting for the server (falling back to the queue when it
/// can't be reached).
pub(super) async fn ack_now(
    runner: &Runner,
    topic: Topic,
    id: EntryId,
    key: InflightKey,
    generation: u64,
) {
    let mut pending = vec![AckItem {
        topic,
        id,
        key,
        generation,
    }];
    if let Err(e) = flush(runner, &mut pending).await {
        SubscriptionStats::add(&runner.stats.transport_errors, 1);
        tracing::warn!(error = %e, "immediate ack failed; queued");
        for item in pending {
            let _ = runner.ack_tx.send(item);
        }
    }
}

/// Collects acknowledgements and flushes them in batches until the handlers drained.
pub(super) async fn ack_loop(runner: Arc<Runner>, mut rx: mpsc::UnboundedReceiver<AckItem>) {
    let mut pending: Vec<AckItem> = Vec::new();
    let mut failures: u32 = 0;
    loop {
        if pending.is_empty() {
            tokio::select! {
                biased;
                item = rx.recv() => match item {
                    Some(item) => pending.push(item),
                    None => return,
                },
                // Handlers drained (or were abandoned): flush what is left, then stop.
                _ = runner.ack_stop.cancelled() => {
                    rx.close();
                    while let Ok(item) = rx.try_recv() {
                        pending.push(item);
                    }
                    if pending.is_empty() {
                        return;
                    }
                }
            }
        }
        while pending.len() < MAX_ACK_BATCH {
            match rx.try_recv() {
                Ok(item) => pending.push(item),
                Err(_) => break,
            }
        }
        match flush(&runner, &mut pending).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                SubscriptionStats::add(&runner.stats.transport_errors, 1);
                let delay = runner.options.reconnect_backoff.delay(failures);
                tracing::warn!(error = %e, count = pending.len(), ?delay, "ack failed; retrying");
                if runner.ack_stop.is_cancelled() && failures > DEAD_LETTER_ATTEMPTS {
                    tracing::warn!(
                        count = pending.len(),
                        "giving up acks at shutdown; entries will be redelivered"
                    );
                    return;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Acknowledges what is still held; drops what was lost. Leaves `pending` empty on success.
async fn flush(runner: &Runner, pending: &mut Vec<AckItem>) -> crate::Result<()> {
    // Fresh holds are acknowledged as they are; stale ones are renewed first, by topic.
    // An entry is marked settling (left alone by the heartbeat) only once it is confirmed;
    // a stale one is unmarked, so that its renewal reports a real loss.
    let mut stale: HashMap<Topic, Vec<(InflightKey, u64, EntryId)>> = HashMap::new();
    {
        let mut holdings = runner.holdings();
        for item in pending.iter() {
            let fresh = holdings
                .until(&item.key, item.generation)
                .is_some_and(|until| holdings::is_fresh(until, runner.options.claim_idle));
            holdings.set_settling(&item.key, item.generation, fresh);
            if !fresh {
                stale.entry(item.topic.clone()).or_default().push((
                    item.key.clone(),
                    item.generation,
                    item.id.clone(),
                ));
            }
        }
    }
    let mut lost: Vec<(InflightKey, u64)> = Vec::new();
    for (topic, entries) in &stale {
        let renewed = holdings::renew(runner, topic, entries).await?;
        let mut holdings = runner.holdings();
        for ((key, generation, _), r) in entries.iter().zip(renewed) {
            match r {
                Renewal::Held => holdings.set_settling(key, *generation, true),
                Renewal::Lost => lost.push((key.clone(), *generation)),
            }
        }
    }
    if !lost.is_empty() {
        pending.retain(|i| !lost.iter().any(|(k, g)| *k == i.key && *g == i.generation));
    }
    let batch = group_by_topic(pending);
    let started = std::time::Instant::now();
    runner
        .consumer
        .ack(&batch)
        .instrument(runner.client_span("ack", batch.first().map(|(t, _)| t)))
        .await?;
    for (topic, _) in &batch {
        runner.destination(topic).metrics.acked(started.elapsed());
    }
    SubscriptionStats::add(&runner.stats.acked, pending.len() as u64);
    let mut holdings = runner.holdings();
    for item in pending.drain(..) {
        holdings.release(&item.key, item.generation);
    }
    Ok(())
}

/// Ids grouped by topic, in arrival order.
fn group_by_topic(items: &[AckItem]) -> Vec<(Topic, Vec<EntryId>)> {
    let mut by_topic: Vec<(Topic, Vec<EntryId>)> = Vec::new();
    for item in items {
        match by_topic.iter_mut().find(|(t, _)| *t == item.topic) {
            Some((_, ids)) => ids.push(item.id.clone()),
            None => by_topic.push((item.topic.clone(), vec![item.id.clone()])),
        }
    }
    by_topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_group_by_topic_in_arrival_order() {
        let item = |topic: Topic, id: &str| AckItem {
            key: InflightKey::Other(topic.clone(), id.to_owned()),
            topic,
            id: id.to_owned(),
            generation: 1,
        };
        let items = [
            item(Topic::of_type("A"), "1-0"),
            item(Topic::All, "2-0"),
            item(Topic::of_type("A"), "3-0"),
        ];
        assert_eq!(
            group_by_topic(&items),
            vec![
                (
                    Topic::of_type("A"),
                    vec!["1-0".to_string(), "3-0".to_string()]
                ),
                (Topic::All, vec!["2-0".to_string()]),
            ]
        );
    }
}
