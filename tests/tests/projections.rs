//! Projections on Redis and in memory: declarative read models, the article's key layout,
//! effectively-once commits, rebuilds, lag and dead letters.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::time::Duration;

use eventbus_core::projection::{
    Commit, CommitTarget, Committed, CustomProjection, ProjectionRunner, ReadModel, ReadModelOp,
};
use eventbus_core::transport::{ConsumerSpec, StartFrom, Topic};
use eventbus_core::{event, projection, Envelope, EventBus, ReadModels};
use eventbus_tests::{both, eventually, raw_connection, Backend};

#[event(name = "PrjOrderCreated")]
#[derive(Debug, Clone)]
struct OrderCreated {
    order_id: String,
    customer_id: String,
    total: f64,
}

#[event(name = "PrjOrderShipped")]
#[derive(Debug, Clone)]
struct OrderShipped {
    order_id: String,
    carrier: String,
}

#[event(name = "PrjItemAdded")]
#[derive(Debug, Clone)]
struct ItemAdded {
    order_id: String,
    customer_id: String,
    sku: String,
    price: f64,
}

#[event(name = "PrjOrderCancelled")]
#[derive(Debug, Clone)]
struct OrderCancelled {
    order_id: String,
    customer_id: String,
}

#[projection(hash = "orders:summary:{order_id}", delete_on = OrderCancelled)]
#[derive(Debug, Clone, PartialEq)]
struct OrderSummary {
    #[set(from = OrderCreated)]
    order_id: String,
    #[set(from = OrderCreated)]
    customer_id: String,
    #[set(from = OrderCreated)]
    total: f64,
    #[set(OrderCreated = "created", OrderShipped = "shipped")]
    status: String,
    #[set(from = OrderShipped)]
    carrier: Option<String>,
    #[timestamp(OrderShipped)]
    shipped_at: Option<f64>,
    #[incr(ItemAdded)]
    items: i64,
    #[incr(ItemAdded, by = price)]
    items_value: f64,
}

#[projection(list = "customers:{customer_id}:orders", push = order_id, on = OrderCreated,
             remove_on = OrderCancelled, max_len = 3)]
struct CustomerOrders;

#[projection(set = "orders:{order_id}:skus", add = sku, on = ItemAdded)]
struct OrderSkus;

#[projection(counter = "orders:count:{customer_id}", on = OrderCreated, decr_on = OrderCancelled)]
struct OrderCount;

const WAIT: Duration = Duration::from_secs(15);

fn created(order: &str, customer: &str, total: f64) -> OrderCreated {
    OrderCreated {
        order_id: order.into(),
        customer_id: customer.into(),
        total,
    }
}

async fn start(
    bus: &EventBus,
    models: &ReadModels,
    p: impl eventbus_core::Projection,
) -> eventbus_core::projection::RunningProjection {
    ProjectionRunner::new(bus, models, p)
        .configure(|o| {
            o.consumer = "c1".into();
            o.block = Duration::from_millis(50);
        })
        .start()
        .await
        .unwrap()
}

async fn loaded(models: &ReadModels, order: &str, what: &str, f: impl Fn(&OrderSummary) -> bool) {
    eventually(WAIT, what, || async {
        OrderSummary::load(models, order)
            .await
            .unwrap()
            .is_some_and(|s| f(&s))
    })
    .await;
}

async fn hash_and_list_from_created_and_shipped(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let summary = start(&bus, &models, OrderSummary::projection()).await;
    let list = start(&bus, &models, CustomerOrders::projection()).await;

    bus.publish(created("ord_1", "cust_1", 99.5)).await.unwrap();
    bus.publish(created("ord_2", "cust_1", 10.0)).await.unwrap();
    loaded(&models, "ord_1", "order created", |s| s.status == "created").await;
    bus.publish(OrderShipped {
        order_id: "ord_1".into(),
        carrier: "ups".into(),
    })
    .await
    .unwrap();
    loaded(&models, "ord_1", "order shipped", |s| s.status == "shipped").await;

    let s = OrderSummary::load(&models, "ord_1").await.unwrap().unwrap();
    assert_eq!(
        (s.order_id.as_str(), s.customer_id.as_str(), s.total),
        ("ord_1", "cust_1", 99.5)
    );
    assert_eq!(s.carrier.as_deref(), Some("ups"));
    assert!(s.shipped_at.is_some_and(|t| t > 1.0e9));
    assert_eq!((s.items, s.items_value), (0, 0.0));
    assert_eq!(OrderSummary::load(&models, "nope").await.unwrap(), None);

    eventually(WAIT, "both orders listed", || async {
        CustomerOrders::list(&models, "cust_1", ..)
            .await
            .unwrap()
            .len()
            == 2
    })
    .await;
    assert_eq!(
        CustomerOrders::list(&models, "cust_1", ..).await.unwrap(),
        ["ord_2", "ord_1"]
    );
    assert_eq!(
        CustomerOrders::list(&models, "cust_1", 0..1).await.unwrap(),
        ["ord_2"]
    );
    summary.shutdown().await.unwrap();
    list.shutdown().await.unwrap();
}

