//! The command and query buses, on Redis and on the in-memory transport.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::sync::Arc;
use std::time::Duration;

use eventbus_core::transport::{StartFrom, StreamTransport};
use eventbus_core::{
    command, command_handler, event, query, query_handler, CommandBus, CommandContext,
    CommandError, CommandServer, DispatchOptions, Emitted, Envelope, EventBus, QueryBus,
    QueryError, State,
};
use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::{all_three, both, Backend, RawConnection, RedisServer};
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
    ctx: CommandContext,
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
) -> Result<Emitted<u32, Vec<StockReserved>>, eventbus_core::NoRejection> {
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
async fn explode(_cmd: Explode) -> Result<(), eventbus_core::NoRejection> {
    panic!("kaboom")
}

async fn published(transport: &Arc<dyn StreamTransport>) -> Vec<Envelope<Value>> {
    eventbus_tests::published(transport).await
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
                ..DispatchOptions::default()
            },
        )
        .await
        .unwrap();
    let (created, reserved) = &out.output;
    assert_eq!(created.total, 15.5);
    assert_eq!(reserved.order_id, created.order_id);
    assert_eq!(out.entry_ids().count(), 2);

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
async fn get_total(q: GetTotal, totals: State<Totals>) -> Result<Option<f64>, QueryError> {
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

    // A resource never registered is a wiring mistake, refused when the handler is
    // registered, naming the missing type.
    let refused = std::panic::catch_unwind(|| QueryBus::new().handle(get_total))
        .expect_err("a handler of an unregistered resource is refused");
    let message = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("State<") && message.contains("Totals"),
        "{message}"
    );
}

// Remote commands.

#[command(output = u64, error = OrderError)]
struct Add {
    a: u64,
    b: u64,
}

fn adder(
    served: Arc<std::sync::Mutex<Vec<(u8, String)>>>,
    who: u8,
) -> impl Fn(Add, CommandContext) -> std::future::Ready<Result<u64, OrderError>> + Clone {
    move |cmd: Add, ctx: CommandContext| {
        served
            .lock()
            .unwrap()
            .push((who, ctx.command_id().to_string()));
        std::future::ready(if cmd.a == 0 && cmd.b == 0 {
            Err(OrderError::Empty)
        } else {
            Ok(cmd.a + cmd.b)
        })
    }
}

// Remote commands run on a cluster too: there a named stream is hash-tagged with its name
// (`{ns}:stream:cmd:math:{cmd:math}`), so a command and its dead letter share a slot.
all_three!(
    remote_commands_are_handled_once_by_one_instance,
    remote_command_to_nobody_times_out,
    client_shutdown_removes_its_reply_stream,
    malformed_command_is_dead_lettered_and_replayed,
);

/// A command entry that can't be decoded goes to the command group's dead letters at once
/// (on a cluster: the dead-letter stream tagged like the command stream, one script in one
/// slot), is listed with its origin, and a replay puts it back on the command stream.
async fn malformed_command_is_dead_lettered_and_replayed(backend: Backend) {
    let topic = eventbus_core::cqrs::command_topic("math");
    let served: Arc<std::sync::Mutex<Vec<(u8, String)>>> = Arc::default();
    let bus = CommandBus::new(EventBus::from_arc(backend.transport(), "math"))
        .handle(adder(served.clone(), 1));
    let server = CommandServer::new(bus).start().await.unwrap();
    backend.append_malformed(&topic).await;
    let transport = backend.transport();
    let letters = || async { transport.dead_letters("math-commands", 10).await.unwrap() };
    eventbus_tests::eventually(
        Duration::from_secs(10),
        "the malformed command dead-lettered",
        || async { !letters().await.is_empty() },
    )
    .await;
    let listed = letters().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].origin_topic, topic);
    let first = listed[0].origin_id.clone();
    let lag = transport.lag(Some("math-commands")).await.unwrap();
    assert!(
        lag.iter().any(|l| l.topic == topic && l.pending == 0),
        "{lag:?}"
    );
    // Replayed onto the command stream (a new entry), it is dead-lettered again: it is still
    // malformed.
    assert_eq!(
        transport
            .replay_dead_letters("math-commands", None)
            .await
            .unwrap(),
        1
    );
    eventbus_tests::eventually(
        Duration::from_secs(10),
        "the replayed command dead-lettered again",
        || async {
            let now = letters().await;
            now.len() == 1 && now[0].origin_id != first && now[0].origin_topic == topic
        },
    )
    .await;
    assert!(served.lock().unwrap().is_empty());
    server.shutdown().await.unwrap();
}

