//! Sagas end to end, on both backends: the order saga of the reference article with
//! inventory, payment and shipping participants.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod sagas_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::saga::{Participant, Reply, SagaContext, SagaState, SagaStatus, SagaStore};
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::{event, Envelope, Event, EventBus};
use eventbus_tests::{all_three, eventually, Backend};
use sagas_support::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

fn order(id: &str, quantity: i64) -> Order {
    Order {
        order_id: id.to_string(),
        quantity,
        amount: 10.0 * quantity as f64,
        reservation_id: None,
    }
}

async fn final_state(store: &Arc<dyn SagaStore>, saga_id: &str) -> SagaState {
    eventually(LIMIT, &format!("saga {saga_id} to finish"), || async {
        store
            .load(saga_id)
            .await
            .unwrap()
            .is_some_and(|s| s.state.is_final())
    })
    .await;
    store.load(saga_id).await.unwrap().unwrap()
}

/// The compensations the participants ran for `saga_id`, once `expected` many have run.
/// A step that doesn't confirm its compensation (inventory here) may still be handling
/// it when the saga is already `Failed`, so the count is awaited, the order asserted.
async fn compensations(effects: &Effects, saga_id: &str, expected: usize) -> Vec<String> {
    eventually(
        LIMIT,
        &format!("{expected} compensations of {saga_id}"),
        || async { effects.compensations_of(saga_id).len() >= expected },
    )
    .await;
    effects.compensations_of(saga_id)
}

fn actions(state: &SagaState) -> Vec<(String, String)> {
    state
        .actions()
        .into_iter()
        .map(|(s, a)| (s.to_string(), a.to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, a)| (s.to_string(), a.to_string()))
        .collect()
}

async fn happy_path(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let effects = Arc::new(Effects::default());
    let subs = participants(&backend, &store, &saga, &effects, never(), true).await;
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;

    let id = coordinator.start(&saga, &order("ord_1", 2)).await.unwrap();
    let state = final_state(&store, &id).await;

    assert_eq!(state.state, SagaStatus::Completed);
    assert_eq!(state.saga_name, "create_order");
    assert_eq!(state.current_step, 2);
    assert!(state.completed_at.is_some() && state.error.is_none());
    // Every reply's fields merged into the data, next to what the saga started with.
    assert_eq!(state.data["order_id"], "ord_1");
    assert_eq!(state.data["reservation_id"], "res_ord_1");
    assert_eq!(state.data["payment_id"], "pay_ord_1");
    assert_eq!(state.data["tracking"], "trk_ord_1");
    assert!(!state.data.contains_key("saga_id"));
    assert_eq!(
        actions(&state),
        pairs(&[
            ("reserve_inventory", "started"),
            ("reserve_inventory", "completed"),
            ("process_payment", "started"),
            ("process_payment", "completed"),
            ("create_shipment", "started"),
            ("create_shipment", "completed"),
        ])
    );
    assert!(state
        .history
        .windows(2)
        .all(|w| w[0].timestamp <= w[1].timestamp && w[0].timestamp >= state.started_at));
    assert_eq!(effects.reserved.load(Ordering::SeqCst), 2);
    assert_eq!(effects.shipped.load(Ordering::SeqCst), 2);
    assert!(effects.compensations_of(&id).is_empty());
    assert_eq!(store.count(SagaStatus::Completed).await.unwrap(), 1);
    assert_eq!(store.count(SagaStatus::Pending).await.unwrap(), 0);
    let listed = coordinator.list(SagaStatus::Completed, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].saga_id, id);
    assert_eq!(coordinator.stats().completed(), 1);

    // Commands and replies are one trace: the one the saga's first command started.
    let flow: Vec<Envelope<Value>> = eventbus_tests::published(&backend.transport())
        .await
        .into_iter()
        .filter(|e| e.correlation_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(flow.len(), 6, "3 commands and 3 replies: {flow:?}");
    let traces: std::collections::BTreeSet<String> = flow
        .iter()
        .map(|e| {
            eventbus_core::telemetry::TraceContext::from_metadata(&e.metadata)
                .expect("every event carries a traceparent")
                .trace_id_hex()
        })
        .collect();
    assert_eq!(traces.len(), 1, "{traces:?}");

    coordinator.shutdown().await.unwrap();
    stop(subs).await;
}

