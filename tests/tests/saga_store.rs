//! The saga store seam on both backends: compare-and-set transitions, status indexes,
//! deadlines claimed once, participant records.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::envelope::now_seconds;
use eventbus_core::saga::{
    transition, SagaDefinition, SagaStatus, SagaStep, SagaStore, StepClaim, StepKey, StepRecord,
};
use eventbus_redis::{RedisConfig, RedisSagaStore, RedisTransport};
use eventbus_tests::{all_three, eventually, Backend, RedisCluster};
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

/// No saga is stuck when a master dies: on a cluster of its own, SIGKILL the master holding
/// some sagas; once its replica is promoted, a store that never wrote (another coordinator)
/// still finds every due deadline, those on the promoted replica included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_fire_after_a_master_is_killed() {
    const SAGAS: usize = 30;
    let mut cluster = RedisCluster::start().await;
    let config = RedisConfig::new(&cluster.url())
        .unwrap()
        .namespace("saga-failover");
    let transport = RedisTransport::connect(config.clone()).await.unwrap();
    let store = RedisSagaStore::new(&transport).with_state_prefix("saga-failover:saga:");
    let now = now_seconds();
    let ids: BTreeSet<String> = (0..SAGAS).map(|i| format!("f{i}")).collect();
    for id in &ids {
        let state = transition::start(&saga(), id, Map::new(), now).unwrap();
        assert!(store.create(&state).await.unwrap());
    }
    // Let the replicas catch up (asynchronous replication: see the README).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = store.keys().state("f0");
    let master = cluster.owner_of(&victim).expect("a master holds f0");
    cluster.kill(master);

    let other = RedisSagaStore::new(&RedisTransport::connect(config).await.unwrap())
        .with_state_prefix("saga-failover:saga:");
    // Each round claims at a time past the previous round's leases, so every deadline is
    // due again: a round that returns them all shows none is stuck.
    let mut round = 0.0;
    eventually(Duration::from_secs(60), "every deadline claimed", || {
        round += 1.0;
        let other = &other;
        let ids = &ids;
        async move {
            match other
                .claim_due(now + round * 31.0, Duration::from_secs(30), 100)
                .await
            {
                Ok(claimed) => claimed.into_iter().collect::<BTreeSet<_>>() == *ids,
                Err(e) => {
                    eprintln!("claim during failover: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    false
                }
            }
        }
    })
    .await;
    assert!(
        cluster.owner_of(&victim).is_some_and(|p| p != master),
        "the replica took over f0's slot"
    );
    assert_eq!(
        other.count(SagaStatus::Pending).await.unwrap(),
        SAGAS as u64
    );
    assert!(other.load("f0").await.unwrap().is_some());
}