async fn increments_delete_bounded_list_set_and_counter(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let running = [
        start(&bus, &models, OrderSummary::projection()).await,
        start(&bus, &models, CustomerOrders::projection()).await,
        start(&bus, &models, OrderSkus::projection()).await,
        start(&bus, &models, OrderCount::projection()).await,
    ];
    for i in 1..=5 {
        bus.publish(created(&format!("o{i}"), "c", 1.0))
            .await
            .unwrap();
    }
    for (sku, price) in [("a", 1.25), ("b", 2.5), ("a", 1.25)] {
        bus.publish(ItemAdded {
            order_id: "o1".into(),
            customer_id: "c".into(),
            sku: sku.into(),
            price,
        })
        .await
        .unwrap();
    }
    loaded(&models, "o1", "three items", |s| s.items == 3).await;
    let s = OrderSummary::load(&models, "o1").await.unwrap().unwrap();
    assert_eq!(s.items_value, 5.0);
    assert_eq!(
        OrderSkus::members(&models, "o1")
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    eventually(WAIT, "five orders counted", || async {
        OrderCount::get(&models, "c").await.unwrap() == 5
    })
    .await;
    // Bounded: only the three newest.
    eventually(WAIT, "newest three listed", || async {
        CustomerOrders::list(&models, "c", ..).await.unwrap() == ["o5", "o4", "o3"]
    })
    .await;

    bus.publish(OrderCancelled {
        order_id: "o4".into(),
        customer_id: "c".into(),
    })
    .await
    .unwrap();
    eventually(
        WAIT,
        "cancelled order deleted, unlisted, uncounted",
        || async {
            OrderSummary::load(&models, "o4").await.unwrap().is_none()
                && CustomerOrders::list(&models, "c", ..).await.unwrap() == ["o5", "o3"]
                && OrderCount::get(&models, "c").await.unwrap() == 4
        },
    )
    .await;
    assert!(models
        .hash(&OrderSummary::key("o4"))
        .await
        .unwrap()
        .is_none());
    for r in running {
        r.shutdown().await.unwrap();
    }
}

async fn custom_projection_writes_what_it_returns(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let big = CustomProjection::new("BigOrders").on(|e: &Envelope<OrderCreated>| {
        Ok(if e.data.total >= 100.0 {
            vec![ReadModelOp::SetAdd {
                key: "orders:big".into(),
                members: vec![e.data.order_id.clone()],
            }]
        } else {
            vec![]
        })
    });
    let running = start(&bus, &models, big).await;
    bus.publish(created("small", "c", 5.0)).await.unwrap();
    bus.publish(created("large", "c", 500.0)).await.unwrap();
    eventually(WAIT, "both handled", || async {
        running.stats().handled() == 2
    })
    .await;
    assert_eq!(
        models
            .members("orders:big")
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["large"]
    );
    running.shutdown().await.unwrap();
}

/// A consumer that read an entry and died before committing; another reclaims it and
/// commits; the first one wakes up and commits too: the increment is applied once.
async fn redelivery_does_not_double_apply(backend: Backend) {
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "orders");
    let models = backend.read_models(&backend.prefix());
    let topic = Topic::of_type("PrjItemAdded");
    let group = "orders-projection-OrderSummary";
    transport
        .ensure_group(&topic, group, StartFrom::Beginning)
        .await
        .unwrap();
    bus.publish(created("o1", "c", 1.0)).await.unwrap();
    bus.publish(ItemAdded {
        order_id: "o1".into(),
        customer_id: "c".into(),
        sku: "a".into(),
        price: 2.0,
    })
    .await
    .unwrap();
    let spec = |name: &str| ConsumerSpec {
        group: group.into(),
        consumer: name.into(),
        topics: vec![topic.clone()],
    };
    let dead = transport.consumer(spec("dead")).await.unwrap();
    let delivery = dead
        .read(10, Duration::from_millis(100))
        .await
        .unwrap()
        .remove(0);
    let event = delivery.event.clone().unwrap();
    let ops = OrderSummary::apply(&event).unwrap();
    let commit = |consumer: &str| Commit {
        projection: "OrderSummary".into(),
        group: group.into(),
        consumer: consumer.into(),
        topic: topic.clone(),
        entry_id: delivery.entry_id.clone(),
        ops: ops.clone(),
        target: CommitTarget::Live,
    };

    // The live projection reclaims what the dead consumer held, and applies it.
    let running = ProjectionRunner::new(&bus, &models, OrderSummary::projection())
        .configure(|o| {
            o.consumer = "live".into();
            o.claim_idle = Duration::from_millis(50);
            o.claim_interval = Duration::from_millis(50);
            o.block = Duration::from_millis(50);
        })
        .start()
        .await
        .unwrap();
    loaded(&models, "o1", "item counted", |s| s.items == 1).await;
    eventually(WAIT, "nothing pending", || async {
        transport
            .lag(Some(group))
            .await
            .unwrap()
            .iter()
            .all(|l| l.pending == 0)
    })
    .await;
    running.shutdown().await.unwrap();

    // The dead consumer comes back and commits what it had read: nothing happens.
    let store = models.store();
    assert_eq!(
        store.commit(commit("dead")).await.unwrap(),
        Committed::NotPending
    );
    assert_eq!(
        store.commit(commit("live")).await.unwrap(),
        Committed::NotPending
    );
    let s = OrderSummary::load(&models, "o1").await.unwrap().unwrap();
    assert_eq!((s.items, s.items_value), (1, 2.0));
}

