//! The order saga of the reference article, with in-process inventory, payment and shipping
//! participants whose effects the tests check.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::saga::{
    CoordinatorOptions, Participant, ParticipantStats, Reply, SagaContext, SagaCoordinator,
    SagaDefinition, SagaStep, SagaStore,
};
use eventbus_core::{event, EventBus, HandlerError, Subscription};
use eventbus_tests::Backend;
use serde::{Deserialize, Serialize};

/// The saga data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub quantity: i64,
    pub amount: f64,
    /// Set by the inventory's success reply (absent when the saga starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
}

/// Which step's participant answers with a failure for an order.
pub type FailWhen = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

pub fn never() -> FailWhen {
    Arc::new(|_, _| false)
}

// The article's events, by their wire names. Commands carry the fields of the saga data
// their participant needs; failures carry `error`.

#[event(name = "InventoryReserveCommand")]
#[derive(Debug)]
pub struct ReserveInventory {
    pub order_id: String,
    pub quantity: i64,
}

#[event]
#[derive(Debug)]
pub struct InventoryReserved {
    pub reservation_id: String,
}

#[event]
#[derive(Debug)]
pub struct InventoryReserveFailed {
    pub error: String,
}

#[event(name = "InventoryReleaseCommand")]
#[derive(Debug)]
pub struct ReleaseInventory {
    pub order_id: String,
    pub quantity: i64,
}

#[event(name = "PaymentProcessCommand")]
#[derive(Debug)]
pub struct ProcessPayment {
    pub order_id: String,
    pub amount: f64,
}

#[event]
#[derive(Debug)]
pub struct PaymentProcessed {
    pub payment_id: String,
}

#[event]
#[derive(Debug)]
pub struct PaymentFailed {
    pub error: String,
}

#[event(name = "PaymentRefundCommand")]
#[derive(Debug)]
pub struct RefundPayment {
    pub order_id: String,
    pub amount: f64,
}

#[event]
#[derive(Debug)]
pub struct PaymentRefunded {}

#[event(name = "ShipmentCreateCommand")]
#[derive(Debug)]
pub struct CreateShipment {
    pub order_id: String,
    pub quantity: i64,
}

#[event]
#[derive(Debug)]
pub struct ShipmentCreated {
    pub tracking: String,
}

#[event]
#[derive(Debug)]
pub struct ShipmentFailed {
    pub error: String,
}

#[event(name = "ShipmentCancelCommand")]
#[derive(Debug)]
pub struct CancelShipment {
    pub order_id: String,
    pub quantity: i64,
}

/// The article's three steps; payment confirms refunds (`PaymentRefunded`), and shipping
/// has a timeout.
pub fn order_saga(shipping_timeout: Duration) -> SagaDefinition<Order> {
    SagaDefinition::new("create_order")
        .step(
            SagaStep::new("reserve_inventory")
                .command::<ReserveInventory>()
                .success::<InventoryReserved>()
                .failure::<InventoryReserveFailed>()
                .compensation::<ReleaseInventory>(),
        )
        .step(
            SagaStep::new("process_payment")
                .command::<ProcessPayment>()
                .success::<PaymentProcessed>()
                .failure::<PaymentFailed>()
                .compensation::<RefundPayment>()
                .compensated::<PaymentRefunded>(),
        )
        .step(
            SagaStep::new("create_shipment")
                .command::<CreateShipment>()
                .success::<ShipmentCreated>()
                .failure::<ShipmentFailed>()
                .compensation::<CancelShipment>()
                .timeout(shipping_timeout),
        )
}

/// What the participants did.
#[derive(Default)]
pub struct Effects {
    pub reserved: AtomicI64,
    pub released: AtomicI64,
    pub charged: AtomicU64,
    pub refunded: AtomicU64,
    pub shipped: AtomicI64,
    pub cancelled: AtomicI64,
    /// Compensation handlers run, in order: `(saga_id, step)`.
    pub compensations: Mutex<Vec<(String, String)>>,
    /// Reservations by saga, to catch double reservations.
    pub reservations: Mutex<HashSet<String>>,
    /// Reservations made a second time for the same saga (must stay 0).
    pub double_reservations: AtomicU64,
    /// Reserve commands that take 300 ms (compensation-overtakes-command test).
    pub slow: Mutex<HashSet<String>>,
    /// Slow reserve commands whose handler has started.
    pub slow_started: Mutex<HashSet<String>>,
    /// The inventory participant's counters.
    pub inventory: Mutex<Option<Arc<ParticipantStats>>>,
    /// Reserve commands that fail once before succeeding (redelivery test).
    pub flaky: Mutex<HashSet<String>>,
}

impl Effects {
    pub fn compensations_of(&self, saga_id: &str) -> Vec<String> {
        self.compensations
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id == saga_id)
            .map(|(_, step)| step.clone())
            .collect()
    }

    /// Commands and compensations the inventory skipped (compensation first, or nothing
    /// to undo).
    pub fn inventory_cancelled(&self) -> u64 {
        self.inventory
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |s| s.cancelled())
    }

    fn compensated(&self, saga_id: &str, step: &str) {
        self.compensations
            .lock()
            .unwrap()
            .push((saga_id.to_string(), step.to_string()));
    }
}

pub fn bus(backend: &Backend, service: &str) -> EventBus {
    EventBus::from_arc(backend.transport(), service)
}

