//! The Redis Streams transport against a real server (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Each test works in its own key namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use eventbus_core::transport::{DeadLetterReason, StartFrom, StreamAdmin, StreamTransport, Topic};
use eventbus_core::{Envelope, Error, TransportErrorKind};
use eventbus_redis::{RedisConfig, RedisTransport};
use serde_json::{json, Value};
use support::{redis_url, setup};

fn event(event_type: &str, n: u64) -> Envelope<Value> {
    Envelope::new(event_type, 1, "test-service", json!({ "n": n }))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("<missing>")
}

const GROUP: &str = "billing-consumers";

#[tokio::test]
async fn publish_writes_both_streams_in_the_article_wire_format() {
    let ctx = setup("publish").await;
    let t = &ctx.transport;
    let created = event("OrderCreated", 1)
        .with_correlation_id("corr-1")
        .with_metadata("tenant", "acme");
    let shipped = event("OrderShipped", 2).caused_by(&created);
    let ids = t
        .publish(&[created.clone(), shipped.clone()])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);

    let created_key = ctx.stream(&Topic::of_type("OrderCreated"));
    let per_type = ctx.xrange(&created_key).await;
    assert_eq!(per_type.len(), 1);
    assert_eq!(per_type[0].0, ids[0]);
    let fields = &per_type[0].1;
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "event_id",
            "event_type",
            "source",
            "data",
            "timestamp",
            "metadata"
        ]
    );
    assert_eq!(field(fields, "event_id"), created.event_id);
    assert_eq!(field(fields, "event_type"), "OrderCreated");
    assert_eq!(field(fields, "source"), "test-service");
    assert_eq!(
        serde_json::from_str::<Value>(field(fields, "data")).unwrap(),
        json!({"n": 1})
    );
    let ts: f64 = field(fields, "timestamp").parse().unwrap();
    assert_eq!(ts, created.timestamp);
    assert!(field(fields, "timestamp").contains('.'));
    assert_eq!(
        serde_json::from_str::<Value>(field(fields, "metadata")).unwrap(),
        json!({"tenant": "acme", "correlation_id": "corr-1", "schema_version": 1})
    );

    let global = ctx.xrange(&ctx.stream(&Topic::All)).await;
    assert_eq!(global.len(), 2, "every event is also on the global stream");
    let mut expected = fields.clone();
    expected.push(("original_stream".into(), created_key.clone()));
    assert_eq!(global[0].1, expected);
    assert_eq!(
        field(&global[1].1, "original_stream"),
        ctx.stream(&Topic::of_type("OrderShipped"))
    );
    assert_eq!(field(&global[1].1, "event_id"), shipped.event_id);

    // (MULTI/EXEC isolates the batch but does not roll back: a command failing inside EXEC,
    // like an XADD on a key of the wrong type, is reported as an error of the whole batch.)
    let _: () = ctx
        .cmd(
            redis::cmd("SET")
                .arg(ctx.stream(&Topic::of_type("Broken")))
                .arg("x"),
        )
        .await;
    let err = t
        .publish(&[event("OrderCreated", 3), event("Broken", 4)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert_eq!(t.publish(&[]).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn reads_entries_written_by_the_python_article() {
    let ctx = setup("python").await;
    let topic = Topic::of_type("OrderCreated");
    let key = ctx.stream(&topic);
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    // Exactly what StreamEventBus.publish() sends: json.dumps spacing, str(time.time()).
    let python_id: String = ctx
        .cmd(
            redis::cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg(100000)
                .arg("*")
                .arg(&[
                    ("event_id", "0b7f6f0e-1c0a-4c1e-8a7a-2f7e7e3f9a11"),
                    ("event_type", "OrderCreated"),
                    ("source", "order-service"),
                    ("data", r#"{"order_id": "ord_1", "total": 99.5}"#),
                    ("timestamp", "1732665600.123456"),
                    ("metadata", "{}"),
                ]),
        )
        .await;
    let bad_id: String = ctx
        .cmd(
            redis::cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg(&[("event_id", "x"), ("event_type", "OrderCreated")]),
        )
        .await;

    let consumer = ctx.consumer(GROUP, "c1", &topic).await;
    let deliveries = consumer.read(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    let d = &deliveries[0];
    assert_eq!(
        (d.topic.clone(), d.entry_id.clone(), d.delivery_count),
        (topic.clone(), python_id, 1)
    );
    let env = d.event.as_ref().unwrap();
    assert_eq!(env.event_id, "0b7f6f0e-1c0a-4c1e-8a7a-2f7e7e3f9a11");
    assert_eq!(env.source, "order-service");
    assert_eq!(env.data, json!({"order_id": "ord_1", "total": 99.5}));
    assert_eq!(env.timestamp, 1732665600.123456);
    assert_eq!((env.version, env.correlation_id.clone()), (1, None));
    assert_eq!(deliveries[1].entry_id, bad_id);
    assert_eq!(
        deliveries[1].event.as_ref().unwrap_err().reason,
        "missing field `source`"
    );

    // An empty read returns after the block time with nothing.
    assert!(consumer
        .read(10, Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn consumers_of_one_group_share_the_entries() {
    let ctx = setup("share").await;
    let topic = Topic::of_type("Tick");
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    // An existing group keeps its position.
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    let events: Vec<_> = (0..10).map(|n| event("Tick", n)).collect();
    let ids = ctx.transport.publish(&events).await.unwrap();
    let a = ctx.consumer(GROUP, "a", &topic).await;
    let b = ctx.consumer(GROUP, "b", &topic).await;
    let first = a.read(4, Duration::from_millis(100)).await.unwrap();
    let second = b.read(100, Duration::from_millis(100)).await.unwrap();
    assert_eq!((first.len(), second.len()), (4, 6));
    let seen: HashSet<_> = first
        .iter()
        .chain(&second)
        .map(|d| d.entry_id.clone())
        .collect();
    assert_eq!(seen, ids.into_iter().collect());
    a.ack(&[(
        topic.clone(),
        first.iter().map(|d| d.entry_id.clone()).collect(),
    )])
    .await
    .unwrap();
    b.ack(&[(
        topic.clone(),
        second.iter().map(|d| d.entry_id.clone()).collect(),
    )])
    .await
    .unwrap();
    let lag = ctx.transport.lag(Some(GROUP)).await.unwrap();
    assert_eq!(lag.len(), 1);
    assert_eq!((lag[0].pending, lag[0].lag), (0, Some(0)));
}

#[tokio::test]
async fn reads_many_topics_and_the_global_stream() {
    let ctx = setup("multi").await;
    let (a, b) = (Topic::of_type("A"), Topic::of_type("B"));
    for topic in [&a, &b, &Topic::All] {
        ctx.transport
            .ensure_group(topic, GROUP, StartFrom::New)
            .await
            .unwrap();
    }
    ctx.transport
        .publish(&[event("A", 1), event("B", 2)])
        .await
        .unwrap();
    let c = ctx
        .consumer_of(GROUP, "c", vec![a.clone(), b.clone(), Topic::All])
        .await;
    let got = c.read(100, Duration::from_millis(100)).await.unwrap();
    let topics: Vec<_> = got.iter().map(|d| d.topic.clone()).collect();
    assert_eq!(topics, [a, b, Topic::All, Topic::All]);
}

#[tokio::test]
async fn claim_idle_takes_over_and_reports_deleted_entries() {
    let ctx = setup("claim").await;
    let topic = Topic::of_type("Job");
    let key = ctx.stream(&topic);
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    ctx.transport
        .publish(&(0..3).map(|n| event("Job", n)).collect::<Vec<_>>())
        .await
        .unwrap();
    let crashed = ctx.consumer(GROUP, "crashed", &topic).await;
    let live = ctx.consumer(GROUP, "live", &topic).await;
    let taken = crashed.read(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(taken.len(), 3);

    // Not idle long enough yet.
    let none = live
        .claim_idle(&topic, Duration::from_secs(60), "0-0", 10)
        .await
        .unwrap();
    assert!(none.deliveries.is_empty() && none.deleted.is_empty());

    tokio::time::sleep(Duration::from_millis(100)).await;
    let claimed = live
        .claim_idle(&topic, Duration::from_millis(50), "0-0", 10)
        .await
        .unwrap();
    assert_eq!(claimed.deliveries.len(), 3);
    assert!(
        claimed
            .deliveries
            .iter()
            .all(|d| d.delivery_count == 1 && d.event.is_ok()),
        "claims report each entry's own count and count nothing"
    );
    assert_eq!(claimed.next_cursor, "0-0");
    assert!(claimed.deleted.is_empty());

    // Entries trimmed while pending are reported as deleted and acknowledged.
    let _: i64 = ctx
        .cmd(redis::cmd("XTRIM").arg(&key).arg("MAXLEN").arg(0))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let claimed = crashed
        .claim_idle(&topic, Duration::from_millis(50), "0-0", 10)
        .await
        .unwrap();
    assert!(claimed.deliveries.is_empty());
    let expected: Vec<_> = taken.iter().map(|d| d.entry_id.clone()).collect();
    assert_eq!(claimed.deleted, expected);
    let lag = ctx.transport.lag(Some(GROUP)).await.unwrap();
    assert_eq!(lag[0].pending, 0);
}

#[tokio::test]
async fn recover_own_takes_back_what_a_previous_run_left_pending() {
    let ctx = setup("recover").await;
    let topic = Topic::of_type("Job");
    let key = ctx.stream(&topic);
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    let ids = ctx
        .transport
        .publish(&(0..3).map(|n| event("Job", n)).collect::<Vec<_>>())
        .await
        .unwrap();
    let before = ctx.consumer(GROUP, "worker-1", &topic).await;
    assert_eq!(
        before
            .read(10, Duration::from_millis(100))
            .await
            .unwrap()
            .len(),
        3
    );
    drop(before);
    let _: i64 = ctx.cmd(redis::cmd("XDEL").arg(&key).arg(&ids[1])).await;

    let after = ctx.consumer(GROUP, "worker-1", &topic).await;
    let other = ctx.consumer(GROUP, "worker-2", &topic).await;
    let none = other.recover_own(&topic, "0-0", 10).await.unwrap();
    assert!(none.deliveries.is_empty() && none.next_cursor == "0-0");
    // Pages in stream order, counting nothing.
    let first = after.recover_own(&topic, "0-0", 1).await.unwrap();
    assert_eq!(first.next_cursor, ids[0]);
    let rest = after
        .recover_own(&topic, &first.next_cursor, 10)
        .await
        .unwrap();
    assert_eq!(rest.next_cursor, "0-0");
    assert_eq!(rest.deleted, [ids[1].clone()]);
    let got: Vec<_> = first
        .deliveries
        .iter()
        .chain(&rest.deliveries)
        .map(|d| (d.entry_id.clone(), d.delivery_count))
        .collect();
    assert_eq!(got, [(ids[0].clone(), 1), (ids[2].clone(), 1)]);
    // The deleted one was acknowledged.
    let lag = ctx.transport.lag(Some(GROUP)).await.unwrap();
    assert_eq!(lag[0].pending, 2);
}

#[tokio::test]
async fn redeliver_counts_and_respects_ownership() {
    let ctx = setup("redeliver").await;
    let topic = Topic::of_type("Job");
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    let ids = ctx.transport.publish(&[event("Job", 1)]).await.unwrap();
    let owner = ctx.consumer(GROUP, "owner", &topic).await;
    let other = ctx.consumer(GROUP, "other", &topic).await;
    assert_eq!(
        owner.read(10, Duration::from_millis(100)).await.unwrap()[0].delivery_count,
        1
    );

    let again = owner.redeliver(&topic, &ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (again.entry_id.as_str(), again.delivery_count),
        (ids[0].as_str(), 2)
    );
    assert_eq!(again.event.unwrap().data, json!({"n": 1}));
    assert_eq!(
        owner
            .redeliver(&topic, &ids[0])
            .await
            .unwrap()
            .unwrap()
            .delivery_count,
        3
    );

    // Another consumer's entry is left alone.
    assert!(other.redeliver(&topic, &ids[0]).await.unwrap().is_none());
    let lag = ctx.transport.lag(Some(GROUP)).await.unwrap();
    assert_eq!(
        lag[0]
            .consumers
            .iter()
            .find(|c| c.name == "owner")
            .map(|c| c.pending),
        Some(1)
    );

    owner.ack(&[(topic.clone(), ids.clone())]).await.unwrap();
    assert!(owner.redeliver(&topic, &ids[0]).await.unwrap().is_none());
    assert!(owner.redeliver(&topic, "1-0").await.unwrap().is_none());
}

#[tokio::test]
async fn dead_letter_records_and_acks_atomically() {
    let ctx = setup("dlq").await;
    let topic = Topic::of_type("Job");
    let key = ctx.stream(&topic);
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    let original = event("Job", 7).with_correlation_id("c-7");
    let ids = ctx
        .transport
        .publish(std::slice::from_ref(&original))
        .await
        .unwrap();
    let c = ctx.consumer(GROUP, "c", &topic).await;
    c.read(10, Duration::from_millis(100)).await.unwrap();
    let reason = DeadLetterReason {
        error: "boom: \"quoted\"".into(),
        delivery_count: 5,
        consumer: "c".into(),
    };
    c.dead_letter(&topic, &ids[0], &reason).await.unwrap();

    assert_eq!(
        ctx.transport.lag(Some(GROUP)).await.unwrap()[0].pending,
        0,
        "acked"
    );
    let raw = ctx.xrange(&format!("{}:dlq:{GROUP}", ctx.namespace)).await;
    assert_eq!(raw.len(), 1);
    let names: Vec<&str> = raw[0].1.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "origin_stream",
            "origin_id",
            "group",
            "consumer",
            "error",
            "delivery_count",
            "dead_lettered_at",
            "entry"
        ]
    );
    assert_eq!(field(&raw[0].1, "origin_stream"), key);

    let letters = ctx.transport.dead_letters(GROUP, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        (letter.origin_topic.clone(), letter.origin_id.clone()),
        (topic.clone(), ids[0].clone())
    );
    assert_eq!(letter.group, GROUP);
    assert_eq!(letter.reason, reason);
    assert!(letter.dead_lettered_at > 1.7e9);
    assert_eq!(letter.event.as_ref(), Some(&original));
    assert_eq!(letter.fields.len(), 6);

    // An entry trimmed before it is dead-lettered still gets a record, without fields.
    let ids = ctx.transport.publish(&[event("Job", 8)]).await.unwrap();
    c.read(10, Duration::from_millis(100)).await.unwrap();
    let _: i64 = ctx.cmd(redis::cmd("XDEL").arg(&key).arg(&ids[0])).await;
    c.dead_letter(&topic, &ids[0], &reason).await.unwrap();
    let letters = ctx.transport.dead_letters(GROUP, 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert!(letters[1].fields.is_empty() && letters[1].event.is_none());
    assert_eq!(ctx.transport.dead_letters(GROUP, 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn replay_and_purge_dead_letters() {
    let ctx = setup("replay").await;
    let topic = Topic::of_type("Job");
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    let events: Vec<_> = (0..4).map(|n| event("Job", n)).collect();
    let ids = ctx.transport.publish(&events).await.unwrap();
    let c = ctx.consumer(GROUP, "c", &topic).await;
    c.read(10, Duration::from_millis(100)).await.unwrap();
    let reason = DeadLetterReason {
        error: "e".into(),
        delivery_count: 3,
        consumer: "c".into(),
    };
    for id in &ids {
        c.dead_letter(&topic, id, &reason).await.unwrap();
    }
    let letters = ctx.transport.dead_letters(GROUP, 100).await.unwrap();
    assert_eq!(letters.len(), 4);

    let replayed = ctx
        .transport
        .replay_dead_letters(GROUP, Some(&[letters[0].id.clone()]))
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    let again = c.read(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].entry_id, ids[0], "a new entry id");
    assert_eq!(
        again[0].event.as_ref().unwrap(),
        &events[0],
        "same event, same event id"
    );
    assert_eq!(
        ctx.transport.dead_letters(GROUP, 100).await.unwrap().len(),
        3
    );

    assert_eq!(
        ctx.transport
            .purge_dead_letters(GROUP, Some(&[letters[1].id.clone()]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        ctx.transport
            .replay_dead_letters(GROUP, None)
            .await
            .unwrap(),
        2
    );
    let replayed_all = c.read(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(replayed_all.len(), 2);
    assert!(ctx
        .transport
        .dead_letters(GROUP, 100)
        .await
        .unwrap()
        .is_empty());

    // An entry no longer pending for this consumer (acknowledged) is not dead-lettered.
    c.dead_letter(&topic, &ids[1], &reason).await.unwrap();
    assert!(ctx
        .transport
        .dead_letters(GROUP, 100)
        .await
        .unwrap()
        .is_empty());
    for d in &replayed_all {
        c.dead_letter(&topic, &d.entry_id, &reason).await.unwrap();
    }
    assert_eq!(
        ctx.transport.purge_dead_letters(GROUP, None).await.unwrap(),
        2
    );
    assert_eq!(
        ctx.transport.purge_dead_letters(GROUP, None).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn lag_reports_pending_consumers_and_unknown_lag() {
    let ctx = setup("lag").await;
    let topic = Topic::of_type("Job");
    let key = ctx.stream(&topic);
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    ctx.transport
        .ensure_group(&topic, "audit-consumers", StartFrom::Beginning)
        .await
        .unwrap();
    let ids = ctx
        .transport
        .publish(&(0..5).map(|n| event("Job", n)).collect::<Vec<_>>())
        .await
        .unwrap();
    let c = ctx.consumer(GROUP, "c", &topic).await;
    c.read(2, Duration::from_millis(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let all = ctx.transport.lag(None).await.unwrap();
    let groups: Vec<_> = all
        .iter()
        .map(|l| (l.topic.clone(), l.group.as_str()))
        .collect();
    assert_eq!(
        groups,
        [(topic.clone(), "audit-consumers"), (topic.clone(), GROUP)],
        "the global stream has no group; dlq keys are not streams of the bus"
    );
    let lag = ctx.transport.lag(Some(GROUP)).await.unwrap();
    assert_eq!(lag.len(), 1);
    let l = &lag[0];
    assert_eq!((l.lag, l.pending), (Some(3), 2));
    assert!(l.oldest_pending_idle.unwrap() >= Duration::from_millis(10));
    assert_eq!(l.consumers.len(), 1);
    assert_eq!(
        (l.consumers[0].name.as_str(), l.consumers[0].pending),
        ("c", 2)
    );

    // Deleting an entry the group has not read yet makes the lag unknowable: None, never 0.
    let _: i64 = ctx.cmd(redis::cmd("XDEL").arg(&key).arg(&ids[3])).await;
    let lag = ctx.transport.lag(Some(GROUP)).await.unwrap();
    assert_eq!(lag[0].lag, None);
    assert!(ctx.transport.lag(Some("nobody")).await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_idle_consumers_keeps_those_with_pending_entries() {
    let ctx = setup("idle").await;
    let topic = Topic::of_type("Job");
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    ctx.transport
        .publish(&[event("Job", 1), event("Job", 2)])
        .await
        .unwrap();
    let busy = ctx.consumer(GROUP, "busy", &topic).await;
    let idle = ctx.consumer(GROUP, "idle", &topic).await;
    // (Redis 7.0 creates a consumer on its first delivery, not on an empty read.)
    let done = idle.read(1, Duration::from_millis(50)).await.unwrap();
    idle.ack(&[(topic.clone(), vec![done[0].entry_id.clone()])])
        .await
        .unwrap();
    assert_eq!(
        busy.read(10, Duration::from_millis(50))
            .await
            .unwrap()
            .len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(150)).await;

    assert!(busy
        .remove_idle_consumers(&topic, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
    let removed = busy
        .remove_idle_consumers(&topic, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(removed, ["idle"]);
    let lag = ctx.transport.lag(Some(GROUP)).await.unwrap();
    let names: Vec<_> = lag[0]
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(names, [("busy", 1)]);
}

#[tokio::test]
async fn a_vanished_group_is_group_missing() {
    let ctx = setup("nogroup").await;
    let topic = Topic::of_type("Job");
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    let c = ctx.consumer(GROUP, "c", &topic).await;
    let _: i64 = ctx.cmd(redis::cmd("DEL").arg(ctx.stream(&topic))).await;

    let is_missing = |e: Error| match e {
        Error::GroupMissing { stream, group } => stream == "Job" && group == GROUP,
        other => panic!("expected GroupMissing, got {other}"),
    };
    assert!(is_missing(
        c.read(10, Duration::from_millis(10)).await.unwrap_err()
    ));
    assert!(is_missing(
        c.recover_own(&topic, "0-0", 10).await.unwrap_err()
    ));
    assert!(is_missing(
        c.claim_idle(&topic, Duration::ZERO, "0-0", 10)
            .await
            .unwrap_err()
    ));
    assert!(is_missing(c.redeliver(&topic, "1-0").await.unwrap_err()));
    let reason = DeadLetterReason {
        error: "e".into(),
        delivery_count: 1,
        consumer: "c".into(),
    };
    assert!(is_missing(
        c.dead_letter(&topic, "1-0", &reason).await.unwrap_err()
    ));
    let dlq: i64 = ctx
        .cmd(redis::cmd("EXISTS").arg(format!("{}:dlq:{GROUP}", ctx.namespace)))
        .await;
    assert_eq!(dlq, 0, "nothing written before the NOGROUP error");
    assert!(c
        .remove_idle_consumers(&topic, Duration::ZERO)
        .await
        .is_err());

    // Recreating the group recovers.
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    assert!(c
        .read(10, Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    // The test server has no password, and Redis accepts `AUTH default <anything>` then:
    // use a dedicated ACL user.
    let ctx = setup("auth").await;
    let user = format!("eventbus-test-{}", uuid::Uuid::new_v4().simple());
    let _: () = ctx
        .cmd(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&user)
                .arg("on")
                .arg(">right-pass-1")
                .arg("~*")
                .arg("+@all"),
        )
        .await;
    let url = redis_url().replacen("redis://", &format!("redis://{user}:wrong-pass-2@"), 1);
    let result = RedisTransport::connect(RedisConfig::new(&url).unwrap()).await;

    // A user without the stream commands (but reading partition counts) gets a permission
    // error naming the operation.
    // (It may run MULTI: redis-rs 1.8.1 panics in debug builds when MULTI itself is refused,
    // subtracting with overflow in its transaction bookkeeping.)
    let limited = format!("{user}-limited");
    let _: () = ctx
        .cmd(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&limited)
                .arg("on")
                .arg(">right-pass-3")
                .arg("~*")
                .arg("+ping")
                .arg("+info")
                .arg("+hello")
                .arg("+client")
                .arg("+multi")
                .arg("+exec")
                .arg("+hget")
                .arg("+lrange"),
        )
        .await;
    let url = redis_url().replacen("redis://", &format!("redis://{limited}:right-pass-3@"), 1);
    let limited_result = match RedisTransport::connect(RedisConfig::new(&url).unwrap()).await {
        Ok(t) => t.publish(&[event("Job", 1)]).await.map(|_| ()),
        Err(e) => Err(e.into()),
    };
    let _: i64 = ctx
        .cmd(redis::cmd("ACL").arg("DELUSER").arg(&user).arg(&limited))
        .await;

    let err = result.unwrap_err();
    let text = err.to_string();
    let eventbus_redis::Error::Transport(transport) = &err else {
        panic!("{err}")
    };
    assert_eq!(transport.kind(), TransportErrorKind::Auth, "{text}");
    assert!(!err.is_retryable());
    assert!(!text.contains("wrong-pass-2"), "{text}");
    assert!(text.contains(&format!("{user}:***@")), "{text}");
    assert!(!format!("{err:?}").contains("wrong-pass-2"));

    let err = limited_result.unwrap_err();
    let text = err.to_string();
    let Error::Transport(transport) = &err else {
        panic!("{err}")
    };
    assert_eq!(transport.kind(), TransportErrorKind::Permission, "{text}");
    assert!(
        !text.contains("right-pass-3") && text.contains("publish"),
        "{text}"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_connection_error_naming_the_url() {
    let config = RedisConfig::new("redis://user:secret-pw@127.0.0.1:1/0").unwrap();
    let err = RedisTransport::connect(config).await.unwrap_err();
    let text = err.to_string();
    let eventbus_redis::Error::Transport(transport) = &err else {
        panic!("{err}")
    };
    assert_eq!(transport.kind(), TransportErrorKind::Connection, "{text}");
    assert!(err.is_retryable());
    assert!(text.contains("redis://user:***@127.0.0.1:1/0"), "{text}");
    assert!(!text.contains("secret-pw"), "{text}");
}

#[tokio::test]
async fn describe_and_server_version() {
    let ctx = setup("describe").await;
    assert!(ctx.transport.describe().starts_with("redis://"));
    assert!(ctx
        .transport
        .server_version()
        .starts_with(|c: char| c.is_ascii_digit()));
    // Redis or Valkey, with its own version: Valkey's `redis_version` is the Redis version
    // it is compatible with, its own is `valkey_version`.
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut ctx.raw.clone())
        .await
        .unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let server = ctx.transport.client().server();
    assert_eq!(server.redis_version, ctx.transport.server_version());
    match field("valkey_version") {
        Some(own) => {
            assert!(server.is_valkey(), "{server:?}");
            assert_eq!(server.version, own);
            assert_eq!(server.to_string(), format!("Valkey {own}"));
        }
        None => {
            assert_eq!(server.name, "redis");
            assert_eq!(server.version, server.redis_version);
            assert_eq!(server.to_string(), format!("Redis {}", server.version));
        }
    }
}

#[tokio::test]
async fn recovery_claims_and_renewals_respect_ownership_and_report_own_counts() {
    let ctx = setup("ownership").await;
    let topic = Topic::of_type("Job");
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    let ids = ctx
        .transport
        .publish(&(0..3).map(|n| event("Job", n)).collect::<Vec<_>>())
        .await
        .unwrap();
    let c1 = ctx.consumer(GROUP, "c1", &topic).await;
    let c2 = ctx.consumer(GROUP, "c2", &topic).await;
    assert_eq!(
        c1.read(10, Duration::from_millis(100)).await.unwrap().len(),
        3
    );
    for _ in 0..2 {
        c1.redeliver(&topic, &ids[1]).await.unwrap().unwrap();
    }

    // c2 takes the first entry; c1's recovery must not take it back.
    let taken = c2
        .claim_idle(&topic, Duration::ZERO, "0-0", 1)
        .await
        .unwrap();
    assert_eq!(taken.deliveries.len(), 1);
    assert_eq!(taken.deliveries[0].entry_id, ids[0]);
    let recovered = c1.recover_own(&topic, "0-0", 10).await.unwrap();
    let got: Vec<_> = recovered
        .deliveries
        .iter()
        .map(|d| (d.entry_id.clone(), d.delivery_count))
        .collect();
    assert_eq!(got, [(ids[1].clone(), 3), (ids[2].clone(), 1)]);

    // c2 claims the rest: each entry reports its own count, whatever c2 already holds.
    let all = c2
        .claim_idle(&topic, Duration::ZERO, "0-0", 10)
        .await
        .unwrap();
    let got: Vec<_> = all
        .deliveries
        .iter()
        .map(|d| (d.entry_id.clone(), d.delivery_count))
        .collect();
    assert_eq!(
        got,
        [
            (ids[0].clone(), 1),
            (ids[1].clone(), 3),
            (ids[2].clone(), 1)
        ]
    );

    // c1 holds nothing any more; c2 renews all three without counting a delivery.
    assert_eq!(c1.renew(&topic, &ids).await.unwrap(), ids);
    assert!(c2.renew(&topic, &ids).await.unwrap().is_empty());
    let again = c2.redeliver(&topic, &ids[2]).await.unwrap().unwrap();
    assert_eq!(again.delivery_count, 2);
}

#[tokio::test]
async fn replay_refuses_a_dead_letter_naming_a_stream_outside_the_namespace() {
    let ctx = setup("replay_foreign").await;
    let dlq = ctx.transport.keys().dead_letters(GROUP);
    let foreign = format!("{}-other:stream:Job", ctx.namespace);
    let _: String = ctx
        .cmd(
            redis::cmd("XADD")
                .arg(&dlq)
                .arg("*")
                .arg("origin_stream")
                .arg(&foreign)
                .arg("origin_id")
                .arg("1-0")
                .arg("entry")
                .arg(r#"[["event_id","e"]]"#),
        )
        .await;
    let err = ctx
        .transport
        .replay_dead_letters(GROUP, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains(&foreign), "{err}");
    let exists: i64 = ctx.cmd(redis::cmd("EXISTS").arg(&foreign)).await;
    assert_eq!(exists, 0, "nothing written to the foreign stream");
    assert_eq!(
        ctx.transport.dead_letters(GROUP, 10).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn give_back_uncounts_and_makes_claimable_only_what_this_consumer_holds() {
    let ctx = setup("give_back").await;
    let topic = Topic::of_type("Job");
    ctx.transport
        .ensure_group(&topic, GROUP, StartFrom::New)
        .await
        .unwrap();
    let ids = ctx
        .transport
        .publish(&(0..2).map(|n| event("Job", n)).collect::<Vec<_>>())
        .await
        .unwrap();
    let c1 = ctx.consumer(GROUP, "c1", &topic).await;
    let c2 = ctx.consumer(GROUP, "c2", &topic).await;
    assert_eq!(
        c1.read(1, Duration::from_millis(100)).await.unwrap().len(),
        1
    );
    assert_eq!(
        c2.read(1, Duration::from_millis(100)).await.unwrap().len(),
        1
    );

    // c1 gives back both: only its own entry changes.
    let back = [(ids[0].clone(), 0), (ids[1].clone(), 0)];
    c1.give_back(&topic, &back, Duration::from_secs(60))
        .await
        .unwrap();
    let claimed = c2
        .claim_idle(&topic, Duration::from_secs(30), "0-0", 10)
        .await
        .unwrap();
    let got: Vec<_> = claimed
        .deliveries
        .iter()
        .map(|d| (d.entry_id.clone(), d.delivery_count))
        .collect();
    assert_eq!(got, [(ids[0].clone(), 0)], "claimable at once, uncounted");
}
