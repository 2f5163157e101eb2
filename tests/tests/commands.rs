//! The command and query buses, on Redis and on the in-memory transport.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::sync::Arc;
use std::time::Duration;

use eventbus_core::transport::{ConsumerSpec, StartFrom, StreamTransport, Topic};
use eventbus_core::{
    command, command_handler, event, query, query_handler, BoxError, CommandBus, CommandContext,
    CommandError, DispatchOptions, Emitted, Envelope, EventBus, QueryBus, QueryError,
};
use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::{both, Backend, RedisServer};
use serde_json::Value;

#[event(name = "Test.OrderCreated")]
#[derive(Debug, Clone, PartialEq)]
struct OrderCreated {
    order_id: String,
    total: f64,
}

#[event(name = "Test.StockReserved")]
#[derive(Debug, Clone, PartialEq)]
struct StockReserved {
    order_id: String,
}

#[derive(Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum OrderError {
    #[error("an order needs at least one item")]
    Empty,
}

#[command(output = (OrderCreated, StockReserved), error = OrderError)]
struct CreateOrder {
    items: Vec<f64>,
}

#[command(output = Emitted<u32, Vec<StockReserved>>)]
struct ReserveMany {
    order_ids: Vec<String>,
}

#[command]
struct Explode;

#[command_handler]
async fn create_order(
    cmd: CreateOrder,
    ctx: &CommandContext,
) -> Result<(OrderCreated, StockReserved), OrderError> {
    if cmd.items.is_empty() {
        return Err(OrderError::Empty);
    }
    let order_id = ctx.new_id();
    Ok((
        OrderCreated {
            order_id: order_id.clone(),
            total: cmd.items.iter().sum(),
        },
        StockReserved { order_id },
    ))
}

#[command_handler]
async fn reserve_many(
    cmd: ReserveMany,
) -> Result<Emitted<u32, Vec<StockReserved>>, std::convert::Infallible> {
    Ok(Emitted {
        value: cmd.order_ids.len() as u32,
        events: cmd
            .order_ids
            .into_iter()
            .map(|order_id| StockReserved { order_id })
            .collect(),
    })
}

#[command_handler]
async fn explode(_cmd: Explode) -> Result<(), std::convert::Infallible> {
    panic!("kaboom")
}

/// Everything published so far, read from the global stream by a fresh group.
async fn published(transport: &Arc<dyn StreamTransport>) -> Vec<Envelope<Value>> {
    let group = format!("inspect-{}", uuid::Uuid::new_v4().simple());
    transport
        .ensure_group(&Topic::All, &group, StartFrom::Beginning)
        .await
        .unwrap();
    let consumer = transport
        .consumer(ConsumerSpec {
            group,
            consumer: "inspector".into(),
            topics: vec![Topic::All],
        })
        .await
        .unwrap();
    consumer
        .read(1000, Duration::from_millis(50))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event.unwrap())
        .collect()
}

fn commands(backend: &Backend) -> CommandBus {
    CommandBus::new(EventBus::from_arc(backend.transport(), "order-service"))
        .handle(create_order)
        .handle(reserve_many)
        .handle(explode)
}

both!(
    accepted_command_publishes_its_events_correlated,
    rejected_command_publishes_nothing,
    command_without_handler_is_a_typed_error,
    panicking_handler_is_an_error_not_a_crash,
    emitted_value_and_events,
);

async fn accepted_command_publishes_its_events_correlated(backend: Backend) {
    let bus = commands(&backend);
    let out = bus
        .dispatch_with(
            CreateOrder {
                items: vec![10.0, 5.5],
            },
            DispatchOptions {
                correlation_id: Some("checkout-7".into()),
                causation_id: None,
            },
        )
        .await
        .unwrap();
    let (created, reserved) = &out.output;
    assert_eq!(created.total, 15.5);
    assert_eq!(reserved.order_id, created.order_id);
    assert_eq!(out.entry_ids.len(), 2);

    let events = published(&backend.transport()).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type, "Test.OrderCreated");
    assert_eq!(events[1].event_type, "Test.StockReserved");
    for e in &events {
        assert_eq!(e.source, "order-service");
        assert_eq!(e.correlation_id.as_deref(), Some("checkout-7"));
        assert_eq!(e.causation_id.as_deref(), Some(out.command_id.as_str()));
    }
    assert_eq!(
        events[0].data["order_id"],
        Value::String(created.order_id.clone())
    );

    // Without a caller's correlation id the command starts a flow named by its id.
    let out = bus
        .dispatch_with(CreateOrder { items: vec![1.0] }, DispatchOptions::default())
        .await
        .unwrap();
    let events = published(&backend.transport()).await;
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[2].correlation_id.as_deref(),
        Some(out.command_id.as_str())
    );
}

