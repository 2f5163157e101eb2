//! Tests of the in-memory transport against the Redis Streams semantics it mirrors.

use std::time::Duration;

use serde_json::{json, Value};

use super::MemoryTransport;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::memory::streams::StreamId;
use crate::transport::{
    ConsumerSpec, DeadLetterReason, Delivery, StartFrom, StreamAdmin, StreamConsumer,
    StreamTransport, Topic,
};

const GROUP: &str = "svc-consumers";

fn event(event_type: &str, n: u64) -> Envelope<Value> {
    Envelope::new(event_type, 1, "test", json!({ "n": n }))
}

fn a() -> Topic {
    Topic::of_type("A")
}

async fn consumer(
    t: &MemoryTransport,
    group: &str,
    name: &str,
    topics: &[Topic],
) -> Box<dyn StreamConsumer> {
    let spec = ConsumerSpec {
        group: group.into(),
        consumer: name.into(),
        topics: topics.to_vec(),
    };
    t.consumer(spec).await.unwrap()
}

/// A transport with `group` on topic `A` from the beginning, and a consumer `c1` of it.
async fn setup(t: &MemoryTransport) -> Box<dyn StreamConsumer> {
    t.ensure_group(&a(), GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    consumer(t, GROUP, "c1", &[a()]).await
}

async fn publish_n(
    t: &MemoryTransport,
    event_type: &str,
    range: std::ops::Range<u64>,
) -> Vec<String> {
    let events: Vec<_> = range.map(|n| event(event_type, n)).collect();
    t.publish(&events).await.unwrap()
}

fn ns(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries
        .iter()
        .map(|d| d.event.as_ref().unwrap().data["n"].as_u64().unwrap())
        .collect()
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.entry_id.clone()).collect()
}

async fn read(c: &dyn StreamConsumer, count: usize) -> Vec<Delivery> {
    c.read(count, Duration::ZERO).await.unwrap()
}

fn reason(error: &str) -> DeadLetterReason {
    DeadLetterReason {
        error: error.into(),
        delivery_count: 3,
        consumer: "c1".into(),
    }
}

#[tokio::test]
async fn publish_appends_to_type_and_global_streams() {
    let t = MemoryTransport::new();
    for topic in [a(), Topic::of_type("B"), Topic::All] {
        t.ensure_group(&topic, GROUP, StartFrom::Beginning)
            .await
            .unwrap();
    }
    let events = vec![event("A", 1), event("B", 2), event("A", 3)];
    let published = t.publish(&events).await.unwrap();
    assert_eq!(published.len(), 3);

    let ca = consumer(&t, GROUP, "c", &[a()]).await;
    let got = read(ca.as_ref(), 10).await;
    assert_eq!(ns(&got), [1, 3]);
    assert_eq!(ids(&got), [published[0].clone(), published[2].clone()]);
    assert!(got.iter().all(|d| d.topic == a() && d.delivery_count == 1));
    let cb = consumer(&t, GROUP, "c", &[Topic::of_type("B")]).await;
    assert_eq!(ns(&read(cb.as_ref(), 10).await), [2]);
    let call = consumer(&t, GROUP, "c", &[Topic::All]).await;
    assert_eq!(ns(&read(call.as_ref(), 10).await), [1, 2, 3]);
}

#[tokio::test]
async fn entry_ids_increase_strictly_within_one_millisecond() {
    let t = MemoryTransport::new();
    let published = publish_n(&t, "A", 0..500).await;
    let parsed: Vec<StreamId> = published
        .iter()
        .map(|id| StreamId::parse(id).unwrap())
        .collect();
    assert!(parsed.windows(2).all(|w| w[0] < w[1]), "{published:?}");
    assert!(published.iter().all(|id| id.split_once('-').is_some()));
}