async fn failure_at_each_step_compensates_completed_steps_in_reverse(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let effects = Arc::new(Effects::default());
    let fail: FailWhen = Arc::new(|step, order_id| order_id == format!("fail-{step}"));
    let subs = participants(&backend, &store, &saga, &effects, fail, true).await;
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;

    let cases: [(&str, &str, &str, &[&str]); 3] = [
        ("inventory", "reserve_inventory", "out of stock", &[]),
        (
            "payment",
            "process_payment",
            "card declined",
            &["reserve_inventory"],
        ),
        (
            "shipping",
            "create_shipment",
            "no courier available",
            &["process_payment", "reserve_inventory"],
        ),
    ];
    for (participant, step, error, compensated) in cases {
        let order_id = format!("fail-{participant}");
        let id = coordinator
            .start(&saga, &order(&order_id, 3))
            .await
            .unwrap();
        let state = final_state(&store, &id).await;
        assert_eq!(state.state, SagaStatus::Failed, "{participant}");
        assert_eq!(state.error.as_deref(), Some(error));
        assert_eq!(
            compensations(&effects, &id, compensated.len()).await,
            compensated.to_vec(),
            "failure at {participant}: exactly the completed steps, in reverse"
        );
        // History: the failure, then each compensation in reverse order.
        let history = actions(&state);
        let failed_at = history
            .iter()
            .position(|(s, a)| s == step && a == "failed")
            .unwrap();
        let after: Vec<(String, String)> = history[failed_at + 1..]
            .iter()
            .filter(|(_, a)| a == "compensating")
            .cloned()
            .collect();
        let expected: Vec<(String, String)> = compensated
            .iter()
            .map(|s| (s.to_string(), "compensating".to_string()))
            .collect();
        assert_eq!(after, expected, "{participant}: {history:?}");
        // Every compensated step ends up `compensated`: confirmed (payment), or issued
        // (the others confirm nothing), each after its `compensating`.
        for step in compensated {
            let at = |action: &str| {
                history[failed_at..]
                    .iter()
                    .position(|(s, a)| s == step && a == action)
            };
            let (compensating, done) = (at("compensating"), at("compensated"));
            assert!(
                compensating.is_some() && done > compensating,
                "{participant}: {step} not compensated in {history:?}"
            );
        }
        if compensated.contains(&"process_payment") {
            // Payment confirms refunds: the coordinator awaited it before releasing stock.
            let refunded = history
                .iter()
                .position(|(s, a)| s == "process_payment" && a == "compensated")
                .expect("refund confirmed");
            let released = history
                .iter()
                .position(|(s, a)| s == "reserve_inventory" && a == "compensating")
                .unwrap();
            assert!(refunded < released, "{history:?}");
        }
    }
    assert_eq!(effects.reserved.load(Ordering::SeqCst), 6);
    assert_eq!(effects.released.load(Ordering::SeqCst), 6);
    assert_eq!(effects.refunded.load(Ordering::SeqCst), 1);
    assert_eq!(store.count(SagaStatus::Failed).await.unwrap(), 3);

    coordinator.shutdown().await.unwrap();
    stop(subs).await;
}

