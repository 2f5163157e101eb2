//! [`MemorySagaStore`]: saga state in process memory, with the Redis store's semantics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::Result;
use crate::saga::state::{SagaState, SagaStatus};
use crate::saga::store::{SagaStore, StepClaim, StepKey, StepRecord};

#[derive(Debug, Default)]
struct Inner {
    sagas: HashMap<String, SagaState>,
    /// Deadlines by saga id (seconds since the epoch), like the Redis sorted set.
    deadlines: BTreeMap<String, f64>,
    steps: HashMap<StepKey, (StepRecord, Instant)>,
}

/// An in-process [`SagaStore`]: compare-and-set transitions, status queries, deadlines
/// claimed once per lease, expiring participant records. Cheap to clone: clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemorySagaStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemorySagaStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No operation can panic between two writes, so a poisoned lock is consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn schedule(&mut self, state: &SagaState) {
        match state.deadline {
            Some(d) => self.deadlines.insert(state.saga_id.clone(), d),
            None => self.deadlines.remove(&state.saga_id),
        };
    }

    fn step(&mut self, key: &StepKey) -> Option<StepRecord> {
        match self.steps.get(key) {
            Some((record, expires)) if *expires > Instant::now() => Some(record.clone()),
            Some(_) => {
                self.steps.remove(key);
                None
            }
            None => None,
        }
    }
}

#[async_trait]
impl SagaStore for MemorySagaStore {
    async fn create(&self, state: &SagaState) -> Result<bool> {
        let mut inner = self.lock();
        if inner.sagas.contains_key(&state.saga_id) {
            return Ok(false);
        }
        inner.schedule(state);
        inner.sagas.insert(state.saga_id.clone(), state.clone());
        Ok(true)
    }

    async fn load(&self, saga_id: &str) -> Result<Option<SagaState>> {
        Ok(self.lock().sagas.get(saga_id).cloned())
    }

    async fn update(&self, current: &SagaState, next: &SagaState) -> Result<bool> {
        let mut inner = self.lock();
        match inner.sagas.get(&current.saga_id) {
            Some(stored) if stored.version == current.version => {}
            _ => return Ok(false),
        }
        inner.schedule(next);
        inner.sagas.insert(next.saga_id.clone(), next.clone());
        Ok(true)
    }

    async fn list(&self, status: SagaStatus, limit: usize) -> Result<Vec<SagaState>> {
        let inner = self.lock();
        let mut found: Vec<SagaState> = inner
            .sagas
            .values()
            .filter(|s| s.state == status)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.saga_id.cmp(&b.saga_id));
        found.truncate(limit);
        Ok(found)
    }

    async fn count(&self, status: SagaStatus) -> Result<u64> {
        let inner = self.lock();
        Ok(inner.sagas.values().filter(|s| s.state == status).count() as u64)
    }

    async fn claim_due(&self, now: f64, lease: Duration, max: usize) -> Result<Vec<String>> {
        let mut inner = self.lock();
        let mut due: Vec<(String, f64)> = inner
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, d)| (id.clone(), *d))
            .collect();
        due.sort_by(|a, b| a.1.total_cmp(&b.1));
        due.truncate(max);
        for (id, _) in &due {
            inner
                .deadlines
                .insert(id.clone(), now + lease.as_secs_f64());
        }
        Ok(due.into_iter().map(|(id, _)| id).collect())
    }

    async fn claim_step(&self, key: &StepKey, lease: Duration) -> Result<StepClaim> {
        let mut inner = self.lock();
        if let Some(record) = inner.step(key) {
            return Ok(StepClaim::Existing(record));
        }
        inner.steps.insert(
            key.clone(),
            (StepRecord::InProgress, Instant::now() + lease),
        );
        Ok(StepClaim::Acquired)
    }

    async fn finish_step(&self, key: &StepKey, record: &StepRecord, ttl: Duration) -> Result<()> {
        self.lock()
            .steps
            .insert(key.clone(), (record.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn release_step(&self, key: &StepKey) -> Result<()> {
        let mut inner = self.lock();
        if inner.step(key) == Some(StepRecord::InProgress) {
            inner.steps.remove(key);
        }
        Ok(())
    }

    async fn cancel_step(&self, key: &StepKey, ttl: Duration) -> Result<StepClaim> {
        let mut inner = self.lock();
        if let Some(record) = inner.step(key) {
            return Ok(StepClaim::Existing(record));
        }
        inner
            .steps
            .insert(key.clone(), (StepRecord::Cancelled, Instant::now() + ttl));
        Ok(StepClaim::Acquired)
    }
}