#[tokio::test]
async fn group_starts_at_new_or_beginning_and_is_created_once() {
    let t = MemoryTransport::new();
    publish_n(&t, "A", 0..2).await;
    t.ensure_group(&a(), "new", StartFrom::New).await.unwrap();
    t.ensure_group(&a(), "old", StartFrom::Beginning)
        .await
        .unwrap();
    publish_n(&t, "A", 2..3).await;
    // An existing group keeps its position.
    t.ensure_group(&a(), "new", StartFrom::Beginning)
        .await
        .unwrap();

    let new = consumer(&t, "new", "c", &[a()]).await;
    assert_eq!(ns(&read(new.as_ref(), 10).await), [2]);
    let old = consumer(&t, "old", "c", &[a()]).await;
    assert_eq!(ns(&read(old.as_ref(), 10).await), [0, 1, 2]);

    // A group made before its stream exists creates it.
    t.ensure_group(&Topic::of_type("Later"), "g", StartFrom::New)
        .await
        .unwrap();
    let later = consumer(&t, "g", "c", &[Topic::of_type("Later")]).await;
    assert!(read(later.as_ref(), 10).await.is_empty());
}

#[tokio::test]
async fn consumers_of_one_group_share_and_groups_each_get_all() {
    let t = MemoryTransport::new();
    let c1 = setup(&t).await;
    let c2 = consumer(&t, GROUP, "c2", &[a()]).await;
    t.ensure_group(&a(), "other", StartFrom::Beginning)
        .await
        .unwrap();
    let other = consumer(&t, "other", "c1", &[a()]).await;
    publish_n(&t, "A", 0..10).await;

    let first = read(c1.as_ref(), 3).await;
    let rest = read(c2.as_ref(), 100).await;
    assert_eq!(ns(&first), [0, 1, 2]);
    assert_eq!(ns(&rest), (3..10).collect::<Vec<_>>());
    assert!(read(c1.as_ref(), 100).await.is_empty());
    assert_eq!(
        ns(&read(other.as_ref(), 100).await),
        (0..10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn count_applies_per_topic() {
    let t = MemoryTransport::new();
    let b = Topic::of_type("B");
    t.ensure_group(&a(), GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    t.ensure_group(&b, GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    publish_n(&t, "A", 0..5).await;
    publish_n(&t, "B", 10..15).await;
    let c = consumer(&t, GROUP, "c", &[a(), b]).await;
    assert_eq!(ns(&read(c.as_ref(), 2).await), [0, 1, 10, 11]);
}

#[tokio::test(start_paused = true)]
async fn blocking_read_wakes_on_publish_and_times_out() {
    let t = MemoryTransport::new();
    let c = setup(&t).await;

    let started = tokio::time::Instant::now();
    let got = c.read(10, Duration::from_secs(5)).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(started.elapsed(), Duration::from_secs(5));

    let reader = tokio::spawn(async move { c.read(10, Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!reader.is_finished());
    publish_n(&t, "B", 0..1).await; // another stream: keeps waiting
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!reader.is_finished());
    publish_n(&t, "A", 7..8).await;
    let got = reader.await.unwrap().unwrap();
    assert_eq!(ns(&got), [7]);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn ack_removes_from_pending() {
    let t = MemoryTransport::new();
    let c = setup(&t).await;
    publish_n(&t, "A", 0..3).await;
    let got = read(c.as_ref(), 10).await;
    assert_eq!(t.lag(None).await.unwrap()[0].pending, 3);

    let acks = vec![(
        a(),
        vec![
            got[0].entry_id.clone(),
            got[2].entry_id.clone(),
            "1-0".into(),
        ],
    )];
    c.ack(&acks).await.unwrap();
    let lag = &t.lag(Some(GROUP)).await.unwrap()[0];
    assert_eq!(lag.pending, 1);
    assert_eq!(lag.consumers[0].pending, 1);
    assert!(c.redeliver(&a(), &got[0].entry_id).await.unwrap().is_none());
    // Acking on a missing group or stream is a no-op, like XACK.
    c.ack(&[(Topic::of_type("Nope"), vec!["1-0".into()])])
        .await
        .unwrap();
    assert!(c.ack(&[(a(), vec!["garbage".into()])]).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn claim_idle_takes_only_idle_entries_without_counting() {
    let t = MemoryTransport::new();
    let c1 = setup(&t).await;
    let c2 = consumer(&t, GROUP, "c2", &[a()]).await;
    publish_n(&t, "A", 0..3).await;
    let got = read(c1.as_ref(), 10).await;

    tokio::time::advance(Duration::from_secs(10)).await;
    c1.redeliver(&a(), &got[1].entry_id).await.unwrap().unwrap(); // resets its idle time
    let claimed = c2
        .claim_idle(&a(), Duration::from_secs(5), "0-0", 10)
        .await
        .unwrap();
    assert_eq!(ns(&claimed.deliveries), [0, 2]);
    assert!(
        claimed.deliveries.iter().all(|d| d.delivery_count == 1),
        "a claim reports the entries' own counts and counts nothing"
    );
    assert!(claimed.deleted.is_empty());
    assert_eq!(claimed.next_cursor, "0-0");

    let lag = &t.lag(None).await.unwrap()[0];
    let pending: Vec<_> = lag
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(pending, [("c1", 1), ("c2", 2)]);
    // Just claimed: not idle any more.
    let again = c1
        .claim_idle(&a(), Duration::from_secs(5), "0-0", 10)
        .await
        .unwrap();
    assert!(again.deliveries.is_empty());
    // The cursor pages through the PEL.
    tokio::time::advance(Duration::from_secs(10)).await;
    let page = c1
        .claim_idle(&a(), Duration::from_secs(5), "0-0", 1)
        .await
        .unwrap();
    assert_eq!(ids(&page.deliveries), [got[0].entry_id.clone()]);
    assert_eq!(page.next_cursor, got[1].entry_id);
    let page = c1
        .claim_idle(&a(), Duration::ZERO, &page.next_cursor, 5)
        .await
        .unwrap();
    assert_eq!(ns(&page.deliveries), [1, 2]);
    assert_eq!(
        page.deliveries[0].delivery_count, 2,
        "counted by its redelivery"
    );
    assert_eq!(page.next_cursor, "0-0");
}

#[tokio::test]
async fn claim_idle_reports_and_acks_trimmed_entries() {
    let t = MemoryTransport::builder().max_len(2).build();
    let c1 = setup(&t).await;
    let c2 = consumer(&t, GROUP, "c2", &[a()]).await;
    publish_n(&t, "A", 0..2).await;
    let got = read(c1.as_ref(), 10).await;
    publish_n(&t, "A", 2..4).await; // trims both pending entries

    let claimed = c2
        .claim_idle(&a(), Duration::from_secs(3600), "0-0", 1)
        .await
        .unwrap();
    assert!(claimed.deliveries.is_empty());
    assert_eq!(
        claimed.deleted,
        [got[0].entry_id.clone()],
        "deleted entries count towards count"
    );
    assert_eq!(claimed.next_cursor, got[1].entry_id);
    let claimed = c2
        .claim_idle(&a(), Duration::from_secs(3600), &claimed.next_cursor, 10)
        .await
        .unwrap();
    assert_eq!(claimed.deleted, [got[1].entry_id.clone()]);
    assert_eq!(t.lag(None).await.unwrap()[0].pending, 0);
    assert!(c2.claim_idle(&a(), Duration::ZERO, "0-0", 0).await.is_err());
    assert!(c2
        .claim_idle(&a(), Duration::ZERO, "nonsense", 1)
        .await
        .is_err());
}

#[tokio::test]
async fn recover_own_takes_back_this_consumers_pending_entries() {
    let t = MemoryTransport::builder().max_len(4).build();
    let c1 = setup(&t).await;
    let c2 = consumer(&t, GROUP, "c2", &[a()]).await;
    publish_n(&t, "A", 0..3).await;
    let got = read(c1.as_ref(), 10).await;
    publish_n(&t, "A", 3..4).await;
    read(c2.as_ref(), 10).await;
    c1.ack(&[(a(), vec![got[1].entry_id.clone()])])
        .await
        .unwrap();

    // A restart: the same name, a new handle. Pages in stream order, counting nothing.
    let restarted = consumer(&t, GROUP, "c1", &[a()]).await;
    let first = restarted.recover_own(&a(), "0-0", 1).await.unwrap();
    assert_eq!(ns(&first.deliveries), [0]);
    assert_eq!(first.deliveries[0].delivery_count, 1);
    assert_eq!(first.next_cursor, got[0].entry_id);
    let rest = restarted
        .recover_own(&a(), &first.next_cursor, 10)
        .await
        .unwrap();
    assert_eq!(ns(&rest.deliveries), [2]);
    assert_eq!(rest.next_cursor, "0-0");
    let all = restarted.recover_own(&a(), "0-0", 10).await.unwrap();
    assert_eq!(ns(&all.deliveries), [0, 2]);
    assert!(all.deliveries.iter().all(|d| d.delivery_count == 1));

    publish_n(&t, "A", 4..6).await; // trims entries 0 and 1
    let left = restarted.recover_own(&a(), "0-0", 10).await.unwrap();
    assert_eq!(ns(&left.deliveries), [2]);
    assert_eq!(
        left.deleted,
        [got[0].entry_id.clone()],
        "trimmed: acknowledged"
    );
    assert_eq!(t.lag(None).await.unwrap()[0].pending, 2);
}

#[tokio::test(start_paused = true)]
async fn renew_keeps_only_what_this_consumer_still_holds() {
    let t = MemoryTransport::new();
    let c1 = setup(&t).await;
    let c2 = consumer(&t, GROUP, "c2", &[a()]).await;
    publish_n(&t, "A", 0..3).await;
    let got = read(c1.as_ref(), 10).await;
    let all: Vec<_> = got.iter().map(|d| d.entry_id.clone()).collect();

    tokio::time::advance(Duration::from_secs(10)).await;
    // c2 takes entry 0; c1 acks entry 1; c1 renews all three.
    let taken = c2
        .claim_idle(&a(), Duration::from_secs(5), "0-0", 1)
        .await
        .unwrap();
    assert_eq!(ns(&taken.deliveries), [0]);
    c1.ack(&[(a(), vec![all[1].clone()])]).await.unwrap();
    let lost = c1.renew(&a(), &all).await.unwrap();
    assert_eq!(lost, [all[0].clone(), all[1].clone()]);
    // Entry 2 is held again: not idle, so nobody can claim it; its count is unchanged.
    let none = c2
        .claim_idle(&a(), Duration::from_secs(5), "0-0", 10)
        .await
        .unwrap();
    assert!(none.deliveries.is_empty());
    let again = c1.redeliver(&a(), &all[2]).await.unwrap().unwrap();
    assert_eq!(again.delivery_count, 2, "a renewal counts no delivery");
}

#[tokio::test]
async fn redeliver_counts_and_respects_ownership() {
    let t = MemoryTransport::new();
    let c1 = setup(&t).await;
    let c2 = consumer(&t, GROUP, "c2", &[a()]).await;
    publish_n(&t, "A", 0..1).await;
    let id = read(c1.as_ref(), 10).await[0].entry_id.clone();

    assert_eq!(
        c1.redeliver(&a(), &id)
            .await
            .unwrap()
            .unwrap()
            .delivery_count,
        2
    );
    let third = c1.redeliver(&a(), &id).await.unwrap().unwrap();
    assert_eq!((third.delivery_count, ns(&[third])[0]), (3, 0));
    assert!(c2.redeliver(&a(), &id).await.unwrap().is_none());
    c1.ack(&[(a(), vec![id.clone()])]).await.unwrap();
    assert!(c1.redeliver(&a(), &id).await.unwrap().is_none());
}

#[tokio::test]
async fn dead_letters_list_replay_and_purge() {
    let t = MemoryTransport::new();
    let c = setup(&t).await;
    t.ensure_group(&Topic::All, GROUP, StartFrom::New)
        .await
        .unwrap();
    let all = consumer(&t, GROUP, "c1", &[Topic::All]).await;
    publish_n(&t, "A", 0..2).await;
    read(all.as_ref(), 10).await;
    let bad = t.append_malformed(&a(), "missing field `data`");
    let got = read(c.as_ref(), 10).await;
    assert_eq!(got[2].entry_id, bad);
    assert_eq!(
        got[2].event.as_ref().unwrap_err().reason,
        "missing field `data`"
    );

    c.dead_letter(&a(), &got[0].entry_id, &reason("boom"))
        .await
        .unwrap();
    c.dead_letter(&a(), &bad, &reason("malformed"))
        .await
        .unwrap();
    assert_eq!(
        t.lag(None)
            .await
            .unwrap()
            .iter()
            .find(|l| l.topic == a())
            .unwrap()
            .pending,
        1
    );

    let letters = t.dead_letters(GROUP, 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    let (first, second) = (&letters[0], &letters[1]);
    assert!(StreamId::parse(&first.id).unwrap() < StreamId::parse(&second.id).unwrap());
    assert_eq!(
        (&first.origin_topic, &first.origin_id),
        (&a(), &got[0].entry_id)
    );
    assert_eq!(first.reason, reason("boom"));
    assert_eq!(first.group, GROUP);
    let event = first.event.as_ref().unwrap();
    assert_eq!(event.event_id, got[0].event.as_ref().unwrap().event_id);
    assert!(first.fields.contains(&("event_type".into(), "A".into())));
    assert!(first.fields.contains(&("data".into(), r#"{"n":0}"#.into())));
    assert!(second.event.is_none());
    assert_eq!(
        second.fields,
        [("malformed".to_owned(), "missing field `data`".to_owned())]
    );
    assert_eq!(t.dead_letters(GROUP, 1).await.unwrap().len(), 1);
    assert!(t.dead_letters("other", 10).await.unwrap().is_empty());

    let replayed = t
        .replay_dead_letters(GROUP, Some(&[first.id.clone(), "9-9".into()]))
        .await;
    assert_eq!(replayed.unwrap(), 1);
    let again = read(c.as_ref(), 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.as_ref().unwrap().event_id, event.event_id);
    assert!(StreamId::parse(&again[0].entry_id).unwrap() > StreamId::parse(&bad).unwrap());
    assert!(
        read(all.as_ref(), 10).await.is_empty(),
        "replay goes to the origin stream only"
    );

    assert_eq!(t.purge_dead_letters(GROUP, None).await.unwrap(), 1);
    assert!(t.dead_letters(GROUP, 10).await.unwrap().is_empty());
    assert_eq!(t.replay_dead_letters(GROUP, None).await.unwrap(), 0);
}

/// As on Redis, where the stored bytes are copied back: replay re-appends the stored entry
/// itself, a malformed one included, never a rendering of it.
#[tokio::test]
async fn a_malformed_dead_letter_replays_unchanged() {
    let t = MemoryTransport::new();
    let c = setup(&t).await;
    let bad = t.append_malformed(&a(), "field `data` is not valid UTF-8");
    read(c.as_ref(), 10).await;
    c.dead_letter(&a(), &bad, &reason("malformed"))
        .await
        .unwrap();
    assert_eq!(t.replay_dead_letters(GROUP, None).await.unwrap(), 1);
    let again = read(c.as_ref(), 10).await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].entry_id, bad, "a new entry");
    assert_eq!(
        again[0].event.as_ref().unwrap_err().reason,
        "field `data` is not valid UTF-8",
        "the same malformed entry, not a repaired one"
    );
    assert!(t.dead_letters(GROUP, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn purge_and_replay_select_by_id() {
    let t = MemoryTransport::new();
    let c = setup(&t).await;
    publish_n(&t, "A", 0..3).await;
    for d in read(c.as_ref(), 10).await {
        c.dead_letter(&a(), &d.entry_id, &reason("x"))
            .await
            .unwrap();
    }
    let letters = t.dead_letters(GROUP, 10).await.unwrap();
    assert_eq!(
        t.purge_dead_letters(GROUP, Some(&[letters[1].id.clone()]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(t.replay_dead_letters(GROUP, None).await.unwrap(), 2);
    assert_eq!(ns(&read(c.as_ref(), 10).await), [0, 2]);
}

#[tokio::test(start_paused = true)]
async fn lag_counts_undelivered_entries_and_is_unknown_after_trimming_unread_ones() {
    let t = MemoryTransport::builder().max_len(5).build();
    t.ensure_group(&a(), "fast", StartFrom::New).await.unwrap();
    let c = setup(&t).await;
    let fast = consumer(&t, "fast", "f", &[a()]).await;
    publish_n(&t, "A", 0..5).await;
    read(c.as_ref(), 2).await;
    tokio::time::advance(Duration::from_secs(3)).await;

    let lag = t.lag(Some(GROUP)).await.unwrap();
    assert_eq!(lag.len(), 1);
    assert_eq!((lag[0].lag, lag[0].pending), (Some(3), 2));
    assert_eq!(lag[0].oldest_pending_idle, Some(Duration::from_secs(3)));
    assert_eq!(lag[0].consumers[0].name, "c1");
    assert_eq!(lag[0].consumers[0].idle, Duration::from_secs(3));

    read(fast.as_ref(), 100).await;
    publish_n(&t, "A", 5..9).await; // trims entries 0..4: 2 and 3 never read by GROUP
    let lag = t.lag(None).await.unwrap();
    let by_group: Vec<_> = lag.iter().map(|l| (l.group.as_str(), l.lag)).collect();
    assert_eq!(
        by_group,
        [("fast", Some(4)), (GROUP, None)],
        "sorted by topic then group"
    );

    assert_eq!(ns(&read(c.as_ref(), 2).await), [4, 5]);
    assert_eq!(
        t.lag(Some(GROUP)).await.unwrap()[0].lag,
        Some(3),
        "known again past the gap"
    );
    read(c.as_ref(), 100).await;
    assert_eq!(t.lag(Some(GROUP)).await.unwrap()[0].lag, Some(0));
    t.ensure_group(&a(), "late", StartFrom::Beginning)
        .await
        .unwrap();
    assert_eq!(t.lag(Some("late")).await.unwrap()[0].lag, Some(5));
}

#[tokio::test(start_paused = true)]
async fn remove_idle_consumers_keeps_those_with_pending_entries() {
    let t = MemoryTransport::new();
    let c1 = setup(&t).await;
    let c2 = consumer(&t, GROUP, "c2", &[a()]).await;
    publish_n(&t, "A", 0..1).await;
    read(c1.as_ref(), 10).await;
    read(c2.as_ref(), 10).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let c3 = consumer(&t, GROUP, "c3", &[a()]).await;
    read(c3.as_ref(), 10).await;

    let removed = c3
        .remove_idle_consumers(&a(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(removed, ["c2"]);
    let names: Vec<_> = t.lag(None).await.unwrap()[0]
        .consumers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["c1", "c3"]);
}

#[tokio::test(start_paused = true)]
async fn flush_makes_groups_missing_until_recreated() {
    let t = MemoryTransport::new();
    let c = setup(&t).await;
    publish_n(&t, "A", 0..1).await;
    let id = read(c.as_ref(), 10).await[0].entry_id.clone();

    let blocked = {
        let c = consumer(&t, GROUP, "c2", &[a()]).await;
        tokio::spawn(async move { c.read(10, Duration::from_secs(60)).await })
    };
    tokio::task::yield_now().await;
    t.flush();
    let missing = |r: Error| matches!(r, Error::GroupMissing { ref stream, ref group } if stream == "A" && group == GROUP);
    assert!(
        missing(blocked.await.unwrap().unwrap_err()),
        "a blocked read wakes up"
    );
    assert!(missing(c.read(10, Duration::ZERO).await.unwrap_err()));
    assert!(missing(c.recover_own(&a(), "0-0", 10).await.unwrap_err()));
    assert!(missing(
        c.claim_idle(&a(), Duration::ZERO, "0-0", 10)
            .await
            .unwrap_err()
    ));
    assert!(missing(c.redeliver(&a(), &id).await.unwrap_err()));
    assert!(missing(
        c.remove_idle_consumers(&a(), Duration::ZERO)
            .await
            .unwrap_err()
    ));
    c.ack(&[(a(), vec![id])]).await.unwrap();
    assert!(t.lag(None).await.unwrap().is_empty());

    t.ensure_group(&a(), GROUP, StartFrom::New).await.unwrap();
    assert!(c.read(10, Duration::ZERO).await.unwrap().is_empty());
    publish_n(&t, "A", 1..2).await;
    assert_eq!(ns(&read(c.as_ref(), 10).await), [1]);
}

#[tokio::test]
async fn reading_a_stream_without_the_group_fails_before_reading_anything() {
    let t = MemoryTransport::new();
    t.ensure_group(&a(), GROUP, StartFrom::Beginning)
        .await
        .unwrap();
    publish_n(&t, "A", 0..1).await;
    let c = consumer(&t, GROUP, "c", &[a(), Topic::of_type("Missing")]).await;
    let err = c.read(10, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::GroupMissing { ref stream, .. } if stream == "Missing"));
    assert_eq!(t.lag(None).await.unwrap()[0].pending, 0);
}

#[tokio::test]
async fn consumer_spec_is_checked_and_backend_described() {
    let t = MemoryTransport::default();
    let spec = |g: &str, c: &str, topics: Vec<Topic>| ConsumerSpec {
        group: g.into(),
        consumer: c.into(),
        topics,
    };
    assert!(matches!(
        t.consumer(spec("", "c", vec![a()])).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        t.consumer(spec("g", "", vec![a()])).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        t.consumer(spec("g", "c", vec![])).await,
        Err(Error::Config(_))
    ));
    assert_eq!(t.describe(), "memory");
}

#[tokio::test]
async fn global_stream_and_per_type_limits_trim_oldest_first() {
    let t = MemoryTransport::builder()
        .max_len(3)
        .max_len_for("B", 1)
        .max_len_all(4)
        .build();
    for topic in [a(), Topic::of_type("B"), Topic::All] {
        t.ensure_group(&topic, GROUP, StartFrom::Beginning)
            .await
            .unwrap();
    }
    publish_n(&t, "A", 0..5).await;
    publish_n(&t, "B", 5..7).await;
    let read_all = |topic: Topic| {
        let t = t.clone();
        async move { ns(&read(consumer(&t, GROUP, "c", &[topic]).await.as_ref(), 100).await) }
    };
    assert_eq!(read_all(a()).await, [2, 3, 4]);
    assert_eq!(read_all(Topic::of_type("B")).await, [6]);
    assert_eq!(read_all(Topic::All).await, [3, 4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_get_every_entry_exactly_once() {
    let t = MemoryTransport::new();
    t.ensure_group(&a(), GROUP, StartFrom::New).await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..4 {
        let c = consumer(&t, GROUP, &format!("c{i}"), &[a()]).await;
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let got = c.read(7, Duration::from_millis(20)).await.unwrap();
                if got.is_empty() && finished {
                    break seen;
                }
                seen.extend(ns(&got));
            }
        }));
    }
    for chunk in 0..100 {
        publish_n(&t, "A", chunk * 10..chunk * 10 + 10).await;
        tokio::task::yield_now().await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..1_000).collect::<Vec<_>>());
}
