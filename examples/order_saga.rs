//! The reference article's order saga, made safe: an order coordinator plus inventory,
//! payment and shipping services in one process, printing the flow as it happens.
//!
//! ```text
//! cargo run --example order_saga                        # ord_1 succeeds, ord_2's payment is declined
//! cargo run --example order_saga -- --fail shipping     # ord_2 fails at shipping instead
//! cargo run --example order_saga -- --timeout shipping  # ord_2's shipment never answers in time
//! cargo run --example order_saga -- --in-memory         # no Redis needed
//! ```
//!
//! Against Redis (`REDIS_URL`, default local) it runs in a namespace of its own, deleted at
//! the end unless `--keep` (then inspect with `eventbus --namespace … saga list`).

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use eventbus_core::saga::{
    MemorySagaStore, Participant, SagaCommand, SagaCoordinator, SagaDefinition, SagaState,
    SagaStatus, SagaStep, SagaStore, StepReply,
};
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::transport::StreamTransport;
use eventbus_core::{Envelope, EventBus, HandlerError, OrderBy, StartFrom, Subscription};
use eventbus_redis::{RedisConfig, RedisSagaStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A step of the order saga, as chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Step {
    Inventory,
    Payment,
    Shipping,
}

#[derive(Parser)]
#[command(about = "eventbus order saga demo: coordinator, inventory, payment and shipping")]
struct Args {
    /// Make this step fail for the second order (default: payment is declined).
    #[arg(long, value_enum)]
    fail: Option<Step>,
    /// Make this step answer too late for the second order (its timeout is 2 s).
    #[arg(long, value_enum, conflicts_with = "fail")]
    timeout: Option<Step>,
    /// Run on the in-memory backend instead of Redis.
    #[arg(long)]
    in_memory: bool,
    /// Keep the demo's keys in Redis for inspection.
    #[arg(long)]
    keep: bool,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    url: String,
}

/// The saga data.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: String,
    sku: String,
    quantity: i64,
    amount: f64,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(2);

fn order_saga() -> SagaDefinition<Order> {
    SagaDefinition::new("create_order")
        .step(
            SagaStep::new("reserve_inventory")
                .command_type("InventoryReserveCommand")
                .success_type("InventoryReserved")
                .failure_type("InventoryReserveFailed")
                .compensation_type("InventoryReleaseCommand")
                .timeout(STEP_TIMEOUT),
        )
        .step(
            SagaStep::new("process_payment")
                .command_type("PaymentProcessCommand")
                .success_type("PaymentProcessed")
                .failure_type("PaymentFailed")
                .compensation_type("PaymentRefundCommand")
                .compensated_type("PaymentRefunded") // the coordinator awaits refunds
                .timeout(STEP_TIMEOUT),
        )
        .step(
            SagaStep::new("create_shipment")
                .command_type("ShipmentCreateCommand")
                .success_type("ShipmentCreated")
                .failure_type("ShipmentFailed")
                .compensation_type("ShipmentCancelCommand")
                .timeout(STEP_TIMEOUT),
        )
}

/// The warehouse: stock per SKU and what happened to it.
#[derive(Default)]
struct Warehouse {
    stock: BTreeMap<String, i64>,
    reserved: i64,
    released: i64,
    shipped: i64,
}

/// What the demo shares between its services.
struct Demo {
    started: Instant,
    warehouse: Mutex<Warehouse>,
    /// Which order misbehaves, where, and how.
    trouble: Option<(String, Step, bool)>,
    orders: Mutex<HashMap<String, String>>,
}

impl Demo {
    fn at(&self) -> String {
        format!("{:>7.3}s", self.started.elapsed().as_secs_f64())
    }

    fn order_of(&self, saga_id: &str) -> String {
        let orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        orders.get(saga_id).cloned().unwrap_or_else(|| "?".into())
    }

    /// Whether `step` must fail (`Some(false)`) or be late (`Some(true)`) for `order`.
    fn trouble_for(&self, order: &str, step: Step) -> Option<bool> {
        match &self.trouble {
            Some((o, s, late)) if o == order && *s == step => Some(*late),
            _ => None,
        }
    }

    fn warehouse(&self) -> std::sync::MutexGuard<'_, Warehouse> {
        self.warehouse.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps past the step's timeout when this order is to be late at `step`.
    async fn maybe_late(&self, order: &str, step: Step) {
        if self.trouble_for(order, step) == Some(true) {
            println!(
                "{}     {step:?} is slow for {order} (answers after 3 s)",
                self.at()
            );
            tokio::time::sleep(STEP_TIMEOUT + Duration::from_secs(1)).await;
        }
    }
}

fn order_of(cmd: &SagaCommand) -> Result<Order, HandlerError> {
    cmd.data_as::<Order>()
}

async fn start_participants(
    bus: &dyn Fn(&str) -> EventBus,
    store: &Arc<dyn SagaStore>,
    demo: &Arc<Demo>,
) -> anyhow::Result<Vec<Subscription>> {
    let saga = order_saga();
    let steps = saga.steps();
    let quick = |o: &mut eventbus_core::SubscriptionOptions| {
        o.block = Duration::from_millis(200);
        o.retry_backoff = eventbus_core::Backoff::constant(Duration::from_millis(300));
        o.max_deliveries = 20;
    };
    let (d1, d2) = (demo.clone(), demo.clone());
    let inventory = Participant::with_store(bus("inventory-service"), store.clone())
        .step_raw(
            &steps[0],
            move |cmd| {
                let demo = d1.clone();
                async move {
                    let order = order_of(&cmd)?;
                    demo.maybe_late(&order.order_id, Step::Inventory).await;
                    let mut w = demo.warehouse();
                    if demo.trouble_for(&order.order_id, Step::Inventory) == Some(false) {
                        return Ok(StepReply::failure(format!("{} is on hold", order.sku)));
                    }
                    let available = w.stock.get(&order.sku).copied().unwrap_or(0);
                    if available < order.quantity {
                        return Ok(StepReply::failure(format!(
                            "only {available} {} in stock",
                            order.sku
                        )));
                    }
                    w.stock
                        .insert(order.sku.clone(), available - order.quantity);
                    w.reserved += order.quantity;
                    println!(
                        "{}     inventory: reserved {} {}",
                        demo.at(),
                        order.quantity,
                        order.sku
                    );
                    Ok(StepReply::success(
                        json!({"reservation_id": format!("res_{}", order.order_id)}),
                    ))
                }
            },
            move |cmd| {
                let demo = d2.clone();
                async move {
                    let order = order_of(&cmd)?;
                    let mut w = demo.warehouse();
                    *w.stock.entry(order.sku.clone()).or_default() += order.quantity;
                    w.released += order.quantity;
                    println!(
                        "{}     inventory: released {} {}",
                        demo.at(),
                        order.quantity,
                        order.sku
                    );
                    Ok(())
                }
            },
        )
        .configure_subscription(quick)
        .start()
        .await?;
    let (d1, d2) = (demo.clone(), demo.clone());
    let payment = Participant::with_store(bus("payment-service"), store.clone())
        .step_raw(
            &steps[1],
            move |cmd| {
                let demo = d1.clone();
                async move {
                    let order = order_of(&cmd)?;
                    demo.maybe_late(&order.order_id, Step::Payment).await;
                    if demo.trouble_for(&order.order_id, Step::Payment) == Some(false) {
                        return Ok(StepReply::failure(format!(
                            "card declined for {:.2}",
                            order.amount
                        )));
                    }
                    println!("{}     payment: charged {:.2}", demo.at(), order.amount);
                    Ok(StepReply::success(
                        json!({"payment_id": format!("pay_{}", order.order_id)}),
                    ))
                }
            },
            move |cmd| {
                let demo = d2.clone();
                async move {
                    let order = order_of(&cmd)?;
                    println!("{}     payment: refunded {:.2}", demo.at(), order.amount);
                    Ok(())
                }
            },
        )
        .configure_subscription(quick)
        .start()
        .await?;
    let (d1, d2) = (demo.clone(), demo.clone());
    let shipping = Participant::with_store(bus("shipping-service"), store.clone())
        .step_raw(
            &steps[2],
            move |cmd| {
                let demo = d1.clone();
                async move {
                    let order = order_of(&cmd)?;
                    demo.maybe_late(&order.order_id, Step::Shipping).await;
                    if demo.trouble_for(&order.order_id, Step::Shipping) == Some(false) {
                        return Ok(StepReply::failure("no courier available"));
                    }
                    demo.warehouse().shipped += order.quantity;
                    println!(
                        "{}     shipping: shipped {} {}",
                        demo.at(),
                        order.quantity,
                        order.sku
                    );
                    Ok(StepReply::success(
                        json!({"tracking": format!("trk_{}", order.order_id)}),
                    ))
                }
            },
            move |cmd| {
                let demo = d2.clone();
                async move {
                    let order = order_of(&cmd)?;
                    // The goods go back to the shelf with the inventory's release.
                    demo.warehouse().shipped -= order.quantity;
                    println!(
                        "{}     shipping: cancelled shipment of {}",
                        demo.at(),
                        order.order_id
                    );
                    Ok(())
                }
            },
        )
        .configure_subscription(quick)
        .start()
        .await?;
    Ok(vec![inventory, payment, shipping])
}

/// Prints every event on the bus as it flows (a consumer of the global stream).
async fn start_monitor(bus: EventBus, demo: Arc<Demo>) -> anyhow::Result<Subscription> {
    let sub = bus
        .subscribe()
        .start_from(StartFrom::New)
        .order_by(OrderBy::Stream)
        .configure(|o| o.block = Duration::from_millis(100))
        .on_all(move |e: Envelope<Value>| {
            let demo = demo.clone();
            async move {
                let saga_id = e.data.get("saga_id").and_then(Value::as_str).unwrap_or("");
                let extra = e
                    .data
                    .get("error")
                    .and_then(Value::as_str)
                    .map(|err| format!("  error: {err}"))
                    .unwrap_or_default();
                println!(
                    "{}  {:<18} → {:<24} {}{extra}",
                    demo.at(),
                    e.source,
                    e.event_type,
                    demo.order_of(saga_id)
                );
                Ok(())
            }
        })
        .start()
        .await?;
    Ok(sub)
}

async fn wait_final(store: &Arc<dyn SagaStore>, saga_id: &str) -> anyhow::Result<SagaState> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(state) = store.load(saga_id).await? {
            if state.state.is_final() {
                // Let the monitor print the last events.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Ok(state);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("saga {saga_id} did not finish within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let args = Args::parse();
    let namespace = format!("demo-saga-{}", std::process::id());
    let (transport, store, redis): (Arc<dyn StreamTransport>, Arc<dyn SagaStore>, _) =
        if args.in_memory {
            (
                Arc::new(MemoryTransport::new()),
                Arc::new(MemorySagaStore::new()),
                None,
            )
        } else {
            let config = RedisConfig::new(&args.url)?.namespace(namespace.clone());
            {
                let t = common::connect_or_exit(config).await;
                let store = RedisSagaStore::new(&t);
                (
                    Arc::new(t.clone()),
                    Arc::new(store.clone()),
                    Some((t, store)),
                )
            }
        };
    let bus = |service: &str| EventBus::from_arc(transport.clone(), service);
    let (trouble_step, late) = match (args.fail, args.timeout) {
        (Some(step), _) => (step, false),
        (None, Some(step)) => (step, true),
        (None, None) => (Step::Payment, false),
    };
    let demo = Arc::new(Demo {
        started: Instant::now(),
        warehouse: Mutex::new(Warehouse {
            stock: [("widget".to_string(), 10), ("gadget".to_string(), 5)].into(),
            ..Warehouse::default()
        }),
        trouble: Some(("ord_2".into(), trouble_step, late)),
        orders: Mutex::new(HashMap::new()),
    });
    println!("order saga on {}", transport.describe());
    let saga = order_saga();
    let monitor = start_monitor(bus("saga-monitor"), demo.clone()).await?;
    let participants = start_participants(&bus, &store, &demo).await?;
    let coordinator = SagaCoordinator::builder_with(bus("order-coordinator"), store.clone())
        .saga(&saga)
        .timeout_poll(Duration::from_millis(100))
        .configure_subscription(|o| o.block = Duration::from_millis(200))
        .start()
        .await?;

    let orders = [
        Order {
            order_id: "ord_1".into(),
            sku: "widget".into(),
            quantity: 2,
            amount: 99.99,
        },
        Order {
            order_id: "ord_2".into(),
            sku: "gadget".into(),
            quantity: 1,
            amount: 249.50,
        },
    ];
    let what = if late { "times out" } else { "fails" };
    let mut finished = Vec::new();
    for order in &orders {
        let note = if order.order_id == "ord_2" {
            format!(" ({trouble_step:?} {what})")
        } else {
            String::new()
        };
        println!(
            "\n== {}: {} × {}{note}",
            order.order_id, order.quantity, order.sku
        );
        let saga_id = start_order(&coordinator, &saga, order, &demo).await?;
        finished.push(wait_final(&store, &saga_id).await?);
    }

    if late {
        // The slow service still answers: its late reply is ignored, and its compensation
        // (which waited for the command to finish) undoes what it did.
        println!("\n(waiting for the late {trouble_step:?} answer)");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    println!("\n== summary");
    for state in &finished {
        let order = demo.order_of(&state.saga_id);
        let outcome = match (&state.state, &state.error) {
            (SagaStatus::Failed, Some(e)) => format!("failed: {e}"),
            (s, _) => s.to_string(),
        };
        println!("{order}  saga {}  {outcome}", state.saga_id);
        for h in &state.history {
            println!(
                "    +{:.3}s  {:<18} {}",
                h.timestamp - state.started_at,
                h.step,
                h.action
            );
        }
    }
    // Compensations without a confirmation may still be running: give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let w = demo.warehouse();
        let stock: Vec<String> = w.stock.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "inventory: {}  (reserved {} = released {} + shipped {})",
            stock.join(", "),
            w.reserved,
            w.released,
            w.shipped
        );
    }
    let stats = coordinator.stats();
    println!(
        "coordinator: {} started, {} completed, {} failed, {} timeouts, {} replies ignored",
        stats.started(),
        stats.completed(),
        stats.failed(),
        stats.timeouts(),
        stats.ignored()
    );
    coordinator.shutdown().await?;
    for p in participants {
        p.shutdown().await?;
    }
    monitor.shutdown().await?;
    if let Some((transport, store)) = redis {
        if args.keep {
            println!("kept: eventbus --namespace {namespace} saga list");
        } else {
            store.delete_all().await?;
            transport.delete_namespace().await?;
        }
    }
    Ok(())
}

/// Starts the saga for an order and remembers which order the saga id belongs to.
async fn start_order(
    coordinator: &SagaCoordinator,
    saga: &SagaDefinition<Order>,
    order: &Order,
    demo: &Demo,
) -> anyhow::Result<String> {
    let saga_id = eventbus_core::envelope::new_id();
    demo.orders
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(saga_id.clone(), order.order_id.clone());
    coordinator.start_with_id(saga, &saga_id, order).await?;
    Ok(saga_id)
}