async fn step_timeout_compensates(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_millis(300));
    let effects = Arc::new(Effects::default());
    // No shipping service: the shipment step never gets a reply.
    let subs = participants(&backend, &store, &saga, &effects, never(), false).await;
    // Two instances poll the deadlines; the timeout must fire once.
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;
    let other = sagas_support::coordinator(&backend, &store, &saga, "c2").await;

    let id = coordinator.start(&saga, &order("slow", 1)).await.unwrap();
    let state = final_state(&store, &id).await;
    assert_eq!(state.state, SagaStatus::Failed);
    assert!(
        state.error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        state.error
    );
    let history = actions(&state);
    assert!(history.contains(&("create_shipment".into(), "timed_out".into())));
    assert_eq!(
        compensations(&effects, &id, 2).await,
        vec!["process_payment", "reserve_inventory"]
    );
    assert_eq!(
        coordinator.stats().timeouts() + other.stats().timeouts(),
        1,
        "fired exactly once"
    );
    assert!(state.deadline.is_none());

    coordinator.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
    stop(subs).await;
}

async fn duplicate_and_late_replies_are_ignored(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;
    // The test plays the participants.
    let inventory = EventBus::from_arc(backend.transport(), "inventory-service");
    let id = coordinator.start(&saga, &order("dup", 1)).await.unwrap();
    let reply =
        |event_type: &str, data: Value| Envelope::new(event_type, 1, "inventory-service", data);
    let reserved = json!({"saga_id": id, "reservation_id": "r1"});
    inventory
        .publish_raw(&[reply("InventoryReserved", reserved.clone())])
        .await
        .unwrap();
    eventually(LIMIT, "payment step", || async {
        store.load(&id).await.unwrap().unwrap().current_step == 1
    })
    .await;
    let before = store.load(&id).await.unwrap().unwrap();
    // The same reply again (a new event), and a late failure of the completed step.
    inventory
        .publish_raw(&[
            reply(
                "InventoryReserved",
                json!({"saga_id": id, "reservation_id": "r2"}),
            ),
            reply(
                "InventoryReserveFailed",
                json!({"saga_id": id, "error": "late"}),
            ),
            reply("PaymentProcessed", json!({"saga_id": "no-such-saga"})),
        ])
        .await
        .unwrap();
    eventually(LIMIT, "three ignored replies", || async {
        coordinator.stats().ignored() >= 3
    })
    .await;
    let after = store.load(&id).await.unwrap().unwrap();
    assert_eq!(after.version, before.version, "nothing applied twice");
    assert_eq!(after.data["reservation_id"], "r1");
    assert_eq!(after.state, SagaStatus::Pending);
    coordinator.shutdown().await.unwrap();
}

