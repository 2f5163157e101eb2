//! The saga store seam on both backends: compare-and-set transitions, status indexes,
//! deadlines claimed once, participant records.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::envelope::now_seconds;
use eventbus_core::saga::{
    transition, SagaDefinition, SagaStatus, SagaStep, SagaStore, StepClaim, StepKey, StepRecord,
};
use eventbus_tests::{all_three, Backend};
use serde_json::{json, Map};

fn saga() -> SagaDefinition {
    SagaDefinition::new("s").step(
        SagaStep::new("a")
            .command_type("A")
            .success_type("ADone")
            .failure_type("AFailed")
            .compensation_type("AUndo")
            .timeout(Duration::from_millis(1)),
    )
}

async fn compare_and_set(backend: Backend) {
    let store = backend.saga_store();
    let now = now_seconds();
    let state = transition::start(&saga(), "cas-1", Map::new(), now).unwrap();
    assert!(store.create(&state).await.unwrap());
    assert!(!store.create(&state).await.unwrap(), "ids are unique");
    assert_eq!(store.count(SagaStatus::Pending).await.unwrap(), 1);

    let mut reply = Map::new();
    reply.insert("saga_id".into(), json!("cas-1"));
    reply.insert("x".into(), json!(1));
    let transition::Transition::Apply(next) = transition::on_reply(
        &saga(),
        &state,
        "ADone",
        "e1",
        &reply,
        Duration::from_secs(1),
        now,
    ) else {
        panic!("success not applied");
    };
    assert!(store.update(&state, &next).await.unwrap());
    // A second writer that read the same version loses.
    assert!(!store.update(&state, &next).await.unwrap());
    let stored = store.load("cas-1").await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.state, SagaStatus::Completed);
    assert_eq!(stored.data["x"], json!(1));
    assert_eq!(store.count(SagaStatus::Pending).await.unwrap(), 0);
    assert_eq!(store.count(SagaStatus::Completed).await.unwrap(), 1);
    let listed = store.list(SagaStatus::Completed, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].saga_id, "cas-1");
    // Completing cleared its deadline: nothing to claim.
    let due = store
        .claim_due(now + 10.0, Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{due:?}");
}

async fn deadlines_are_claimed_once(backend: Backend) {
    let store = backend.saga_store();
    let now = now_seconds();
    for i in 0..50 {
        let state = transition::start(&saga(), &format!("d{i}"), Map::new(), now).unwrap();
        assert!(store.create(&state).await.unwrap());
    }
    let later = now + 1.0;
    let claims = (0..5).map(|_| {
        let store: Arc<dyn SagaStore> = store.clone();
        tokio::spawn(async move { store.claim_due(later, Duration::from_secs(30), 7).await })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for claim in futures_util::future::join_all(claims).await {
        for id in claim.unwrap().unwrap() {
            total += 1;
            seen.insert(id);
        }
    }
    assert_eq!(total, seen.len(), "a deadline went to two claimers");
    // Claim the rest; everything was handed out once, then nothing until the lease ends.
    while seen.len() < 50 {
        let more = store
            .claim_due(later, Duration::from_secs(30), 100)
            .await
            .unwrap();
        assert!(!more.is_empty());
        for id in more {
            assert!(seen.insert(id), "claimed twice");
        }
    }
    assert!(store
        .claim_due(later, Duration::from_secs(30), 100)
        .await
        .unwrap()
        .is_empty());
    // After the lease, unapplied deadlines are handed out again.
    let after_lease = store
        .claim_due(later + 31.0, Duration::from_secs(30), 100)
        .await
        .unwrap();
    assert_eq!(after_lease.len(), 50);
}

async fn participant_records(backend: Backend) {
    let store = backend.saga_store();
    let key = StepKey {
        participant: "inventory".into(),
        saga_id: "p1".into(),
        event_type: "Reserve".into(),
    };
    let lease = Duration::from_secs(30);
    assert_eq!(
        store.claim_step(&key, lease).await.unwrap(),
        StepClaim::Acquired
    );
    assert_eq!(
        store.claim_step(&key, lease).await.unwrap(),
        StepClaim::Existing(StepRecord::InProgress)
    );
    store.release_step(&key).await.unwrap();
    assert_eq!(
        store.claim_step(&key, lease).await.unwrap(),
        StepClaim::Acquired
    );
    let done = StepRecord::Done {
        event_type: Some("Reserved".into()),
        data: json!({"saga_id": "p1"}),
    };
    store.finish_step(&key, &done, lease).await.unwrap();
    store.release_step(&key).await.unwrap(); // not in progress: kept
    assert_eq!(
        store.claim_step(&key, lease).await.unwrap(),
        StepClaim::Existing(done.clone())
    );
    assert_eq!(
        store.cancel_step(&key, lease).await.unwrap(),
        StepClaim::Existing(done)
    );
    let other = StepKey {
        event_type: "Other".into(),
        ..key
    };
    assert_eq!(
        store.cancel_step(&other, lease).await.unwrap(),
        StepClaim::Acquired
    );
    assert_eq!(
        store.claim_step(&other, lease).await.unwrap(),
        StepClaim::Existing(StepRecord::Cancelled)
    );
    // A short lease expires.
    let short = StepKey {
        event_type: "Short".into(),
        ..other
    };
    store
        .claim_step(&short, Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        store.claim_step(&short, lease).await.unwrap(),
        StepClaim::Acquired
    );
}

/// A store that wrote nothing (another coordinator's, or one restarted) finds the due
/// deadlines the others scheduled: on a cluster, in every shard on every master.
async fn every_store_finds_every_due_deadline(backend: Backend) {
    let store = backend.saga_store();
    let other = match &backend {
        // Memory stores share nothing: the same store stands for the other one.
        Backend::Memory(_) => store.clone(),
        Backend::Redis { .. } => backend.saga_store(),
    };
    let now = now_seconds();
    for i in 0..40 {
        let state = transition::start(&saga(), &format!("f{i}"), Map::new(), now).unwrap();
        assert!(store.create(&state).await.unwrap());
    }
    let mut seen = HashSet::new();
    while seen.len() < 40 {
        let claimed = other
            .claim_due(now + 1.0, Duration::from_secs(30), 15)
            .await
            .unwrap();
        assert!(!claimed.is_empty() && claimed.len() <= 15, "{claimed:?}");
        for id in claimed {
            assert!(seen.insert(id), "claimed twice");
        }
    }
    assert!(store
        .claim_due(now + 1.0, Duration::from_secs(30), 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        other.list(SagaStatus::Pending, 100).await.unwrap().len(),
        40
    );
    assert_eq!(other.list(SagaStatus::Pending, 7).await.unwrap().len(), 7);
    assert_eq!(other.count(SagaStatus::Pending).await.unwrap(), 40);
}

all_three!(
    compare_and_set,
    deadlines_are_claimed_once,
    participant_records,
    every_store_finds_every_due_deadline,
);
