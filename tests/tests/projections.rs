//! Projections on Redis and in memory: declarative read models, the article's key layout,
//! effectively-once commits, rebuilds, lag and dead letters.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::time::Duration;

use eventbus_core::projection::{
    Commit, CommitTarget, Committed, CustomProjection, ProjectionRunner, ReadModel, ReadModelOp,
};
use eventbus_core::transport::{ConsumerSpec, StartFrom, Topic};
use eventbus_core::{event, projection, Envelope, EventBus, ReadModels};
use eventbus_tests::{all_three, eventually, raw_connection, Backend};

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
    // Each projection applies on its own: the SKU set may trail the summary.
    eventually(WAIT, "both SKUs in the set", || async {
        let skus = OrderSkus::members(&models, "o1").await.unwrap();
        skus.into_iter().collect::<Vec<_>>() == ["a", "b"]
    })
    .await;
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
    // It dies (on a cluster it stops renewing its membership and its partitions' leases).
    drop(dead);
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
        lease: None,
    };

    // The live projection reclaims what the dead consumer held, and applies it.
    let running = ProjectionRunner::new(&bus, &models, OrderSummary::projection())
        .configure(|o| {
            o.consumer = "live".into();
            o.claim_idle = Duration::from_millis(100);
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
    // (On the cluster too the damage goes through a stray projection.)
    let stray_damage = backend.is_cluster() || matches!(backend, Backend::Memory(_));
    match &backend {
        Backend::Redis { .. } if !stray_damage => damage_items(&key).await,
        _ => {
            // No raw access: apply a stray write through a custom commit instead.
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
    if stray_damage {
        // The stray damage shipped the order: that is part of the history.
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

/// A custom projection counting items in two writes: a counter, then a hash field.
fn tally() -> CustomProjection {
    CustomProjection::new("Tally").on(|e: &Envelope<ItemAdded>| {
        Ok(vec![
            ReadModelOp::Incr {
                key: "tally:items".into(),
                by: 1,
            },
            ReadModelOp::HashIncr {
                key: format!("tally:{}", e.data.order_id),
                field: "n".into(),
                by: 1,
            },
        ])
    })
}

/// Sets `tally:{order}`'s field `n` to a value, on `OrderShipped` (carrier = the value):
/// how the tests damage and repair data behind a projection's back, on both backends.
fn tally_writer() -> CustomProjection {
    CustomProjection::new("TallyWriter").on(|e: &Envelope<OrderShipped>| {
        Ok(vec![ReadModelOp::HashSet {
            key: format!("tally:{}", e.data.order_id),
            fields: vec![("n".into(), e.data.carrier.clone())],
        }])
    })
}

fn item(order: &str) -> ItemAdded {
    ItemAdded {
        order_id: order.into(),
        customer_id: "c".into(),
        sku: "a".into(),
        price: 1.0,
    }
}

async fn settled(bus: &EventBus, group: &str) {
    eventually(WAIT, "group caught up, nothing pending", || async {
        bus.transport()
            .lag(Some(group))
            .await
            .unwrap()
            .iter()
            .all(|l| l.lag == Some(0) && l.pending == 0)
    })
    .await;
}

/// A commit whose second write fails (`HINCRBY` on a field holding text) writes nothing —
/// not even the counter its first write increments; the entry is dead-lettered with the
/// reason; once the data is fixed, replaying the dead letter applies the event exactly once.
async fn failing_commit_changes_nothing_and_replay_applies_once(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let writer = start(&bus, &models, tally_writer()).await;
    bus.publish(OrderShipped {
        order_id: "o1".into(),
        carrier: "many".into(),
    })
    .await
    .unwrap();
    eventually(WAIT, "damaged", || async { writer.stats().handled() == 1 }).await;

    let running = start(&bus, &models, tally()).await;
    bus.publish(item("o1")).await.unwrap();
    let group = "orders-projection-Tally";
    eventually(WAIT, "dead-lettered", || async {
        bus.transport().dead_letters(group, 10).await.unwrap().len() == 1
    })
    .await;
    let letters = bus.transport().dead_letters(group, 10).await.unwrap();
    let reason = &letters[0].reason.error;
    assert!(
        reason.contains("tally:o1") && reason.contains("not an integer"),
        "{reason}"
    );
    // Nothing of the commit was written: not the counter (first write), not the hash.
    assert_eq!(models.store().counter("tally:items").await.unwrap(), None);
    let hash = models.hash("tally:o1").await.unwrap().unwrap();
    assert_eq!(hash.get("n").map(String::as_str), Some("many"));

    // Fix the data, replay: applied once.
    bus.publish(OrderShipped {
        order_id: "o1".into(),
        carrier: "0".into(),
    })
    .await
    .unwrap();
    eventually(WAIT, "repaired", || async { writer.stats().handled() == 2 }).await;
    assert_eq!(
        bus.transport()
            .replay_dead_letters(group, None)
            .await
            .unwrap(),
        1
    );
    settled(&bus, group).await;
    assert_eq!(
        models.store().counter("tally:items").await.unwrap(),
        Some(1)
    );
    let hash = models.hash("tally:o1").await.unwrap().unwrap();
    assert_eq!(hash.get("n").map(String::as_str), Some("1"));
    assert!(bus
        .transport()
        .dead_letters(group, 10)
        .await
        .unwrap()
        .is_empty());
    running.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
}

/// Reads the pending entries of `PrjItemAdded` in `group` as consumer `c` (one per event).
async fn read_pending(backend: &Backend, group: &str, n: usize) -> Vec<String> {
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "orders");
    let topic = Topic::of_type("PrjItemAdded");
    transport
        .ensure_group(&topic, group, StartFrom::Beginning)
        .await
        .unwrap();
    for i in 0..n {
        bus.publish(item(&format!("o{i}"))).await.unwrap();
    }
    let consumer = transport
        .consumer(ConsumerSpec {
            group: group.into(),
            consumer: "c".into(),
            topics: vec![topic],
        })
        .await
        .unwrap();
    let read = consumer.read(n, Duration::from_millis(100)).await.unwrap();
    assert_eq!(read.len(), n);
    read.into_iter().map(|d| d.entry_id).collect()
}

fn commit_of(group: &str, id: &str, ops: Vec<ReadModelOp>, lease: Option<&str>) -> Commit {
    Commit {
        projection: "Direct".into(),
        group: group.into(),
        consumer: "c".into(),
        topic: Topic::of_type("PrjItemAdded"),
        entry_id: id.into(),
        ops,
        target: CommitTarget::Live,
        lease: lease.map(str::to_owned),
    }
}

/// `HSET` on a key holding a string fails the commit before anything is written: the hash
/// of its first write stays absent and the entry stays pending.
async fn commit_with_a_wrong_type_writes_nothing(backend: Backend) {
    let models = backend.read_models(&backend.prefix());
    let store = models.store();
    let group = "direct";
    let ids = read_pending(&backend, group, 2).await;
    let counter = ReadModelOp::Incr {
        key: "k:str".into(),
        by: 5,
    };
    assert_eq!(
        store
            .commit(commit_of(group, &ids[0], vec![counter], None))
            .await
            .unwrap(),
        Committed::Applied
    );
    let set = |key: &str| ReadModelOp::HashSet {
        key: key.into(),
        fields: vec![("f".into(), "v".into())],
    };
    let failed = store
        .commit(commit_of(
            group,
            &ids[1],
            vec![set("k:hash"), set("k:str")],
            None,
        ))
        .await;
    match failed {
        Err(eventbus_core::Error::ReadModelWrite { key, .. }) => assert_eq!(key, "k:str"),
        other => panic!("expected a ReadModelWrite error, got {other:?}"),
    }
    assert_eq!(models.hash("k:hash").await.unwrap(), None);
    assert_eq!(models.store().counter("k:str").await.unwrap(), Some(5));
    let lag = backend.transport().lag(Some(group)).await.unwrap();
    assert_eq!(lag.iter().map(|l| l.pending).sum::<u64>(), 1, "{lag:?}");
}

/// Refused exactly when Redis would reject a write, taking the commit's own earlier writes
/// into account, and then nothing is written; the two backends agree.
async fn commits_are_refused_exactly_when_a_write_would_fail(backend: Backend) {
    use ReadModelOp as Op;
    let models = backend.read_models(&backend.prefix());
    let store = models.store();
    let group = "cases";
    let hset = |key: &str, f: &str, v: &str| Op::HashSet {
        key: key.into(),
        fields: vec![(f.into(), v.into())],
    };
    let hincr = |key: &str, f: &str, by: i64| Op::HashIncr {
        key: key.into(),
        field: f.into(),
        by,
    };
    let setup = vec![
        hset("t:hash", "text", "x"),
        hset("t:hash", "padded", "007"),
        Op::SetAdd {
            key: "t:set".into(),
            members: vec!["m".into()],
        },
        Op::Incr {
            key: "t:big".into(),
            by: i64::MAX - 1,
        },
    ];
    let cases: Vec<(&str, Vec<ReadModelOp>, bool)> = vec![
        (
            "HINCRBY after the commit's own HSET of text",
            vec![hset("t:new", "f", "x"), hincr("t:new", "f", 1)],
            false,
        ),
        (
            "HINCRBY on a field with leading zeros",
            vec![hincr("t:other", "n", 1), hincr("t:hash", "padded", 1)],
            false,
        ),
        (
            "DEL, then another type on the same key",
            vec![
                Op::Delete {
                    key: "t:set".into(),
                },
                hset("t:set", "f", "v"),
            ],
            true,
        ),
        (
            "HINCRBYFLOAT twice",
            vec![
                Op::HashIncrFloat {
                    key: "t:f".into(),
                    field: "v".into(),
                    by: 1.5,
                },
                Op::HashIncrFloat {
                    key: "t:f".into(),
                    field: "v".into(),
                    by: 1.5,
                },
            ],
            true,
        ),
        (
            "INCRBY past i64::MAX",
            vec![
                Op::Incr {
                    key: "t:other2".into(),
                    by: 1,
                },
                Op::Incr {
                    key: "t:big".into(),
                    by: 1,
                },
                Op::Incr {
                    key: "t:big".into(),
                    by: 1,
                },
            ],
            false,
        ),
        (
            "a list push onto a hash",
            vec![
                hincr("t:other3", "n", 1),
                Op::ListPush {
                    key: "t:hash".into(),
                    values: vec!["v".into()],
                    end: eventbus_core::projection::ListEnd::Front,
                    max_len: None,
                },
            ],
            false,
        ),
        (
            "HSET, then HINCRBY of an integer it set",
            vec![hset("t:ok", "n", "41"), hincr("t:ok", "n", 1)],
            true,
        ),
    ];
    let ids = read_pending(&backend, group, cases.len() + 1).await;
    assert_eq!(
        store
            .commit(commit_of(group, &ids[0], setup, None))
            .await
            .unwrap(),
        Committed::Applied
    );
    for ((what, ops, ok), id) in cases.into_iter().zip(&ids[1..]) {
        let outcome = store.commit(commit_of(group, id, ops, None)).await;
        assert_eq!(outcome.is_ok(), ok, "{what}: {outcome:?}");
    }
    // The refused commits wrote nothing; the accepted ones everything.
    for untouched in ["t:new", "t:other", "t:other2", "t:other3"] {
        assert_eq!(
            models.hash(untouched).await.ok().flatten(),
            None,
            "{untouched}"
        );
        assert_eq!(
            models.store().counter(untouched).await.ok().flatten(),
            None,
            "{untouched}"
        );
    }
    assert_eq!(
        models.store().counter("t:big").await.unwrap(),
        Some(i64::MAX - 1)
    );
    let h = models.hash("t:set").await.unwrap().unwrap();
    assert_eq!(h.get("f").map(String::as_str), Some("v"));
    let h = models.hash("t:f").await.unwrap().unwrap();
    assert_eq!(h.get("v").map(String::as_str), Some("3"));
    let h = models.hash("t:ok").await.unwrap().unwrap();
    assert_eq!(h.get("n").map(String::as_str), Some("42"));
    let h = models.hash("t:hash").await.unwrap().unwrap();
    assert_eq!(h.get("padded").map(String::as_str), Some("007"));
}

/// A commit under a lease that lapsed and was taken by another holder writes nothing and
/// leaves the entry pending; under the current holder's token it applies.
async fn stale_lease_holder_commits_nothing(backend: Backend) {
    let models = backend.read_models(&backend.prefix());
    let store = models.store();
    let group = "fenced";
    let ids = read_pending(&backend, group, 1).await;
    let ttl = Duration::from_millis(200);
    assert!(store.lease("Direct", "old", ttl).await.unwrap());
    assert!(!store.lease("Direct", "new", ttl).await.unwrap());
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(store.lease("Direct", "new", ttl * 50).await.unwrap());
    let incr = || {
        vec![ReadModelOp::Incr {
            key: "fenced".into(),
            by: 1,
        }]
    };
    assert_eq!(
        store
            .commit(commit_of(group, &ids[0], incr(), Some("old")))
            .await
            .unwrap(),
        Committed::LeaseLost
    );
    assert_eq!(models.store().counter("fenced").await.unwrap(), None);
    assert_eq!(
        store
            .commit(commit_of(group, &ids[0], incr(), Some("new")))
            .await
            .unwrap(),
        Committed::Applied
    );
    assert_eq!(models.store().counter("fenced").await.unwrap(), Some(1));
    store.release_lease("Direct", "new").await.unwrap();
    assert!(store.lease("Direct", "other", ttl).await.unwrap());
}

const LEASE: Duration = Duration::from_millis(600);

fn instance(bus: &EventBus, models: &ReadModels, consumer: &str) -> ProjectionRunner {
    let consumer = consumer.to_owned();
    ProjectionRunner::new(bus, models, OrderSummary::projection())
        .configure(move |o| {
            o.consumer = consumer;
            o.block = Duration::from_millis(50);
            o.claim_idle = Duration::from_millis(200);
            o.claim_interval = Duration::from_millis(100);
        })
        .lease_ttl(LEASE)
}

/// Created, shipped and item events for `n` orders, each order's in that order.
async fn order_history(bus: &EventBus, from: usize, to: usize) {
    for i in from..to {
        let order = format!("o{i}");
        bus.publish(created(&order, "c", i as f64)).await.unwrap();
        bus.publish(ItemAdded {
            order_id: order.clone(),
            customer_id: "c".into(),
            sku: "a".into(),
            price: 0.5,
        })
        .await
        .unwrap();
        bus.publish(OrderShipped {
            order_id: order,
            carrier: "ups".into(),
        })
        .await
        .unwrap();
    }
}

async fn summaries(models: &ReadModels, n: usize) -> Vec<Option<OrderSummary>> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut s = OrderSummary::load(models, &format!("o{i}")).await.unwrap();
        if let Some(s) = s.as_mut() {
            s.shipped_at = s.shipped_at.map(|_| 1.0);
        }
        out.push(s);
    }
    out
}

/// What one instance makes of the same history, on a fresh backend of the same kind.
async fn single_instance_result(backend: &Backend, n: usize) -> Vec<Option<OrderSummary>> {
    let fresh = match backend {
        Backend::Memory(_) => Backend::memory(),
        Backend::Redis { .. } => Backend::redis("single_instance_reference").await,
    };
    let bus = EventBus::from_arc(fresh.transport(), "orders");
    let models = fresh.read_models(&fresh.prefix());
    let one = instance(&bus, &models, "only").start().await.unwrap();
    order_history(&bus, 0, n).await;
    settled(&bus, "orders-projection-OrderSummary").await;
    one.shutdown().await.unwrap();
    summaries(&models, n).await
}

/// Two instances of a projection in one group: one is active, the other stands by and takes
/// over when the active one shuts down; the read model is the one a single instance makes.
async fn two_instances_in_one_group_match_a_single_instance(backend: Backend) {
    const N: usize = 30;
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let a = instance(&bus, &models, "a").start().await.unwrap();
    let b = instance(&bus, &models, "b").start().await.unwrap();
    assert!(a.is_active() && !b.is_active(), "the first instance leads");

    order_history(&bus, 0, N / 2).await;
    // The active instance stops mid-stream; the standby takes over.
    a.shutdown().await.unwrap();
    order_history(&bus, N / 2, N).await;
    eventually(WAIT, "standby took over", || async { b.is_active() }).await;
    settled(&bus, "orders-projection-OrderSummary").await;
    let got = summaries(&models, N).await;
    assert!(got.iter().all(|s| s
        .as_ref()
        .is_some_and(|s| s.status == "shipped" && s.items == 1)));
    assert_eq!(got, single_instance_result(&backend, N).await);
    b.shutdown().await.unwrap();
}

/// The active instance dies (its runtime is gone: no shutdown, no lease release): the
/// standby takes over once the lease lapses, and applies what came since.
async fn standby_takes_over_when_the_active_instance_dies(backend: Backend) {
    let bus = EventBus::from_arc(backend.transport(), "orders");
    let models = backend.read_models(&backend.prefix());
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = {
        let (bus, models) = (bus.clone(), models.clone());
        doomed
            .spawn(async move { instance(&bus, &models, "a").start().await.unwrap() })
            .await
            .unwrap()
    };
    assert!(a.is_active());
    let b = instance(&bus, &models, "b").start().await.unwrap();
    assert!(!b.is_active());
    order_history(&bus, 0, 5).await;
    loaded(&models, "o4", "applied by the active instance", |s| {
        s.status == "shipped"
    })
    .await;

    let died = tokio::time::Instant::now();
    doomed.shutdown_background();
    order_history(&bus, 5, 10).await;
    eventually(WAIT, "standby took over", || async { b.is_active() }).await;
    assert!(
        died.elapsed() >= LEASE / 2,
        "took over before the lease could lapse"
    );
    settled(&bus, "orders-projection-OrderSummary").await;
    let got = summaries(&models, 10).await;
    assert!(got.iter().all(|s| s
        .as_ref()
        .is_some_and(|s| s.status == "shipped" && s.items == 1)));
    b.shutdown().await.unwrap();
    drop(a);
}

all_three!(
    failing_commit_changes_nothing_and_replay_applies_once,
    commit_with_a_wrong_type_writes_nothing,
    commits_are_refused_exactly_when_a_write_would_fail,
    stale_lease_holder_commits_nothing,
    two_instances_in_one_group_match_a_single_instance,
    standby_takes_over_when_the_active_instance_dies,
    hash_and_list_from_created_and_shipped,
    increments_delete_bounded_list_set_and_counter,
    custom_projection_writes_what_it_returns,
    redelivery_does_not_double_apply,
    lag_shows_the_projection_group,
    malformed_event_is_dead_lettered_and_projection_goes_on,
);

all_three!(rebuild_produces_the_same_model_and_switches_readers);

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

/// An active instance whose lease is taken (here: overwritten behind its back) stops
/// applying at its next renewal and stands by; once the lease is free again it takes it back
/// and applies what came meanwhile.
#[test]
fn an_instance_whose_lease_is_taken_stands_by() {
    eventbus_tests::run_on_redis("lease_taken", |backend| async move {
        let Backend::Redis { transport, .. } = &backend else {
            unreachable!()
        };
        let lease_key = transport.keys().projection_lease("OrderSummary");
        let bus = EventBus::from_arc(backend.transport(), "orders");
        let models = backend.read_models(&backend.prefix());
        let a = instance(&bus, &models, "a").start().await.unwrap();
        assert!(a.is_active());
        bus.publish(created("o1", "c", 1.0)).await.unwrap();
        loaded(&models, "o1", "applied while active", |_| true).await;

        let mut conn = raw_connection().await;
        let _: () = redis::cmd("SET")
            .arg(&lease_key)
            .arg("intruder")
            .query_async(&mut conn)
            .await
            .unwrap();
        eventually(WAIT, "stood down", || async { !a.is_active() }).await;
        bus.publish(created("o2", "c", 2.0)).await.unwrap();
        tokio::time::sleep(LEASE).await;
        assert_eq!(
            OrderSummary::load(&models, "o2").await.unwrap(),
            None,
            "nothing applied without the lease"
        );

        let _: i64 = redis::cmd("DEL")
            .arg(&lease_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        eventually(WAIT, "took the lease back", || async { a.is_active() }).await;
        loaded(&models, "o2", "applied once active again", |_| true).await;
        a.shutdown().await.unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&lease_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0, "released on shutdown");
    });
}

/// On Redis a lease holder's consumer takes entries from the group (new ones, or idle ones
/// of others) only under the lease, checked in the same script: one whose lease is held by
/// another token takes nothing, so its successor applies exactly what the group hands out.
/// A fenced read still waits for new entries without polling.
#[test]
fn a_stale_lease_holder_takes_nothing_from_the_group() {
    eventbus_tests::run_on_redis("fenced_reads", |backend| async move {
        let transport = backend.transport();
        let models = backend.read_models(&backend.prefix());
        let store = models.store();
        let bus = EventBus::from_arc(transport.clone(), "orders");
        let topic = Topic::of_type("PrjItemAdded");
        let group = "fenced";
        transport
            .ensure_group(&topic, group, StartFrom::Beginning)
            .await
            .unwrap();
        bus.publish(item("o1")).await.unwrap();
        bus.publish(item("o2")).await.unwrap();
        assert!(store
            .lease("Fenced", "new", Duration::from_secs(30))
            .await
            .unwrap());
        let fenced = |name: &str, token: &str| {
            let spec = ConsumerSpec {
                group: group.into(),
                consumer: name.into(),
                topics: vec![topic.clone()],
            };
            let (transport, store, token) = (transport.clone(), store.clone(), token.to_owned());
            async move {
                let inner = transport.consumer(spec.clone()).await.unwrap();
                store.fence(inner, &spec, "Fenced", &token).await.unwrap()
            }
        };
        let pending = || async { transport.lag(Some(group)).await.unwrap()[0].pending };

        let stale = fenced("stale", "old").await;
        assert!(stale
            .read(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(pending().await, 0, "the stale holder took nothing");

        let current = fenced("current", "new").await;
        let read = current.read(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(pending().await, 2);
        // Idle entries of the holder can't be claimed by the stale one either.
        let claimed = stale
            .claim_idle(&topic, Duration::ZERO, "0-0", 10)
            .await
            .unwrap();
        assert!(claimed.deliveries.is_empty());
        let claimed = current
            .claim_idle(&topic, Duration::ZERO, "0-0", 10)
            .await
            .unwrap();
        assert_eq!(claimed.deliveries.len(), 2, "the holder can");

        // Nothing new: the read waits, and wakes for the next entry.
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(async move { current.read(10, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        bus.publish(item("o3")).await.unwrap();
        let woke = waiting.await.unwrap().unwrap();
        assert_eq!(woke.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "woke for the entry"
        );
    });
}

/// An operator asks for a rebuild (`eventbus console`, `RedisTransport::request_rebuild`):
/// the running projection's active instance takes the request once and rebuilds beside the
/// live projection, repairing a damaged read model.
#[test]
fn a_running_projection_rebuilds_when_an_operator_asks() {
    eventbus_tests::run_on_redis("rebuild_request", |backend| async move {
        let Backend::Redis { transport, .. } = &backend else {
            unreachable!()
        };
        let bus = EventBus::from_arc(backend.transport(), "orders");
        let models = backend.read_models(&backend.prefix());
        let running = instance(&bus, &models, "a").start().await.unwrap();
        bus.publish(created("o1", "c", 3.0)).await.unwrap();
        bus.publish(item("o1")).await.unwrap();
        loaded(&models, "o1", "item counted", |s| s.items == 1).await;
        // Damage the read model behind the projection's back.
        damage_items(&format!("{}{}", backend.prefix(), OrderSummary::key("o1"))).await;
        loaded(&models, "o1", "damaged", |s| s.items == 41).await;

        transport.request_rebuild("OrderSummary").await.unwrap();
        let requested = transport.projection_keys("OrderSummary").await.unwrap();
        assert!(requested.rebuild_requested_at.is_some());
        loaded(&models, "o1", "repaired by the rebuild", |s| s.items == 1).await;
        let done = transport.projection_keys("OrderSummary").await.unwrap();
        assert_eq!(done.rebuild_requested_at, None, "the request was taken");
        eventually(WAIT, "the rebuild recorded what it covered", || async {
            !transport
                .projection_keys("OrderSummary")
                .await
                .unwrap()
                .rebuilt
                .is_empty()
        })
        .await;
        // The live projection goes on.
        bus.publish(item("o1")).await.unwrap();
        loaded(&models, "o1", "applied after the rebuild", |s| s.items == 2).await;
        running.shutdown().await.unwrap();
    });
}

/// Sets an order summary's `items` to 41 behind the projection's back (on Redis).
async fn damage_items(key: &str) {
    let _: i64 = redis::cmd("HSET")
        .arg(key)
        .arg("items")
        .arg("41")
        .query_async(&mut raw_connection().await)
        .await
        .unwrap();
}
