//! Operator queries (`admin`) against the real Redis, each test in its own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use eventbus_core::transport::{StartFrom, StreamTransport, Topic};
use eventbus_core::Envelope;
use serde_json::json;
use support::setup;

#[tokio::test]
async fn stream_summary_is_none_for_a_missing_stream_else_length_and_groups() {
    let ctx = setup("stream_summary").await;
    let t = &ctx.transport;
    let topic = Topic::of_type("OrderCreated");
    assert_eq!(t.stream_summary(&topic).await.unwrap(), None);

    let events: Vec<_> = (0..3)
        .map(|n| Envelope::new("OrderCreated", 1, "shop", json!({ "n": n })))
        .collect();
    t.publish(&events).await.unwrap();
    let summary = t.stream_summary(&topic).await.unwrap().unwrap();
    assert_eq!((summary.length, summary.groups.len()), (3, 0));

    for group in ["billing-consumers", "shipping-consumers"] {
        t.ensure_group(&topic, group, StartFrom::New).await.unwrap();
    }
    let summary = t.stream_summary(&topic).await.unwrap().unwrap();
    assert_eq!(summary.length, 3);
    assert_eq!(summary.groups, ["billing-consumers", "shipping-consumers"]);
    let all = t.stream_summary(&Topic::All).await.unwrap().unwrap();
    assert_eq!(all.length, 3, "the global stream has every event");
}