async fn rebuild_produces_the_same_model_and_switches_readers(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let runner = || {
        ProjectionRunner::new(&bus, &models, OrderSummary::projection()).configure(|o| {
            o.consumer = "c1".into();
            o.block = Duration::from_millis(50);
        })
    };
    let running = runner().start().await.unwrap();
    bus.publish(created("o1", "c", 3.0)).await.unwrap();
    bus.publish(created("o2", "c", 4.0)).await.unwrap();
    bus.publish(ItemAdded {
        order_id: "o1".into(),
        customer_id: "c".into(),
        sku: "a".into(),
        price: 1.5,
    })
    .await
    .unwrap();
    bus.publish(OrderCancelled {
        order_id: "o2".into(),
        customer_id: "c".into(),
    })
    .await
    .unwrap();
    loaded(&models, "o1", "item counted", |s| s.items == 1).await;
    eventually(WAIT, "o2 deleted", || async {
        OrderSummary::load(&models, "o2").await.unwrap().is_none()
    })
    .await;
    let before = OrderSummary::load(&models, "o1").await.unwrap().unwrap();

    // Damage the read model behind the projection's back: a rebuild repairs it.
    let key = format!("{}{}", backend.prefix(), OrderSummary::key("o1"));
    match &backend {
        Backend::Redis { .. } => {
            let mut conn = raw_connection().await;
            let _: i64 = redis::cmd("HSET")
                .arg(&key)
                .arg("items")
                .arg("41")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        Backend::Memory(_) => {
            // No raw access in memory: apply a stray write through a custom commit instead.
            let stray = CustomProjection::new("Stray").on(|e: &Envelope<OrderShipped>| {
                Ok(vec![ReadModelOp::HashIncr {
                    key: OrderSummary::key(&e.data.order_id),
                    field: "items".into(),
                    by: 40,
                }])
            });
            let s = start(&bus, &models, stray).await;
            bus.publish(OrderShipped {
                order_id: "o1".into(),
                carrier: "x".into(),
            })
            .await
            .unwrap();
            eventually(WAIT, "stray write", || async { s.stats().handled() == 1 }).await;
            s.shutdown().await.unwrap();
        }
    }
    loaded(&models, "o1", "damaged", |s| s.items == 41).await;

    runner().rebuild().await.unwrap();
    let after = OrderSummary::load(&models, "o1").await.unwrap().unwrap();
    assert_eq!(after.items, 1);
    let mut expected = before.clone();
    if let Backend::Memory(_) = backend {
        // The memory variant shipped the order to damage it: that is part of the history.
        expected.status = "shipped".into();
        expected.carrier = Some("x".into());
        expected.shipped_at = after.shipped_at;
    }
    assert_eq!(after, expected);
    assert_eq!(OrderSummary::load(&models, "o2").await.unwrap(), None);

    // The live projection keeps going after the switch, and skips what the rebuild covered.
    bus.publish(ItemAdded {
        order_id: "o1".into(),
        customer_id: "c".into(),
        sku: "b".into(),
        price: 1.0,
    })
    .await
    .unwrap();
    loaded(&models, "o1", "new item after rebuild", |s| s.items == 2).await;
    running.shutdown().await.unwrap();
    let lag = bus.transport().lag(None).await.unwrap();
    assert!(
        lag.iter().all(|l| !l.group.ends_with("-rebuild")),
        "rebuild group left behind: {lag:?}"
    );
}

async fn lag_shows_the_projection_group(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let running = start(&bus, &models, CustomerOrders::projection()).await;
    bus.publish(created("o1", "c", 1.0)).await.unwrap();
    eventually(WAIT, "handled", || async { running.stats().handled() == 1 }).await;
    let lag = bus
        .transport()
        .lag(Some("orders-projection-CustomerOrders"))
        .await
        .unwrap();
    let topics: Vec<_> = lag.iter().map(|l| l.topic.to_string()).collect();
    assert!(topics.contains(&"PrjOrderCreated".to_string()), "{lag:?}");
    assert!(topics.contains(&"PrjOrderCancelled".to_string()), "{lag:?}");
    eventually(WAIT, "caught up", || async {
        bus.transport()
            .lag(Some("orders-projection-CustomerOrders"))
            .await
            .unwrap()
            .iter()
            .all(|l| l.lag == Some(0) && l.pending == 0)
    })
    .await;
    running.shutdown().await.unwrap();
}

async fn malformed_event_is_dead_lettered_and_projection_goes_on(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let running = start(&bus, &models, OrderCount::projection()).await;
    backend
        .append_malformed(&Topic::of_type("PrjOrderCreated"))
        .await;
    // Valid JSON, but not an OrderCreated: dead-lettered at once too.
    let wrong = Envelope::new(
        "PrjOrderCreated",
        1,
        "python",
        serde_json::json!({"order_id": 7}),
    );
    bus.publish_raw(&[wrong]).await.unwrap();
    bus.publish(created("o1", "c", 1.0)).await.unwrap();
    eventually(WAIT, "counted", || async {
        OrderCount::get(&models, "c").await.unwrap() == 1
    })
    .await;
    eventually(WAIT, "two dead letters", || async {
        bus.transport()
            .dead_letters("orders-projection-OrderCount", 10)
            .await
            .unwrap()
            .len()
            == 2
    })
    .await;
    running.shutdown().await.unwrap();
}

both!(
    hash_and_list_from_created_and_shipped,
    increments_delete_bounded_list_set_and_counter,
    custom_projection_writes_what_it_returns,
    redelivery_does_not_double_apply,
    rebuild_produces_the_same_model_and_switches_readers,
    lag_shows_the_projection_group,
    malformed_event_is_dead_lettered_and_projection_goes_on,
);

/// The article's key layout, read back with raw commands exactly as its Python query side
/// does (`HGETALL orders:summary:{id}`, `LRANGE customers:{id}:orders`): no prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article_key_layout_is_what_python_reads() {
    let backend = Backend::redis("article_key_layout").await;
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models("");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (order, customer) = (format!("ord_{id}"), format!("cust_{id}"));
    let (hash_key, list_key) = (
        format!("orders:summary:{order}"),
        format!("customers:{customer}:orders"),
    );
    // Unprefixed, as the article has them: outside the namespace, so named to the guard.
    let guard = backend.guard().unwrap();
    guard.also(&hash_key);
    guard.also(&list_key);
    let a = start(&bus, &models, OrderSummary::projection()).await;
    let b = start(&bus, &models, CustomerOrders::projection()).await;
    bus.publish(created(&order, &customer, 100.0))
        .await
        .unwrap();
    loaded(&models, &order, "created", |_| true).await;
    eventually(WAIT, "listed", || async {
        !CustomerOrders::list(&models, &customer, ..)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    let mut conn = raw_connection().await;
    let hash: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(&hash_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(&list_key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();

    let expected: std::collections::BTreeMap<String, String> = [
        ("order_id", order.as_str()),
        ("customer_id", customer.as_str()),
        ("total", "100.0"),
        ("status", "created"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(hash, expected);
    assert_eq!(list, [order]);
}
