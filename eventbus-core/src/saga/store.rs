//! [`SagaStore`]: the seam between the saga runtime and where saga state lives.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::saga::state::{SagaState, SagaStatus};

/// Identifies one piece of participant work: a participant handling one command (or
/// compensation) event type for one saga. Participants are idempotent by this key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepKey {
    /// The participant service.
    pub participant: String,
    /// The saga.
    pub saga_id: String,
    /// The command or compensation event type handled.
    pub event_type: String,
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.participant, self.saga_id, self.event_type
        )
    }
}

/// What a participant recorded for a [`StepKey`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepRecord {
    /// A consumer is handling it now (the record expires after the lease, so work lost
    /// with a crashed consumer is done again).
    InProgress,
    /// Handled; this is the reply it sent (re-sent on a redelivery, never recomputed).
    Done {
        /// The reply's event type (`None`: the work sends no reply).
        event_type: Option<String>,
        /// The reply's payload.
        data: Value,
    },
    /// The step's compensation came first: the command must not run any more.
    Cancelled,
}

/// The result of claiming participant work.
#[derive(Debug, Clone, PartialEq)]
pub enum StepClaim {
    /// The caller holds the work and must finish or release it.
    Acquired,
    /// Someone recorded it before.
    Existing(StepRecord),
}

/// Where sagas live: state by id with compare-and-set transitions, an index per status,
/// scheduled deadlines, and participants' idempotency records.
///
/// The in-memory implementation is [`MemorySagaStore`](crate::saga::MemorySagaStore); the
/// Redis one is `eventbus_redis::RedisSagaStore` (state at `saga:{saga_id}`).
#[async_trait]
pub trait SagaStore: Send + Sync + 'static {
    /// Stores a new saga (indexed under its status, its deadline scheduled). `false` when a
    /// saga with that id exists already (nothing written).
    async fn create(&self, state: &SagaState) -> Result<bool>;

    /// The saga, if it exists.
    async fn load(&self, saga_id: &str) -> Result<Option<SagaState>>;

    /// Replaces `current` by `next` only if the stored version is still `current.version`,
    /// atomically moving it between status indexes and scheduling `next.deadline` (or
    /// clearing the deadline). `false` on a version mismatch (nothing written): reload and
    /// decide again.
    async fn update(&self, current: &SagaState, next: &SagaState) -> Result<bool>;

    /// Up to `limit` sagas with this status (in no particular order).
    async fn list(&self, status: SagaStatus, limit: usize) -> Result<Vec<SagaState>>;

    /// How many sagas have this status.
    async fn count(&self, status: SagaStatus) -> Result<u64>;

    /// Claims up to `max` sagas whose deadline is at or before `now` (seconds since the
    /// epoch): each is handed to one caller only, and handed out again after `lease` unless
    /// a transition rescheduled or cleared its deadline meanwhile (so a coordinator that
    /// dies holding one doesn't lose it).
    async fn claim_due(&self, now: f64, lease: Duration, max: usize) -> Result<Vec<String>>;

    /// Claims participant work for `lease`, unless a record exists.
    async fn claim_step(&self, key: &StepKey, lease: Duration) -> Result<StepClaim>;

    /// Records finished work (replacing the claim), kept for `ttl`.
    async fn finish_step(&self, key: &StepKey, record: &StepRecord, ttl: Duration) -> Result<()>;

    /// Drops a claim that is still in progress (the work failed and will be retried).
    async fn release_step(&self, key: &StepKey) -> Result<()>;

    /// Marks work as cancelled for `ttl` unless a record exists (returned then).
    async fn cancel_step(&self, key: &StepKey, ttl: Duration) -> Result<StepClaim>;
}
