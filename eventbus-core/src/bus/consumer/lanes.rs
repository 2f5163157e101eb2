//! Scheduling: each entry goes to its ordering lane (or straight to a task when unordered),
//! and at most `concurrency` handlers run at once.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{attempt, Job, Runner};
use crate::bus::options::OrderBy;
use crate::transport::{Delivery, Topic};

/// Starts holding a delivery and hands it to its lane. `false` when this consumer holds the
/// entry already (a reclaim or recovery of an entry it is still working on): that run
/// settles it.
pub(super) fn dispatch(
    runner: &Arc<Runner>,
    delivery: Delivery,
    counted: bool,
    until: Instant,
    permit: OwnedSemaphorePermit,
) -> bool {
    let key = runner.inflight_key(&delivery.topic, &delivery.entry_id);
    let Some(generation) = runner
        .holdings()
        .insert(key.clone(), &delivery, counted, until)
    else {
        return false;
    };
    let job = Job {
        delivery,
        counted,
        key,
        generation,
        _permit: permit,
    };
    let Some(lane) = lane_key(&runner.options.order_by, &job.delivery) else {
        let r = runner.clone();
        runner.tracker.spawn(async move {
            if let Ok(_running) = r.running.clone().acquire_owned().await {
                attempt::process(&r, job).await;
            }
        });
        return true;
    };
    let lane = {
        let mut lanes = runner.lanes();
        if let Some(queue) = lanes.get_mut(lane.as_ref()) {
            queue.push_back(job);
            return true;
        }
        let lane = lane.into_owned();
        lanes.insert(lane.clone(), VecDeque::from([job]));
        lane
    };
    let r = runner.clone();
    runner.tracker.spawn(async move { run_lane(r, lane).await });
    true
}

/// The lane key of a delivery, or `None` to run it without ordering. Borrowed where it can
/// be: a lane's key is copied only when the lane is created.
fn lane_key<'a>(order: &OrderBy, delivery: &'a Delivery) -> Option<Cow<'a, str>> {
    match order {
        OrderBy::Unordered => None,
        OrderBy::Stream => Some(match &delivery.topic {
            Topic::Type(t) => Cow::Borrowed(t.as_str()),
            other => Cow::Owned(other.to_string()),
        }),
        OrderBy::Correlation => delivery
            .event
            .as_ref()
            .ok()
            .map(|e| Cow::Borrowed(e.correlation_id.as_deref().unwrap_or(e.event_id.as_str()))),
        OrderBy::Key(f) => delivery
            .event
            .as_ref()
            .ok()
            .and_then(|e| f(e))
            .map(Cow::Owned),
    }
}

/// Handles a lane's jobs in order until it is empty, then removes it.
async fn run_lane(runner: Arc<Runner>, key: String) {
    loop {
        let job = {
            let mut lanes = runner.lanes();
            let Some(queue) = lanes.get_mut(&key) else {
                return;
            };
            if runner.cancel.is_cancelled() {
                // Shutting down: what hasn't started stays pending for a later delivery.
                lanes.remove(&key);
                return;
            }
            match queue.pop_front() {
                Some(job) => job,
                None => {
                    lanes.remove(&key);
                    return;
                }
            }
        };
        let Ok(_running) = runner.running.clone().acquire_owned().await else {
            return;
        };
        attempt::process(&runner, job).await;
    }
}
