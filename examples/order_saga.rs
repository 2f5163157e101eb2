//! The reference article's order saga, made safe: an order coordinator plus inventory,
//! payment and shipping services in one process, printing the flow as it happens.
//!
//! ```text
//! cargo run --example order_saga                        # ord_1 succeeds, ord_2's payment is declined
//! cargo run --example order_saga -- --fail shipping     # ord_2 fails at shipping instead
//! cargo run --example order_saga -- --timeout shipping  # ord_2's shipment never answers in time
//! cargo run --example order_saga -- --in-memory         # in memory even if a Redis answers
//! cargo run --example order_saga -- --namespace demo1 --keep   # keep the keys to inspect them
//! cargo run --example order_saga -- --namespace demo1 --resume # finish what a killed run left
//! ```
//!
//! With no Redis answering at 127.0.0.1:6379 and neither `REDIS_URL` nor `--url` set, it runs
//! in memory and says so. Against Redis every key the demo writes lives under its
//! namespace (`--namespace`, default `demo-saga-{pid}`): the streams and groups, the
//! participants' records, and the saga state, which the store puts at `{ns}:saga:{id}`
//! instead of the article's un-namespaced `saga:{id}` (`RedisSagaStore::with_state_prefix`).
//! The keys are deleted at the end unless `--keep`; then inspect them with
//! `eventbus --namespace NS saga list --saga-prefix NS:saga:`.
//!
//! Kill a run (`kill -9`) while a saga is under way and run again with `--resume` and the
//! same namespace: the coordinator and the services start again, start no new saga, and
//! carry the unfinished ones to their end (replies the dead run's consumers held are
//! recovered, deadlines are in Redis, participants are idempotent by saga and step).

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use eventbus_core::saga::{
    MemorySagaStore, Participant, ParticipantOptions, Reply, SagaContext, SagaCoordinator,
    SagaDefinition, SagaState, SagaStatus, SagaStep, SagaStore,
};
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::transport::StreamTransport;
use eventbus_core::{event, Envelope, EventBus, OrderBy, StartFrom, Subscription};
use eventbus_redis::{RedisConfig, RedisSagaStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Run on the in-memory backend, even with `--url` or `REDIS_URL` set.
    #[arg(long)]
    in_memory: bool,
    /// Keep the demo's keys in Redis for inspection (prints the namespace).
    #[arg(long, conflicts_with = "in_memory")]
    keep: bool,
    /// The namespace of every key the demo writes (default: `demo-saga-{pid}`).
    #[arg(long, conflicts_with = "in_memory")]
    namespace: Option<String>,
    /// Start no saga: carry on the unfinished sagas a killed run left in `--namespace`.
    #[arg(long, requires = "namespace")]
    resume: bool,
    /// Redis URL (must answer). Without it or `REDIS_URL`: the Redis at
    /// redis://127.0.0.1:6379 if one answers, else the in-memory backend.
    #[arg(long, env = "REDIS_URL")]
    url: Option<String>,
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

// The article's events, by their wire names. Each command carries the saga data plus
// `saga_id`; its type declares the fields its service needs.

/// Reserve stock for an order.
#[event(name = "InventoryReserveCommand")]
struct ReserveInventory {
    order_id: String,
    sku: String,
    quantity: i64,
}

/// Stock reserved.
#[event]
struct InventoryReserved {
    reservation_id: String,
}

/// No stock reserved.
#[event]
struct InventoryReserveFailed {
    error: String,
}

/// Put the reserved stock back.
#[event(name = "InventoryReleaseCommand")]
struct ReleaseInventory {
    sku: String,
    quantity: i64,
}

/// Charge the customer.
#[event(name = "PaymentProcessCommand")]
struct ProcessPayment {
    order_id: String,
    amount: f64,
}

/// Charged.
#[event]
struct PaymentProcessed {
    payment_id: String,
}

/// Not charged.
#[event]
struct PaymentFailed {
    error: String,
}

/// Give the money back.
#[event(name = "PaymentRefundCommand")]
struct RefundPayment {
    amount: f64,
}

/// The money is back (the coordinator awaits this before releasing stock).
#[event]
struct PaymentRefunded {}

/// Ship the order.
#[event(name = "ShipmentCreateCommand")]
struct CreateShipment {
    order_id: String,
    sku: String,
    quantity: i64,
}

/// Shipped.
#[event]
struct ShipmentCreated {
    tracking: String,
}

/// Not shipped.
#[event]
struct ShipmentFailed {
    error: String,
}

/// Call the shipment off.
#[event(name = "ShipmentCancelCommand")]
struct CancelShipment {
    order_id: String,
    quantity: i64,
}

fn order_saga() -> SagaDefinition<Order> {
    SagaDefinition::new("create_order")
        .step(
            SagaStep::new("reserve_inventory")
                .command::<ReserveInventory>()
                .success::<InventoryReserved>()
                .failure::<InventoryReserveFailed>()
                .compensation::<ReleaseInventory>()
                .timeout(STEP_TIMEOUT),
        )
        .step(
            SagaStep::new("process_payment")
                .command::<ProcessPayment>()
                .success::<PaymentProcessed>()
                .failure::<PaymentFailed>()
                .compensation::<RefundPayment>()
                .compensated::<PaymentRefunded>() // the coordinator awaits refunds
                .timeout(STEP_TIMEOUT),
        )
        .step(
            SagaStep::new("create_shipment")
                .command::<CreateShipment>()
                .success::<ShipmentCreated>()
                .failure::<ShipmentFailed>()
                .compensation::<CancelShipment>()
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

async fn start_participants(
    bus: &dyn Fn(&str) -> EventBus,
    store: &Arc<dyn SagaStore>,
    saga: &SagaDefinition<Order>,
    demo: &Arc<Demo>,
) -> anyhow::Result<Vec<Subscription>> {
    let quick = |o: &mut eventbus_core::SubscriptionOptions| {
        o.block = Duration::from_millis(200);
        o.retry_backoff = eventbus_core::Backoff::constant(Duration::from_millis(300));
        o.max_deliveries = 20;
    };
    // A step claimed by a run that was killed is free again after the lease: keep it short
    // (the slowest handler here takes 3 s) so that `--resume` doesn't wait a minute.
    let options = ParticipantOptions {
        lease: Duration::from_secs(5),
        ..ParticipantOptions::default()
    };
    let participant = |service: &str| {
        Participant::with_store(bus(service), store.clone())
            .options(options.clone())
            .configure_subscription(quick)
    };
    let (d1, d2) = (demo.clone(), demo.clone());
    let inventory = participant("inventory-service")
        .step(
            saga,
            move |cmd: ReserveInventory, _ctx: SagaContext| {
                let demo = d1.clone();
                async move {
                    demo.maybe_late(&cmd.order_id, Step::Inventory).await;
                    let mut w = demo.warehouse();
                    if demo.trouble_for(&cmd.order_id, Step::Inventory) == Some(false) {
                        let error = format!("{} is on hold", cmd.sku);
                        return Ok(Reply::Failure(InventoryReserveFailed { error }));
                    }
                    let available = w.stock.get(&cmd.sku).copied().unwrap_or(0);
                    if available < cmd.quantity {
                        let error = format!("only {available} {} in stock", cmd.sku);
                        return Ok(Reply::Failure(InventoryReserveFailed { error }));
                    }
                    w.stock.insert(cmd.sku.clone(), available - cmd.quantity);
                    w.reserved += cmd.quantity;
                    println!(
                        "{}     inventory: reserved {} {}",
                        demo.at(),
                        cmd.quantity,
                        cmd.sku
                    );
                    Ok(Reply::Success(InventoryReserved {
                        reservation_id: format!("res_{}", cmd.order_id),
                    }))
                }
            },
            move |cmd: ReleaseInventory, _ctx: SagaContext| {
                let demo = d2.clone();
                async move {
                    let mut w = demo.warehouse();
                    *w.stock.entry(cmd.sku.clone()).or_default() += cmd.quantity;
                    w.released += cmd.quantity;
                    println!(
                        "{}     inventory: released {} {}",
                        demo.at(),
                        cmd.quantity,
                        cmd.sku
                    );
                    Ok(())
                }
            },
        )
        .start()
        .await?;
    let (d1, d2) = (demo.clone(), demo.clone());
    let payment = participant("payment-service")
        .step(
            saga,
            move |cmd: ProcessPayment, _ctx: SagaContext| {
                let demo = d1.clone();
                async move {
                    demo.maybe_late(&cmd.order_id, Step::Payment).await;
                    if demo.trouble_for(&cmd.order_id, Step::Payment) == Some(false) {
                        let error = format!("card declined for {:.2}", cmd.amount);
                        return Ok(Reply::Failure(PaymentFailed { error }));
                    }
                    println!("{}     payment: charged {:.2}", demo.at(), cmd.amount);
                    Ok(Reply::Success(PaymentProcessed {
                        payment_id: format!("pay_{}", cmd.order_id),
                    }))
                }
            },
            move |cmd: RefundPayment, _ctx: SagaContext| {
                let demo = d2.clone();
                async move {
                    println!("{}     payment: refunded {:.2}", demo.at(), cmd.amount);
                    Ok(PaymentRefunded {})
                }
            },
        )
        .start()
        .await?;
    let (d1, d2) = (demo.clone(), demo.clone());
    let shipping = participant("shipping-service")
        .step(
            saga,
            move |cmd: CreateShipment, _ctx: SagaContext| {
                let demo = d1.clone();
                async move {
                    demo.maybe_late(&cmd.order_id, Step::Shipping).await;
                    if demo.trouble_for(&cmd.order_id, Step::Shipping) == Some(false) {
                        let error = "no courier available".to_string();
                        return Ok(Reply::Failure(ShipmentFailed { error }));
                    }
                    demo.warehouse().shipped += cmd.quantity;
                    println!(
                        "{}     shipping: shipped {} {}",
                        demo.at(),
                        cmd.quantity,
                        cmd.sku
                    );
                    Ok(Reply::Success(ShipmentCreated {
                        tracking: format!("trk_{}", cmd.order_id),
                    }))
                }
            },
            move |cmd: CancelShipment, _ctx: SagaContext| {
                let demo = d2.clone();
                async move {
                    // The goods go back to the shelf with the inventory's release.
                    demo.warehouse().shipped -= cmd.quantity;
                    println!(
                        "{}     shipping: cancelled shipment of {}",
                        demo.at(),
                        cmd.order_id
                    );
                    Ok(())
                }
            },
        )
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

/// How long a saga may take to finish (a resumed one may wait for a dead run's step lease).
const FINISH_WITHIN: Duration = Duration::from_secs(60);

async fn wait_final(store: &Arc<dyn SagaStore>, saga_id: &str) -> anyhow::Result<SagaState> {
    let deadline = Instant::now() + FINISH_WITHIN;
    loop {
        if let Some(state) = store.load(saga_id).await? {
            if state.state.is_final() {
                // Let the monitor print the last events.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Ok(state);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("saga {saga_id} did not finish within {FINISH_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every consumer group has handled and acknowledged everything (up to
/// [`FINISH_WITHIN`]).
async fn wait_idle(transport: &dyn StreamTransport) -> anyhow::Result<()> {
    let deadline = Instant::now() + FINISH_WITHIN;
    loop {
        let groups = transport.lag(None).await?;
        if groups.iter().all(|g| g.pending == 0 && g.lag == Some(0)) {
            // Let the monitor print the last events.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the services are still busy after {FINISH_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo's backend: a Redis namespace of its own, or in memory.
struct Backend {
    transport: Arc<dyn StreamTransport>,
    store: Arc<dyn SagaStore>,
    redis: Option<(eventbus_redis::RedisTransport, RedisSagaStore)>,
}

async fn backend(args: &Args, namespace: &str) -> anyhow::Result<Backend> {
    let wants_redis = args.keep || args.namespace.is_some() || args.resume;
    let url = common::redis_url(
        "order_saga",
        args.in_memory,
        args.url.as_deref(),
        wants_redis,
    );
    let Some(url) = url else {
        return Ok(Backend {
            transport: Arc::new(MemoryTransport::new()),
            store: Arc::new(MemorySagaStore::new()),
            redis: None,
        });
    };
    let config = RedisConfig::new(&url)?.namespace(namespace);
    let transport = common::connect_or_exit(config).await;
    // Saga state under the namespace too, not at the article's shared `saga:{id}`.
    let store = RedisSagaStore::new(&transport).with_state_prefix(format!("{namespace}:saga:"));
    Ok(Backend {
        transport: Arc::new(transport.clone()),
        store: Arc::new(store.clone()),
        redis: Some((transport, store)),
    })
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
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| format!("demo-saga-{}", std::process::id()));
    let Backend {
        transport,
        store,
        redis,
    } = backend(&args, &namespace).await?;
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
    match &redis {
        Some(_) => println!(
            "order saga on {} (namespace {namespace})",
            transport.describe()
        ),
        None => println!("order saga on {}", transport.describe()),
    }
    let saga = order_saga();
    let monitor = start_monitor(bus("saga-monitor"), demo.clone()).await?;
    let participants = start_participants(&bus, &store, &saga, &demo).await?;
    let coordinator = SagaCoordinator::builder_with(bus("order-coordinator"), store.clone())
        .saga(&saga)
        .timeout_poll(Duration::from_millis(100))
        .configure_subscription(|o| o.block = Duration::from_millis(200))
        .start()
        .await?;

    let finished = if args.resume {
        resume(&store, &demo).await?
    } else {
        run_orders(&coordinator, &saga, &store, &demo, trouble_step, late).await?
    };
    if late {
        // The slow service still answers: its late reply is ignored, and its compensation
        // (which waited for the command to finish) undoes what it did.
        println!("\n(waiting for the late {trouble_step:?} answer)");
    }
    // Compensations without a confirmation may still be running (a final saga doesn't
    // wait for them), and so may a late or recovered command: wait for the services.
    wait_idle(transport.as_ref()).await?;
    print_summary(&finished, &demo);
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
            println!(
                "kept namespace {namespace}: eventbus --namespace {namespace} saga list \
                 --saga-prefix {namespace}:saga:"
            );
        } else {
            store.delete_all().await?;
            transport.delete_namespace().await?;
        }
    }
    Ok(())
}

/// Runs the two orders, one after the other; the second one misbehaves.
async fn run_orders(
    coordinator: &SagaCoordinator,
    saga: &SagaDefinition<Order>,
    store: &Arc<dyn SagaStore>,
    demo: &Demo,
    trouble_step: Step,
    late: bool,
) -> anyhow::Result<Vec<SagaState>> {
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
        let saga_id = start_order(coordinator, saga, order, demo).await?;
        finished.push(wait_final(store, &saga_id).await?);
    }
    Ok(finished)
}

/// Waits for every saga of the namespace that is not final yet (a killed run's).
async fn resume(store: &Arc<dyn SagaStore>, demo: &Demo) -> anyhow::Result<Vec<SagaState>> {
    let mut open = Vec::new();
    for status in SagaStatus::ALL.into_iter().filter(|s| !s.is_final()) {
        open.extend(store.list(status, 10_000).await?);
    }
    println!(
        "\n== resuming {} unfinished saga(s) (the warehouse is this process's memory: its \
         counts start afresh)",
        open.len()
    );
    for state in &open {
        let order = state
            .data
            .get("order_id")
            .and_then(Value::as_str)
            .unwrap_or("?");
        demo.orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(state.saga_id.clone(), order.to_string());
        println!(
            "{order}  saga {}  {} at {}",
            state.saga_id, state.state, state.current_step
        );
    }
    let mut finished = Vec::new();
    for state in &open {
        finished.push(wait_final(store, &state.saga_id).await?);
    }
    Ok(finished)
}

fn print_summary(finished: &[SagaState], demo: &Demo) {
    println!("\n== summary");
    for state in finished {
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