async fn rejected_command_publishes_nothing(backend: Backend) {
    let bus = commands(&backend);
    let err = bus
        .dispatch(CreateOrder { items: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(&OrderError::Empty));
    assert!(published(&backend.transport()).await.is_empty());
}

async fn command_without_handler_is_a_typed_error(backend: Backend) {
    let bus = CommandBus::new(EventBus::from_arc(backend.transport(), "empty"));
    match bus.dispatch(CreateOrder { items: vec![1.0] }).await {
        Err(CommandError::NoHandler { command_type }) => assert_eq!(command_type, "CreateOrder"),
        other => panic!("expected NoHandler, got {other:?}"),
    }
    let queries = QueryBus::new();
    match queries
        .query(GetTotal {
            order_id: "x".into(),
        })
        .await
    {
        Err(QueryError::NoHandler { query_type }) => assert_eq!(query_type, "GetTotal"),
        other => panic!("expected NoHandler, got {other:?}"),
    }
}

async fn panicking_handler_is_an_error_not_a_crash(backend: Backend) {
    let bus = commands(&backend);
    match bus.dispatch(Explode).await {
        Err(CommandError::Panicked(msg)) => assert!(msg.contains("kaboom")),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The bus still works.
    bus.dispatch(CreateOrder { items: vec![1.0] })
        .await
        .unwrap();
}

async fn emitted_value_and_events(backend: Backend) {
    let bus = commands(&backend);
    let n = bus
        .dispatch(ReserveMany {
            order_ids: vec!["a".into(), "b".into(), "c".into()],
        })
        .await
        .unwrap();
    assert_eq!(n.value, 3);
    let events = published(&backend.transport()).await;
    let ids: Vec<&Value> = events.iter().map(|e| &e.data["order_id"]).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[tokio::test]
async fn publish_failure_is_an_infrastructure_error() {
    let server = RedisServer::start(&[]).await;
    let transport = RedisTransport::connect(RedisConfig::new(&server.url()).unwrap())
        .await
        .unwrap();
    let bus = CommandBus::new(EventBus::new(transport, "orders")).handle(create_order);
    drop(server); // the server goes away after the handler is wired
    match bus.dispatch(CreateOrder { items: vec![1.0] }).await {
        Err(CommandError::Publish(e)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected a publish error, got {other:?}"),
    }
}

// Queries.

struct Totals(std::collections::HashMap<String, f64>);

#[query(output = Option<f64>)]
struct GetTotal {
    order_id: String,
}

#[query_handler]
async fn get_total(q: GetTotal, totals: &Totals) -> Result<Option<f64>, BoxError> {
    Ok(totals.0.get(&q.order_id).copied())
}

#[tokio::test]
async fn query_handler_reads_a_registered_resource() {
    let queries = QueryBus::new()
        .resource(Totals([("o1".to_string(), 9.5)].into_iter().collect()))
        .handle(get_total);
    assert_eq!(
        queries
            .query(GetTotal {
                order_id: "o1".into()
            })
            .await
            .unwrap(),
        Some(9.5)
    );
    assert_eq!(
        queries
            .query(GetTotal {
                order_id: "o2".into()
            })
            .await
            .unwrap(),
        None
    );

    let unwired = QueryBus::new().handle(get_total);
    match unwired
        .query(GetTotal {
            order_id: "o1".into(),
        })
        .await
    {
        Err(QueryError::MissingResource { type_name }) => assert!(type_name.ends_with("Totals")),
        other => panic!("expected MissingResource, got {other:?}"),
    }
}
