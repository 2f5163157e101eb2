//! The reference article's Pattern 5 (CQRS) in Rust: `CreateOrder` → `OrderCreated` → the
//! read models `orders:summary:{order_id}` (hash) and `customers:{customer_id}:orders`
//! (list), with the article's key templates and field names → a `GetOrder` query answers
//! from them. A Python service reading those keys sees the same data.
//!
//! ```text
//! cargo run --example cqrs_orders                # $REDIS_URL, else a local Redis, else in memory
//! cargo run --example cqrs_orders -- --in-memory # in memory even if a Redis answers
//! cargo run --example cqrs_orders -- --keep      # keep the keys, print their namespace
//! ```
//!
//! Every key it writes is in its own namespace, deleted at the end (also when it fails)
//! unless `--keep`. So the read models are under the prefix `{namespace}:read:`
//! (`{namespace}:read:orders:summary:{order_id}`); a service wired with
//! `AppBuilderExt::redis` instead writes them at the article's exact keys.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use eventbus_core::{
    command, command_handler, event, projection, query, query_handler, App, CommandContext,
    CommandError, QueryError, ReadModel, ReadModels, State,
};
use eventbus_redis::AppBuilderExt;

#[derive(Parser)]
#[command(about = "eventbus CQRS demo (the article's Pattern 5)")]
struct Args {
    #[command(flatten)]
    backend: common::Backend,
}

/// One order line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Item {
    sku: String,
    price: f64,
    qty: u32,
}

/// An order was created.
#[event]
#[derive(Debug, Clone)]
struct OrderCreated {
    order_id: String,
    customer_id: String,
    items: Vec<Item>,
    total: f64,
}

/// An order was shipped.
#[event]
#[derive(Debug, Clone)]
struct OrderShipped {
    order_id: String,
}

/// Why an order is refused.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum OrderError {
    #[error("an order needs at least one item")]
    NoItems,
}

/// Place an order.
#[command(output = OrderCreated, error = OrderError)]
struct CreateOrder {
    customer_id: String,
    items: Vec<Item>,
}

/// Ship an order.
#[command(output = OrderShipped)]
struct ShipOrder {
    order_id: String,
}

#[command_handler]
async fn create_order(cmd: CreateOrder, ctx: CommandContext) -> Result<OrderCreated, OrderError> {
    if cmd.items.is_empty() {
        return Err(OrderError::NoItems);
    }
    let total = cmd.items.iter().map(|i| i.price * f64::from(i.qty)).sum();
    Ok(OrderCreated {
        order_id: ctx.new_id(),
        customer_id: cmd.customer_id,
        items: cmd.items,
        total,
    })
}

#[command_handler]
async fn ship_order(cmd: ShipOrder) -> Result<OrderShipped, eventbus_core::NoRejection> {
    Ok(OrderShipped {
        order_id: cmd.order_id,
    })
}

/// The article's order summary hash.
#[projection(hash = "orders:summary:{order_id}")]
#[derive(Debug)]
struct OrderSummary {
    #[set(from = OrderCreated)]
    order_id: String,
    #[set(from = OrderCreated)]
    customer_id: String,
    #[set(from = OrderCreated)]
    total: f64,
    #[set(OrderCreated = "created", OrderShipped = "shipped")]
    status: String,
    #[timestamp(OrderCreated)]
    created_at: Option<f64>,
    #[timestamp(OrderShipped)]
    shipped_at: Option<f64>,
}

/// The article's per-customer order list (newest first, LPUSH).
#[projection(list = "customers:{customer_id}:orders", push = order_id, on = OrderCreated)]
struct CustomerOrders;

/// Look up an order.
#[query(output = Option<OrderSummary>)]
struct GetOrder {
    order_id: String,
}

/// A customer's orders, newest first.
#[query(output = Vec<String>)]
struct GetCustomerOrders {
    customer_id: String,
}

#[query_handler]
async fn get_order(
    q: GetOrder,
    models: State<ReadModels>,
) -> Result<Option<OrderSummary>, QueryError> {
    Ok(OrderSummary::load(&models, &q.order_id).await?)
}

#[query_handler]
async fn get_customer_orders(
    q: GetCustomerOrders,
    models: State<ReadModels>,
) -> Result<Vec<String>, QueryError> {
    Ok(CustomerOrders::list(&models, &q.customer_id, ..).await?)
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
    let scratch = args.backend.connect("cqrs_orders", |c| c).await?;
    let outcome = scratch.until_interrupted(run(&scratch)).await;
    scratch.finish(outcome).await
}

