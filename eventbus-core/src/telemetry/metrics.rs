//! Recording eventbus's metrics through the [`metrics`] facade (a no-op until the
//! application installs a recorder, e.g. with the `prometheus` feature).

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};

use super::names::*;

/// What handling one delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every handler succeeded.
    Ok,
    /// A handler failed; the entry is retried.
    Retry,
    /// The entry went to the dead-letter stream.
    DeadLetter,
    /// Given back or cancelled: it stays pending.
    Abandoned,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retry => "retry",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// `n` events published to `destination`.
pub fn sent(system: &'static str, destination: &str, n: u64) {
    counter!(SENT, SYSTEM => system, DESTINATION => destination.to_owned()).increment(n);
}

/// A client operation against the broker.
pub fn operation(operation: &'static str, destination: &str, took: Duration) {
    histogram!(OPERATION_DURATION, OPERATION => operation, DESTINATION => destination.to_owned())
        .record(took.as_secs_f64());
}

/// A group's health on one stream (or partition): lag (`None`: unknown, not exported),
/// pending entries and the idle time of the oldest.
pub fn group_health(
    stream: &str,
    partition: Option<u32>,
    group: &str,
    lag: Option<u64>,
    pending: u64,
    oldest_pending: Option<Duration>,
) {
    let partition = partition.map(|p| p.to_string()).unwrap_or_default();
    let labels = [
        (STREAM, stream.to_owned()),
        (GAUGE_GROUP, group.to_owned()),
        (PARTITION, partition),
    ];
    if let Some(lag) = lag {
        gauge!(GROUP_LAG, &labels).set(lag as f64);
    }
    gauge!(GROUP_PENDING, &labels).set(pending as f64);
    gauge!(GROUP_OLDEST_PENDING, &labels).set(oldest_pending.map_or(0.0, |d| d.as_secs_f64()));
}

/// How far a projection is behind a stream's head.
pub fn projection_behind(projection: &str, stream: &str, entries: u64) {
    gauge!(PROJECTION_BEHIND, "projection" => projection.to_owned(), STREAM => stream.to_owned())
        .set(entries as f64);
}

/// A saga moved into `state`.
pub fn saga_transition(saga: &str, state: &'static str) {
    counter!(SAGA_TRANSITIONS, "saga" => saga.to_owned(), "state" => state).increment(1);
}

/// A saga step timed out.
pub fn saga_timeout(saga: &str) {
    counter!(SAGA_TIMEOUTS, "saga" => saga.to_owned()).increment(1);
}

/// The number of sagas in `state`.
pub fn sagas_in(state: &'static str, count: u64) {
    gauge!(SAGAS, "state" => state).set(count as f64);
}

/// A command dispatched.
pub fn command(command: &str, outcome: &'static str, took: Duration) {
    histogram!(COMMAND_DURATION, "command" => command.to_owned(), OUTCOME => outcome)
        .record(took.as_secs_f64());
}

/// A consumer's metrics on one destination, registered once (a recorder installed later
/// than the subscription started does not see them: install it first).
#[derive(Clone)]
pub(crate) struct ConsumerMetrics {
    consumed: Counter,
    /// By [`Outcome`], in its declaration order.
    processed: [Histogram; 4],
    handler_failures: Counter,
    retries: Counter,
    dead_letters: Counter,
    claimed: Counter,
    ack: Histogram,
}

impl ConsumerMetrics {
    /// The handles of `group` consuming `destination`.
    pub(crate) fn new(system: &'static str, destination: &str, group: &str) -> Self {
        let (d, g) = (destination.to_owned(), group.to_owned());
        let processed = |outcome: Outcome| histogram!(PROCESS_DURATION, DESTINATION => d.clone(), GROUP => g.clone(), OUTCOME => outcome.as_str());
        ConsumerMetrics {
            consumed: counter!(CONSUMED, SYSTEM => system, DESTINATION => d.clone(), GROUP => g.clone()),
            processed: [
                processed(Outcome::Ok),
                processed(Outcome::Retry),
                processed(Outcome::DeadLetter),
                processed(Outcome::Abandoned),
            ],
            handler_failures: counter!(HANDLER_FAILURES, DESTINATION => d.clone(), GROUP => g.clone()),
            retries: counter!(RETRIES, DESTINATION => d.clone(), GROUP => g.clone()),
            dead_letters: counter!(DEAD_LETTERS, DESTINATION => d.clone(), GROUP => g.clone()),
            claimed: counter!(CLAIMED, DESTINATION => d.clone(), GROUP => g.clone()),
            ack: histogram!(OPERATION_DURATION, OPERATION => "ack", DESTINATION => d),
        }
    }

    /// A delivery handed to handlers.
    pub(crate) fn consumed(&self) {
        self.consumed.increment(1);
    }

    /// One attempt, from its handlers' start to its verdict.
    pub(crate) fn processed(&self, took: Duration, outcome: Outcome) {
        let i = match outcome {
            Outcome::Ok => 0,
            Outcome::Retry => 1,
            Outcome::DeadLetter => 2,
            Outcome::Abandoned => 3,
        };
        self.processed[i].record(took.as_secs_f64());
    }

    /// A handler call failed.
    pub(crate) fn handler_failed(&self) {
        self.handler_failures.increment(1);
    }

    /// A delivery is retried.
    pub(crate) fn retried(&self) {
        self.retries.increment(1);
    }

    /// An entry was dead-lettered.
    pub(crate) fn dead_lettered(&self) {
        self.dead_letters.increment(1);
    }

    /// `n` entries claimed or recovered.
    pub(crate) fn claimed(&self, n: u64) {
        self.claimed.increment(n);
    }

    /// An acknowledgement round trip.
    pub(crate) fn acked(&self, took: Duration) {
        self.ack.record(took.as_secs_f64());
    }
}
