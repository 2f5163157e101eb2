//! The README's "Your first service", verbatim: an order service on Redis. A service, not a
//! demo: it runs until Ctrl-C and keeps what it wrote (so it takes no `--keep`).
use eventbus_redis::prelude::*;

#[event(name = "OrderCreated")]
#[derive(Debug, Clone)]
struct OrderCreated {
    order_id: String,
    customer_id: String,
    total: f64,
}

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum OrderError {
    #[error("an order needs a positive total")]
    NotPositive,
}

#[command(output = OrderCreated, error = OrderError)]
struct CreateOrder {
    customer_id: String,
    total: f64,
}

#[command_handler]
async fn create_order(cmd: CreateOrder, ctx: CommandContext) -> Result<OrderCreated, OrderError> {
    if cmd.total <= 0.0 {
        return Err(OrderError::NotPositive); // rejected: nothing is published
    }
    Ok(OrderCreated {
        order_id: ctx.new_id(),
        customer_id: cmd.customer_id,
        total: cmd.total,
    })
}

/// The read model: a Redis hash `orders:summary:{order_id}`, as the article's services read it.
#[projection(hash = "orders:summary:{order_id}")]
#[derive(Debug)]
struct OrderSummary {
    #[set(from = OrderCreated)]
    order_id: String,
    #[set(from = OrderCreated)]
    total: f64,
}

#[query(output = Option<OrderSummary>)]
struct GetOrder {
    order_id: String,
}

#[query_handler]
async fn get_order(
    q: GetOrder,
    models: State<ReadModels>,
) -> Result<Option<OrderSummary>, QueryError> {
    Ok(OrderSummary::load(&models, &q.order_id).await?)
}

/// Shared state for handlers, registered once with `.state(...)`.
struct Mailer {
    from: String,
}

/// Reacts to every `OrderCreated`, at least once, in the group `order-service-consumers`.
async fn confirm(order: OrderCreated, mailer: State<Mailer>) -> Result<(), HandlerError> {
    println!(
        "{} confirms order {} to {}",
        mailer.from, order.order_id, order.customer_id
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = App::builder("order-service")
        .redis(RedisConfig::from_env()?) // REDIS_URL, or redis://127.0.0.1:6379
        .state(Mailer {
            from: "shop@example.com".into(),
        })
        .command(create_order)
        .projection(OrderSummary::projection())
        .query(get_order)
        .on(confirm)
        .start()
        .await?;

    let created = app
        .dispatch(CreateOrder {
            customer_id: "cust_1".into(),
            total: 99.5,
        })
        .await?;
    // Read your own write: wait until the projection applied the command's event.
    let summary = app
        .query_after(
            &created.receipt,
            GetOrder {
                order_id: created.order_id.clone(),
            },
        )
        .await?;
    if let Some(summary) = summary {
        println!("order {} totals {}", summary.order_id, summary.total);
    }

    app.run().await?; // until Ctrl-C or SIGTERM: stop intake, drain in-flight handlers, ack
    Ok(())
}