async fn start_with_id_is_unique_and_republish_resends(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;
    let commands = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = commands.clone();
    let inventory = EventBus::from_arc(backend.transport(), "inventory-service")
        .subscribe()
        .on_raw("InventoryReserveCommand", move |e: Envelope<Value>| {
            let seen = seen.clone();
            async move {
                assert_eq!(e.data["saga_id"], "order-42");
                assert_eq!(e.correlation_id.as_deref(), Some("order-42"));
                seen.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    coordinator
        .start_with_id(&saga, "order-42", &order("o42", 1))
        .await
        .unwrap();
    let again = coordinator
        .start_with_id(&saga, "order-42", &order("o42", 1))
        .await;
    assert!(again.is_err(), "a saga id is used once");
    assert!(coordinator.republish("order-42").await.unwrap());
    assert!(!coordinator.republish("no-such-saga").await.unwrap());
    eventually(LIMIT, "the command twice", || async {
        commands.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(store.load("order-42").await.unwrap().unwrap().version, 1);
    inventory.shutdown().await.unwrap();
    coordinator.shutdown().await.unwrap();
}

async fn another_coordinator_finishes_a_saga(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let effects = Arc::new(Effects::default());
    // The participants' groups exist, but the services are down while the first instance
    // starts the saga and stops.
    stop(participants(&backend, &store, &saga, &effects, never(), true).await).await;
    let first = coordinator(&backend, &store, &saga, "c1").await;
    let id = first.start(&saga, &order("handover", 1)).await.unwrap();
    first.shutdown().await.unwrap();

    // Participants come back; their replies go to the second instance.
    let subs = participants(&backend, &store, &saga, &effects, never(), true).await;
    let second = coordinator(&backend, &store, &saga, "c2").await;
    let state = final_state(&store, &id).await;
    assert_eq!(state.state, SagaStatus::Completed);
    assert_eq!(second.stats().completed(), 1);
    assert_eq!(second.stats().started(), 0);
    second.shutdown().await.unwrap();
    stop(subs).await;
}

async fn participants_are_idempotent_under_redelivery(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let effects = Arc::new(Effects::default());
    let subs = participants(&backend, &store, &saga, &effects, never(), true).await;
    let replies = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let r = replies.clone();
    let listener = EventBus::from_arc(backend.transport(), "listener")
        .subscribe()
        .start_from(eventbus_core::StartFrom::Beginning)
        .on_raw("InventoryReserved", move |e: Envelope<Value>| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(e.data);
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let coordinator = EventBus::from_arc(backend.transport(), "order-coordinator");
    let command = |id: &str| {
        Envelope::new(
            "InventoryReserveCommand",
            1,
            "order-coordinator",
            json!({"saga_id": id, "order_id": id, "quantity": 4, "amount": 1.0}),
        )
    };
    // A command whose first attempt fails (retried), delivered three times.
    effects.flaky.lock().unwrap().insert("s1".into());
    coordinator
        .publish_raw(&[command("s1"), command("s1"), command("s1")])
        .await
        .unwrap();
    eventually(LIMIT, "three replies", || async {
        replies.lock().unwrap().len() == 3
    })
    .await;
    assert_eq!(effects.reserved.load(Ordering::SeqCst), 4, "reserved once");
    assert_eq!(effects.double_reservations.load(Ordering::SeqCst), 0);
    let replies = replies.lock().unwrap().clone();
    assert!(replies.iter().all(|r| r == &replies[0]), "{replies:?}");
    assert_eq!(replies[0]["saga_id"], "s1");

    // A compensation that overtakes its command: the command must not run afterwards, and
    // nothing is released (nothing was reserved).
    let release = Envelope::new(
        "InventoryReleaseCommand",
        1,
        "order-coordinator",
        json!({"saga_id": "s2", "order_id": "s2", "quantity": 5, "amount": 1.0}),
    );
    coordinator.publish_raw(&[release]).await.unwrap();
    eventually(LIMIT, "release handled", || async {
        effects.inventory_cancelled() == 1
    })
    .await;
    coordinator.publish_raw(&[command("s2")]).await.unwrap();
    eventually(LIMIT, "late command skipped", || async {
        effects.inventory_cancelled() == 2
    })
    .await;
    assert_eq!(
        effects.reserved.load(Ordering::SeqCst),
        4,
        "s2 never reserved"
    );
    assert_eq!(
        effects.released.load(Ordering::SeqCst),
        0,
        "nothing to release"
    );

    // A compensation arriving while its command runs waits for it, then undoes it.
    effects.slow.lock().unwrap().insert("s3".into());
    coordinator.publish_raw(&[command("s3")]).await.unwrap();
    // Sent once the command runs (a fixed pause is too short where reads take longer, as
    // on a cluster, whose consumers read partition by partition).
    eventually(LIMIT, "s3's command under way", || async {
        effects.slow_started.lock().unwrap().contains("s3")
    })
    .await;
    let release = Envelope::new(
        "InventoryReleaseCommand",
        1,
        "order-coordinator",
        json!({"saga_id": "s3", "order_id": "s3", "quantity": 4, "amount": 1.0}),
    );
    coordinator.publish_raw(&[release]).await.unwrap();
    eventually(LIMIT, "s3 reserved, then released", || async {
        effects.released.load(Ordering::SeqCst) == 4
    })
    .await;
    assert_eq!(effects.reserved.load(Ordering::SeqCst), 8);
    assert_eq!(effects.compensations_of("s3"), vec!["reserve_inventory"]);

    listener.shutdown().await.unwrap();
    stop(subs).await;
}

async fn thousand_concurrent_sagas_stay_consistent(backend: Backend) {
    const SAGAS: usize = 1000;
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(60));
    let effects = Arc::new(Effects::default());
    // Deterministic "random" failures spread over the three steps.
    let fail: FailWhen = Arc::new(|step, order_id| {
        let n: u64 = order_id.trim_start_matches("o").parse().unwrap_or(0);
        let h = n.wrapping_mul(2654435761) % 100;
        match step {
            "inventory" => h < 10,
            "payment" => (10..25).contains(&h),
            "shipping" => (25..35).contains(&h),
            _ => false,
        }
    });
    let subs = participants(&backend, &store, &saga, &effects, fail, true).await;
    let c1 = coordinator(&backend, &store, &saga, "c1").await;
    let c2 = coordinator(&backend, &store, &saga, "c2").await;
    let starts = (0..SAGAS).map(|i| {
        let (c, saga) = (if i % 2 == 0 { &c1 } else { &c2 }, &saga);
        async move {
            c.start(saga, &order(&format!("o{i}"), 1 + (i % 3) as i64))
                .await
        }
    });
    let ids: Vec<String> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids.len(), SAGAS);
    eventually(Duration::from_secs(60), "every saga final", || async {
        store.count(SagaStatus::Completed).await.unwrap()
            + store.count(SagaStatus::Failed).await.unwrap()
            == SAGAS as u64
    })
    .await;
    // Compensations without confirmation may still be in flight when the saga is final.
    eventually(LIMIT, "inventory consistent", || async {
        effects.reserved.load(Ordering::SeqCst)
            == effects.released.load(Ordering::SeqCst) + effects.shipped.load(Ordering::SeqCst)
    })
    .await;
    let completed = store.count(SagaStatus::Completed).await.unwrap();
    assert!(completed > 0 && completed < SAGAS as u64, "{completed}");
    assert_eq!(effects.double_reservations.load(Ordering::SeqCst), 0);
    assert_eq!(
        store.count(SagaStatus::Pending).await.unwrap()
            + store.count(SagaStatus::Compensating).await.unwrap(),
        0
    );
    c1.shutdown().await.unwrap();
    c2.shutdown().await.unwrap();
    stop(subs).await;
}

async fn typed_participant_round_trip(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let effects = Arc::new(Effects::default());
    let subs = participants(&backend, &store, &saga, &effects, never(), true).await;
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;

    let id = coordinator.start(&saga, &order("typed", 3)).await.unwrap();
    final_state(&store, &id).await;
    // The typed data: what the saga started with plus the reply field `Order` declares.
    let instance = coordinator.instance(&saga, &id).await.unwrap().unwrap();
    assert_eq!(instance.state.state, SagaStatus::Completed);
    assert_eq!(instance.data.order_id, "typed");
    assert_eq!(instance.data.quantity, 3);
    assert_eq!(instance.data.reservation_id.as_deref(), Some("res_typed"));
    // The typed commands got the saga data's fields.
    assert_eq!(effects.reserved.load(Ordering::SeqCst), 3);
    assert_eq!(effects.shipped.load(Ordering::SeqCst), 3);
    assert!(coordinator
        .instance(&saga, "no-such-saga")
        .await
        .unwrap()
        .is_none());

    coordinator.shutdown().await.unwrap();
    stop(subs).await;
}

/// Records every event of the given types, raw, as published.
async fn record_raw(
    backend: &Backend,
    event_types: &[&str],
) -> (
    eventbus_core::Subscription,
    Arc<std::sync::Mutex<Vec<Envelope<Value>>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut builder = EventBus::from_arc(backend.transport(), "wire-recorder")
        .subscribe()
        .start_from(eventbus_core::StartFrom::Beginning);
    for event_type in event_types {
        let seen = seen.clone();
        builder = builder.on_raw(event_type.to_string(), move |e: Envelope<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(e);
                Ok(())
            }
        });
    }
    (builder.start().await.unwrap(), seen)
}

/// The typed API puts on the bus exactly what the string-named one did (the article's
/// Python services read and write these): commands carry the saga data plus `saga_id`,
/// success replies their fields plus `saga_id`, failures `error` plus `saga_id`.
async fn typed_events_keep_the_wire_layout(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let effects = Arc::new(Effects::default());
    let fail: FailWhen = Arc::new(|step, _| step == "payment");
    let (recorder, seen) = record_raw(
        &backend,
        &[
            ReserveInventory::EVENT_TYPE,
            InventoryReserved::EVENT_TYPE,
            PaymentFailed::EVENT_TYPE,
            ReleaseInventory::EVENT_TYPE,
            RefundPayment::EVENT_TYPE,
        ],
    )
    .await;
    let subs = participants(&backend, &store, &saga, &effects, fail, true).await;
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;
    let id = coordinator.start(&saga, &order("wire", 2)).await.unwrap();
    let state = final_state(&store, &id).await;
    assert_eq!(state.state, SagaStatus::Failed);
    eventually(LIMIT, "four events recorded", || async {
        seen.lock().unwrap().len() >= 4
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let payload = |event_type: &str| -> Value {
        seen.iter()
            .find(|e| e.event_type == event_type)
            .unwrap_or_else(|| panic!("no {event_type} in {seen:?}"))
            .data
            .clone()
    };
    let data = json!({"saga_id": id, "order_id": "wire", "quantity": 2, "amount": 20.0});
    assert_eq!(payload("InventoryReserveCommand"), data);
    assert_eq!(
        payload("InventoryReserved"),
        json!({"saga_id": id, "reservation_id": "res_wire"})
    );
    assert_eq!(
        payload("PaymentFailed"),
        json!({"saga_id": id, "error": "card declined"})
    );
    // The compensation carries the data as merged so far.
    let mut merged = data.clone();
    merged["reservation_id"] = json!("res_wire");
    assert_eq!(payload("InventoryReleaseCommand"), merged);
    // A failed payment is not refunded: the coordinator compensates completed steps only.
    assert!(seen.iter().all(|e| e.event_type != "PaymentRefundCommand"));
    let command = seen
        .iter()
        .find(|e| e.event_type == "InventoryReserveCommand")
        .unwrap();
    assert_eq!(command.correlation_id.as_deref(), Some(id.as_str()));
    assert_eq!(command.source, "order-coordinator");

    recorder.shutdown().await.unwrap();
    coordinator.shutdown().await.unwrap();
    stop(subs).await;
}

/// A failed saga's last compensations can be published again (a timeout's transition is
/// not re-published by a redelivery, so an operator may need this).
async fn republish_resends_a_failed_sagas_last_compensations(backend: Backend) {
    let store = backend.saga_store();
    let saga = order_saga(Duration::from_secs(30));
    let effects = Arc::new(Effects::default());
    let fail: FailWhen = Arc::new(|step, _| step == "payment");
    let (recorder, seen) = record_raw(&backend, &[ReleaseInventory::EVENT_TYPE]).await;
    let subs = participants(&backend, &store, &saga, &effects, fail, true).await;
    let coordinator = coordinator(&backend, &store, &saga, "c1").await;
    let id = coordinator.start(&saga, &order("again", 1)).await.unwrap();
    assert_eq!(final_state(&store, &id).await.state, SagaStatus::Failed);
    assert!(coordinator.republish(&id).await.unwrap());
    eventually(LIMIT, "the release twice", || async {
        seen.lock().unwrap().len() == 2
    })
    .await;
    // Released once: the participant answers the repeat from its record.
    eventually(LIMIT, "the repeat answered from the record", || async {
        let inventory = effects.inventory.lock().unwrap().clone();
        inventory.is_some_and(|s| s.deduplicated() >= 1)
    })
    .await;
    assert_eq!(
        compensations(&effects, &id, 1).await,
        vec!["reserve_inventory"]
    );
    assert_eq!(effects.released.load(Ordering::SeqCst), 1);
    recorder.shutdown().await.unwrap();
    coordinator.shutdown().await.unwrap();
    stop(subs).await;
}

/// A command of no step of the order saga.
#[event(name = "OrderAuditCommand")]
#[derive(Debug)]
pub struct AuditOrder {
    /// The order to audit.
    pub order_id: String,
}

/// Runs `register`, expecting a panic: its message and the line it is reported at.
fn registration_panic(register: impl FnOnce()) -> (String, String, u32) {
    type Location = Option<(String, u32)>;
    let location: Arc<std::sync::Mutex<Location>> = Arc::default();
    let recorded = location.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(at) = info.location() {
            *recorded.lock().unwrap() = Some((at.file().to_string(), at.line()));
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(register));
    std::panic::set_hook(previous);
    let message = match outcome {
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default(),
        Ok(()) => panic!("the registration did not panic"),
    };
    let (file, line) = location.lock().unwrap().clone().unwrap_or_default();
    (message, file, line)
}

/// Both registration mistakes in one test: the panic hook is process-wide.
#[test]
fn registering_a_participant_for_another_saga_panics_at_the_call() {
    let saga = order_saga(Duration::from_secs(30));
    let participant = |service: &str| {
        Participant::new(
            EventBus::new(MemoryTransport::new(), service),
            eventbus_core::saga::MemorySagaStore::new(),
        )
    };

    // A command the saga doesn't have.
    let audit = participant("audit-service");
    let line = line!() + 2;
    let (message, file, at) = registration_panic(|| {
        drop(audit.step(
            &saga,
            |_cmd: AuditOrder, _ctx: SagaContext| async move {
                Ok(Reply::<InventoryReserved, InventoryReserveFailed>::Success(
                    InventoryReserved {
                        reservation_id: "r".into(),
                    },
                ))
            },
            |_cmd: ReleaseInventory, _ctx: SagaContext| async move { Ok(()) },
        ))
    });
    assert!(
        message.contains("saga `create_order` has no step whose command is `OrderAuditCommand`")
            && message.contains("AuditOrder"),
        "{message}"
    );
    assert!(file.ends_with("sagas.rs") && at == line, "{file}:{at}");

    // The right command, but another step's success event.
    let inventory = participant("inventory-service");
    let (message, file, _) = registration_panic(|| {
        drop(inventory.step(
            &saga,
            |_cmd: ReserveInventory, _ctx: SagaContext| async move {
                Ok(Reply::<PaymentProcessed, InventoryReserveFailed>::Success(
                    PaymentProcessed {
                        payment_id: "p".into(),
                    },
                ))
            },
            |_cmd: ReleaseInventory, _ctx: SagaContext| async move { Ok(()) },
        ))
    });
    assert!(
        message.contains(
            "step `reserve_inventory`: the success event is `InventoryReserved`, not \
             `PaymentProcessed`"
        ),
        "{message}"
    );
    assert!(file.ends_with("sagas.rs"), "{file}");
}

all_three!(
    typed_participant_round_trip,
    republish_resends_a_failed_sagas_last_compensations,
    typed_events_keep_the_wire_layout,
    happy_path,
    failure_at_each_step_compensates_completed_steps_in_reverse,
    step_timeout_compensates,
    duplicate_and_late_replies_are_ignored,
    start_with_id_is_unique_and_republish_resends,
    another_coordinator_finishes_a_saga,
    participants_are_idempotent_under_redelivery,
    thousand_concurrent_sagas_stay_consistent,
);