/// Starts a coordinator instance named `instance`.
pub async fn coordinator(
    backend: &Backend,
    store: &Arc<dyn SagaStore>,
    saga: &SagaDefinition<Order>,
    instance: &str,
) -> SagaCoordinator {
    let instance = instance.to_string();
    SagaCoordinator::builder_with(bus(backend, "order-coordinator"), store.clone())
        .saga(saga)
        .options(CoordinatorOptions {
            timeout_poll: Duration::from_millis(50),
            compensation_retry: Duration::from_secs(2),
            ..CoordinatorOptions::default()
        })
        .consumer_name(instance)
        .configure_subscription(|o| {
            o.concurrency = 64;
            o.block = Duration::from_millis(200);
        })
        .start()
        .await
        .expect("start the coordinator")
}

/// Starts the participants; `with_shipping: false` leaves shipping commands unanswered.
pub async fn participants(
    backend: &Backend,
    store: &Arc<dyn SagaStore>,
    saga: &SagaDefinition<Order>,
    effects: &Arc<Effects>,
    fail: FailWhen,
    with_shipping: bool,
) -> Vec<Subscription> {
    let tune = |o: &mut eventbus_core::SubscriptionOptions| {
        o.concurrency = 64;
        o.order_by = eventbus_core::OrderBy::Unordered;
        o.block = Duration::from_millis(200);
        o.retry_backoff = eventbus_core::Backoff::constant(Duration::from_millis(20));
    };
    let (e1, e2, f1) = (effects.clone(), effects.clone(), fail.clone());
    let inventory = Participant::with_store(bus(backend, "inventory-service"), store.clone())
        .step(
            saga,
            move |cmd: ReserveInventory, ctx: SagaContext| {
                let (effects, fail) = (e1.clone(), f1.clone());
                async move {
                    let saga_id = ctx.saga_id().to_string();
                    let slow = effects.slow.lock().unwrap().contains(&saga_id);
                    if slow {
                        effects.slow_started.lock().unwrap().insert(saga_id.clone());
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    if effects.flaky.lock().unwrap().remove(&saga_id) {
                        return Err(HandlerError::retryable("inventory database hiccup"));
                    }
                    if fail("inventory", &cmd.order_id) {
                        return Ok(Reply::Failure(InventoryReserveFailed {
                            error: "out of stock".into(),
                        }));
                    }
                    if !effects.reservations.lock().unwrap().insert(saga_id) {
                        effects.double_reservations.fetch_add(1, Ordering::SeqCst);
                    }
                    effects.reserved.fetch_add(cmd.quantity, Ordering::SeqCst);
                    Ok(Reply::Success(InventoryReserved {
                        reservation_id: format!("res_{}", cmd.order_id),
                    }))
                }
            },
            move |cmd: ReleaseInventory, ctx: SagaContext| {
                let effects = e2.clone();
                async move {
                    effects.released.fetch_add(cmd.quantity, Ordering::SeqCst);
                    effects.compensated(ctx.saga_id(), "reserve_inventory");
                    Ok(())
                }
            },
        )
        .configure_subscription(tune);
    *effects.inventory.lock().unwrap() = Some(inventory.stats());
    let inventory = inventory.start().await.expect("start inventory");
    let (e1, e2, f1) = (effects.clone(), effects.clone(), fail.clone());
    let payment = Participant::with_store(bus(backend, "payment-service"), store.clone())
        .step(
            saga,
            move |cmd: ProcessPayment, _ctx: SagaContext| {
                let (effects, fail) = (e1.clone(), f1.clone());
                async move {
                    if fail("payment", &cmd.order_id) {
                        return Ok(Reply::Failure(PaymentFailed {
                            error: "card declined".into(),
                        }));
                    }
                    effects.charged.fetch_add(1, Ordering::SeqCst);
                    Ok(Reply::Success(PaymentProcessed {
                        payment_id: format!("pay_{}", cmd.order_id),
                    }))
                }
            },
            move |_cmd: RefundPayment, ctx: SagaContext| {
                let effects = e2.clone();
                async move {
                    effects.refunded.fetch_add(1, Ordering::SeqCst);
                    effects.compensated(ctx.saga_id(), "process_payment");
                    Ok(PaymentRefunded {})
                }
            },
        )
        .configure_subscription(tune)
        .start()
        .await
        .expect("start payment");
    let mut subs = vec![inventory, payment];
    if with_shipping {
        let (e1, e2, f1) = (effects.clone(), effects.clone(), fail);
        let shipping = Participant::with_store(bus(backend, "shipping-service"), store.clone())
            .step(
                saga,
                move |cmd: CreateShipment, _ctx: SagaContext| {
                    let (effects, fail) = (e1.clone(), f1.clone());
                    async move {
                        if fail("shipping", &cmd.order_id) {
                            return Ok(Reply::Failure(ShipmentFailed {
                                error: "no courier available".into(),
                            }));
                        }
                        effects.shipped.fetch_add(cmd.quantity, Ordering::SeqCst);
                        Ok(Reply::Success(ShipmentCreated {
                            tracking: format!("trk_{}", cmd.order_id),
                        }))
                    }
                },
                move |cmd: CancelShipment, ctx: SagaContext| {
                    let effects = e2.clone();
                    async move {
                        effects.cancelled.fetch_add(cmd.quantity, Ordering::SeqCst);
                        effects.compensated(ctx.saga_id(), "create_shipment");
                        Ok(())
                    }
                },
            )
            .configure_subscription(tune)
            .start()
            .await
            .expect("start shipping");
        subs.push(shipping);
    }
    subs
}

pub async fn stop(subs: Vec<Subscription>) {
    for s in subs {
        s.shutdown().await.expect("shutdown");
    }
}