/// With its backend's `ReplyStreams`, a client's reply stream and group exist while it runs
/// and are gone after `shutdown`; a late reply doesn't bring them back.
async fn client_shutdown_removes_its_reply_stream(backend: Backend) {
    let client = eventbus_core::CommandClient::start_with(
        EventBus::from_arc(backend.transport(), "caller"),
        backend.reply_streams(),
        eventbus_core::DEFAULT_REPLY_TTL,
    )
    .await
    .unwrap();
    let topic = eventbus_core::cqrs::reply_topic(client.instance());
    let listed =
        |lag: Vec<eventbus_core::transport::GroupLag>| lag.iter().any(|l| l.topic == topic);
    assert!(listed(backend.transport().lag(None).await.unwrap()));
    client.shutdown().await.unwrap();
    assert!(!listed(backend.transport().lag(None).await.unwrap()));
    let late = Envelope::new(
        "CommandReply",
        1,
        "math",
        serde_json::json!({"command_id": "x"}),
    );
    let ids = backend
        .reply_streams()
        .reply(&topic, std::slice::from_ref(&late))
        .await
        .unwrap();
    assert!(ids.is_empty(), "a late reply is dropped");
    assert!(!listed(backend.transport().lag(None).await.unwrap()));
}

async fn remote_commands_are_handled_once_by_one_instance(backend: Backend) {
    let served: Arc<std::sync::Mutex<Vec<(u8, String)>>> = Arc::default();
    // Two instances of the math service share its command group.
    let mut instances = Vec::new();
    for who in [1u8, 2] {
        let bus = CommandBus::new(EventBus::from_arc(backend.transport(), "math"))
            .handle(adder(served.clone(), who));
        let sub = bus
            .events()
            .subscribe()
            .group("math-commands")
            .consumer_name(format!("math-{who}"))
            .configure(|o| o.batch_size = 4)
            .on_topic(eventbus_core::cqrs::command_topic("math"), {
                let server = CommandServer::new(bus.clone());
                move |e: Envelope<Value>, ctx: eventbus_core::Context| {
                    let server = server.clone();
                    async move { server.handle(e, ctx).await }
                }
            });
        instances.push(sub.start().await.unwrap());
    }
    let client =
        eventbus_core::CommandClient::start(EventBus::from_arc(backend.transport(), "caller"))
            .await
            .unwrap();
    let mut sends = Vec::new();
    for i in 0..20u64 {
        sends.push(client.send("math", Add { a: i, b: 1 }, Duration::from_secs(10)));
    }
    let results = futures_join_all(sends).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as u64 + 1);
    }
    let served = served.lock().unwrap().clone();
    assert_eq!(served.len(), 20, "each command handled exactly once");
    let ids: std::collections::HashSet<&String> = served.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 20);

    // A rejection comes back typed; an unknown command is NoHandler.
    match client
        .send("math", Add { a: 0, b: 0 }, Duration::from_secs(10))
        .await
    {
        Err(CommandError::Rejected(OrderError::Empty)) => {}
        other => panic!("expected the typed rejection, got {other:?}"),
    }
    match client
        .send(
            "math",
            CreateOrder { items: vec![1.0] },
            Duration::from_secs(10),
        )
        .await
    {
        Err(CommandError::NoHandler { command_type }) => assert_eq!(command_type, "CreateOrder"),
        other => panic!("expected NoHandler, got {other:?}"),
    }
    client.shutdown().await.unwrap();
    for sub in instances {
        sub.shutdown().await.unwrap();
    }
}

async fn remote_command_to_nobody_times_out(backend: Backend) {
    let client =
        eventbus_core::CommandClient::start(EventBus::from_arc(backend.transport(), "caller"))
            .await
            .unwrap();
    match client
        .send(
            "nobody-home",
            Add { a: 1, b: 1 },
            Duration::from_millis(300),
        )
        .await
    {
        Err(CommandError::Timeout(after)) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // A server that starts later finds the command expired and does not act on it.
    let served: Arc<std::sync::Mutex<Vec<(u8, String)>>> = Arc::default();
    let bus = CommandBus::new(EventBus::from_arc(backend.transport(), "nobody-home"))
        .handle(adder(served.clone(), 1));
    let sub = bus
        .events()
        .subscribe()
        .group("nobody-home-commands")
        .start_from(StartFrom::Beginning)
        .on_topic(eventbus_core::cqrs::command_topic("nobody-home"), {
            let server = CommandServer::new(bus.clone());
            move |e: Envelope<Value>, ctx: eventbus_core::Context| {
                let server = server.clone();
                async move { server.handle(e, ctx).await }
            }
        })
        .start()
        .await
        .unwrap();
    eventbus_tests::eventually(
        Duration::from_secs(10),
        "the expired command is consumed",
        || async {
            backend
                .transport()
                .lag(Some("nobody-home-commands"))
                .await
                .unwrap()
                .iter()
                .all(|l| l.lag == Some(0) && l.pending == 0)
        },
    )
    .await;
    assert!(
        served.lock().unwrap().is_empty(),
        "an expired command is not handled"
    );
    sub.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
}

async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut handles = Vec::new();
    for f in futures {
        handles.push(Box::pin(f));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

/// Whether a key exists, and its remaining time to live in ms (`-1`: none, `-2`: no key),
/// on the backend's server or cluster.
async fn key_state(backend: &Backend, key: &str) -> (bool, i64) {
    let Backend::Redis { server, .. } = backend else {
        unreachable!("Redis-only test")
    };
    let mut conn = RawConnection::to(server).await;
    let exists: i64 = conn.query(redis::cmd("EXISTS").arg(key)).await.unwrap();
    let pttl: i64 = conn.query(redis::cmd("PTTL").arg(key)).await.unwrap();
    (exists == 1, pttl)
}

/// The key of a client's reply stream (hash-tagged with its name on a cluster).
async fn reply_key(backend: &Backend, client: &eventbus_core::CommandClient) -> String {
    backend
        .stream_key(&eventbus_core::cqrs::reply_topic(client.instance()))
        .await
        .expect("a Redis backend")
}

fn redis_transport(backend: &Backend) -> RedisTransport {
    match backend {
        Backend::Redis { transport, .. } => transport.clone(),
        Backend::Memory(_) => unreachable!("Redis-only test"),
    }
}

/// Runs a Redis-only scenario on one server and on the cluster.
macro_rules! redis_and_cluster {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn redis() {
                    eventbus_tests::run_on_redis(stringify!($name), super::$name);
                }

                #[test]
                fn cluster() {
                    eventbus_tests::run_on_cluster(stringify!($name), super::$name);
                }
            }
        )*
    };
}

