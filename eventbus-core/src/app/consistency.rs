//! Read-your-writes: waiting until the app's projections have applied what a dispatch
//! published, before a query reads their models.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cqrs::{QueryError, Receipt};
use crate::envelope::EntryId;
use crate::error::Result;
use crate::transport::{StreamTransport, Topic};

/// One projection the app runs: its consumer group and the streams it reads.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) topics: Vec<Topic>,
}

/// Waits until every watched projection reading a stream of `receipt` has settled the
/// receipt's entries there (applied them, or dead-lettered them), for at most `limit`.
pub(crate) async fn settle(
    transport: &Arc<dyn StreamTransport>,
    watched: &[Watched],
    receipt: &Receipt,
    limit: Duration,
) -> std::result::Result<(), QueryError> {
    let mut by_topic: BTreeMap<Topic, Vec<EntryId>> = BTreeMap::new();
    for position in &receipt.positions {
        by_topic
            .entry(Topic::of_type(position.event_type.clone()))
            .or_default()
            .push(position.entry_id.clone());
    }
    let mut waits: Vec<(&Watched, Topic, Vec<EntryId>)> = Vec::new();
    for projection in watched {
        for (topic, ids) in &by_topic {
            if projection.topics.contains(topic) {
                waits.push((projection, topic.clone(), ids.clone()));
            }
        }
    }
    wait_each(
        limit,
        waits,
        |wait| wait.0,
        |(projection, topic, ids)| {
            let transport = transport.clone();
            async move { transport.settled(&topic, &projection.group, &ids).await }
        },
    )
    .await
}

/// Waits until every watched projection has settled everything its streams held when the
/// call was made (no lag, nothing pending), for at most `limit`.
pub(crate) async fn catch_up(
    transport: &Arc<dyn StreamTransport>,
    watched: &[Watched],
    limit: Duration,
) -> std::result::Result<(), QueryError> {
    wait_each(
        limit,
        watched.iter(),
        |projection| *projection,
        |projection| {
            let transport = transport.clone();
            async move { caught_up(transport.as_ref(), projection).await }
        },
    )
    .await
}

/// Waits until `done` holds for each item in turn, pausing 1 ms doubling to 50 ms between
/// checks, for at most `limit` in all; past it, the projection of the item still waited for
/// did not catch up.
async fn wait_each<'w, T, Fut>(
    limit: Duration,
    items: impl IntoIterator<Item = T>,
    projection: impl Fn(&T) -> &'w Watched,
    done: impl Fn(T) -> Fut,
) -> std::result::Result<(), QueryError>
where
    T: Clone,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    for item in items {
        while !done(item.clone()).await.map_err(failed)? {
            if Instant::now() >= deadline {
                return Err(QueryError::NotCaughtUp {
                    projection: projection(&item).name.clone(),
                    waited: limit,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
    Ok(())
}

async fn caught_up(transport: &dyn StreamTransport, projection: &Watched) -> Result<bool> {
    for topic in &projection.topics {
        // A stream nobody published to yet has no group: nothing to catch up on.
        if let Some(lag) = transport.lag_of(topic, &projection.group).await? {
            if lag.lag != Some(0) || lag.pending != 0 {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn failed(e: crate::Error) -> QueryError {
    QueryError::Failed(Box::new(e))
}