async fn run(scratch: &common::Scratch) -> anyhow::Result<()> {
    let builder = App::builder("order-service");
    let builder = match scratch.redis() {
        // Without the prefix, read models are at the article's exact keys.
        Some(t) => builder
            .redis(t)
            .read_model_prefix(scratch.read_model_prefix()),
        None => builder.in_memory(),
    };
    let app = builder
        .command(create_order)
        .command(ship_order)
        .projection(OrderSummary::projection())
        .projection(CustomerOrders::projection())
        .query(get_order)
        .query(get_customer_orders)
        .start()
        .await?;
    println!("backend: {}", scratch.describe());

    // Whatever happens, the app stops before the namespace is deleted.
    let outcome = place_and_query(&app, scratch).await;
    app.shutdown().await?;
    outcome
}

/// Orders, a rejection, a shipment, then what the read models say.
async fn place_and_query(app: &App, scratch: &common::Scratch) -> anyhow::Result<()> {
    let customer = "cust_42".to_owned();
    let items = vec![
        Item {
            sku: "book".into(),
            price: 12.5,
            qty: 2,
        },
        Item {
            sku: "pen".into(),
            price: 1.25,
            qty: 4,
        },
    ];
    let created = app
        .dispatch(CreateOrder {
            customer_id: customer.clone(),
            items,
        })
        .await?;
    println!(
        "CreateOrder      -> OrderCreated {} total {:.2}",
        created.order_id, created.total
    );
    match app
        .dispatch(CreateOrder {
            customer_id: customer.clone(),
            items: vec![],
        })
        .await
    {
        Err(CommandError::Rejected(why)) => {
            println!("CreateOrder([])  -> rejected: {why} (nothing published)")
        }
        Err(e) => anyhow::bail!("an empty order failed instead of being rejected: {e}"),
        Ok(order) => anyhow::bail!("an empty order was accepted as {}", order.order_id),
    }
    let second = app
        .dispatch(CreateOrder {
            customer_id: customer.clone(),
            items: vec![Item {
                sku: "lamp".into(),
                price: 30.0,
                qty: 1,
            }],
        })
        .await?;
    let shipped = app
        .dispatch(ShipOrder {
            order_id: created.order_id.clone(),
        })
        .await?;
    println!("ShipOrder        -> OrderShipped {}", created.order_id);

    // Read models are eventually consistent; `query_after` reads our own write: it waits
    // until the projections applied the ShipOrder's event.
    let summary = app
        .query_after(
            &shipped.receipt,
            GetOrder {
                order_id: created.order_id.clone(),
            },
        )
        .await?;
    anyhow::ensure!(
        summary.as_ref().is_some_and(|s| s.status == "shipped"),
        "read-your-writes: the order reads as shipped"
    );
    if let Some(s) = &summary {
        println!(
            "GetOrder         -> order {} of {}: total {:.2}, status {}, created at {:.3}, shipped at {:.3}",
            s.order_id,
            s.customer_id,
            s.total,
            s.status,
            s.created_at.unwrap_or_default(),
            s.shipped_at.unwrap_or_default()
        );
    }
    let orders = app
        .query_after(
            &second.receipt,
            GetCustomerOrders {
                customer_id: customer.clone(),
            },
        )
        .await?;
    println!("GetCustomerOrders-> {}", orders.join(", "));
    anyhow::ensure!(
        orders.contains(&second.order_id),
        "the customer list has the second order"
    );

    // What a Python service reading the article's keys sees (here under the prefix).
    if scratch.redis().is_some() {
        let prefix = scratch.read_model_prefix();
        let summary_key = format!("{prefix}{}", OrderSummary::key(&created.order_id));
        let list_key = format!("{prefix}customers:{customer}:orders");
        let mut raw = scratch.raw().await?;
        let hash: Vec<(String, String)> =
            raw.query(redis::cmd("HGETALL").arg(&summary_key)).await?;
        let fields: Vec<String> = hash.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("HGETALL {summary_key}: {}", fields.join(" "));
        let list: Vec<String> = raw
            .query(redis::cmd("LRANGE").arg(&list_key).arg(0).arg(-1))
            .await?;
        println!("LRANGE {list_key} 0 -1: {}", list.join(" "));
    }
    Ok(())
}
