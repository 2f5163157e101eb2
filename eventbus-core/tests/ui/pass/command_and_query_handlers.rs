use std::sync::Arc;

use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::{
    command, command_handler, event, query, query_handler, CommandBus, CommandContext, EventBus,
    QueryBus, QueryContext, QueryError, State,
};

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCreated {
    pub order_id: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCancelled {
    pub order_id: String,
}

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum OrderError {
    #[error("an order needs items")]
    Empty,
}

#[command(output = OrderCreated, error = OrderError)]
pub struct CreateOrder {
    pub items: Vec<String>,
}

#[command(name = "Orders.Cancel", output = OrderCancelled, error = OrderError)]
pub struct CancelOrder {
    pub order_id: String,
}

#[command]
pub struct Ping;

/// Creates an order.
#[command_handler]
pub async fn create_order(cmd: CreateOrder, ctx: CommandContext) -> Result<OrderCreated, OrderError> {
    if cmd.items.is_empty() {
        return Err(OrderError::Empty);
    }
    Ok(OrderCreated { order_id: ctx.new_id() })
}

#[command_handler]
async fn ping(_cmd: Ping) -> Result<(), eventbus_core::NoRejection> {
    Ok(())
}

pub struct Orders {
    prefix: String,
}

#[command_handler]
impl Orders {
    async fn cancel(&self, cmd: CancelOrder, _ctx: &CommandContext) -> Result<OrderCancelled, OrderError> {
        Ok(OrderCancelled { order_id: format!("{}{}", self.prefix, cmd.order_id) })
    }
}

pub struct Names(Vec<&'static str>);

#[query(output = Option<String>)]
pub struct GetName {
    pub index: usize,
}

#[query(output = usize)]
pub struct CountNames;

#[query_handler]
async fn get_name(q: GetName, names: State<Names>) -> Result<Option<String>, QueryError> {
    Ok(names.0.get(q.index).map(|s| s.to_string()))
}

#[query_handler]
async fn count_names(_q: CountNames, ctx: QueryContext) -> Result<usize, eventbus_core::QueryError> {
    Ok(ctx.require::<Names>()?.0.len())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let commands = CommandBus::new(EventBus::new(MemoryTransport::new(), "orders"))
        .handle(create_order)
        .handle(ping)
        .handlers(Arc::new(Orders { prefix: "x-".into() }));
    let created = commands.dispatch(CreateOrder { items: vec!["a".into()] }).await.unwrap();
    assert!(!created.order_id.is_empty());
    assert!(commands.dispatch(CreateOrder { items: vec![] }).await.is_err());
    let cancelled = commands.dispatch(CancelOrder { order_id: "1".into() }).await.unwrap();
    assert_eq!(cancelled.order_id, "x-1");
    commands.dispatch(Ping).await.unwrap();
    // A handler fn stays a plain fn: callable directly, e.g. in a unit test.
    assert!(ping(Ping).await.is_ok());
    assert_eq!(<CancelOrder as eventbus_core::Command>::COMMAND_TYPE, "Orders.Cancel");

    let queries = QueryBus::new().resource(Names(vec!["ada", "grace"])).handle(get_name).handle(count_names);
    assert_eq!(queries.query(GetName { index: 1 }).await.unwrap().as_deref(), Some("grace"));
    assert_eq!(queries.query(CountNames).await.unwrap(), 2);
}