redis_and_cluster!(
    reply_stream_is_kept_while_the_client_runs_and_removed_on_shutdown,
    reply_stream_of_a_dropped_client_expires,
    a_plain_client_cleans_up_its_reply_stream,
);

/// A client's reply stream has a time to live, renewed while the client runs; shutdown
/// deletes it, and a late reply doesn't recreate it.
async fn reply_stream_is_kept_while_the_client_runs_and_removed_on_shutdown(backend: Backend) {
    let transport = redis_transport(&backend);
    let served: Arc<std::sync::Mutex<Vec<(u8, String)>>> = Arc::default();
    let commands =
        CommandBus::new(EventBus::from_arc(backend.transport(), "math")).handle(adder(served, 1));
    let server = CommandServer::new(commands).start().await.unwrap();
    let ttl = Duration::from_millis(400);
    let client = eventbus_core::CommandClient::start_with(
        EventBus::from_arc(backend.transport(), "caller"),
        Arc::new(transport.clone()),
        ttl,
    )
    .await
    .unwrap();
    let reply_topic = eventbus_core::cqrs::reply_topic(client.instance());
    let key = reply_key(&backend, &client).await;
    let (exists, pttl) = key_state(&backend, &key).await;
    assert!(exists && pttl > 0 && pttl <= 400, "{exists} {pttl}");

    // Renewed: still there well past one time to live.
    tokio::time::sleep(ttl * 3).await;
    let (exists, pttl) = key_state(&backend, &key).await;
    assert!(exists && pttl > 0, "{exists} {pttl}");
    let sum = client
        .send("math", Add { a: 2, b: 3 }, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(sum, 5);

    client.shutdown().await.unwrap();
    assert_eq!(
        key_state(&backend, &key).await,
        (false, -2),
        "removed on shutdown"
    );

    // A reply arriving after the client left is dropped, not appended to a new stream.
    let late = Envelope::new(
        "CommandReply",
        1,
        "math",
        serde_json::json!({"command_id": "x"}),
    );
    let ids =
        eventbus_core::ReplyStreams::reply(&transport, &reply_topic, std::slice::from_ref(&late))
            .await
            .unwrap();
    assert!(ids.is_empty());
    assert_eq!(
        key_state(&backend, &key).await,
        (false, -2),
        "not recreated by a late reply"
    );
    server.shutdown().await.unwrap();
}

/// A client dropped without shutdown (or whose process died) leaves its reply stream with a
/// time to live: it expires.
async fn reply_stream_of_a_dropped_client_expires(backend: Backend) {
    let transport = redis_transport(&backend);
    let ttl = Duration::from_millis(500);
    let client = eventbus_core::CommandClient::start_with(
        EventBus::from_arc(backend.transport(), "caller"),
        Arc::new(transport),
        ttl,
    )
    .await
    .unwrap();
    let key = reply_key(&backend, &client).await;
    drop(client);
    let (exists, pttl) = key_state(&backend, &key).await;
    assert!(exists && pttl > 0 && pttl <= 500, "{exists} {pttl}");
    eventbus_tests::eventually(
        Duration::from_secs(5),
        "the reply stream expired",
        || async { !key_state(&backend, &key).await.0 },
    )
    .await;
}

/// The plain `CommandClient::start` uses the backend's reply-stream life cycle: on Redis the
/// stream has a time to live while the client runs and is gone after shutdown.
async fn a_plain_client_cleans_up_its_reply_stream(backend: Backend) {
    let client =
        eventbus_core::CommandClient::start(EventBus::from_arc(backend.transport(), "caller"))
            .await
            .unwrap();
    let key = reply_key(&backend, &client).await;
    let (exists, pttl) = key_state(&backend, &key).await;
    let ttl = eventbus_core::DEFAULT_REPLY_TTL.as_millis() as i64;
    assert!(exists && pttl > 0 && pttl <= ttl, "{exists} {pttl}");
    client.shutdown().await.unwrap();
    assert_eq!(
        key_state(&backend, &key).await,
        (false, -2),
        "removed on shutdown"
    );
}
