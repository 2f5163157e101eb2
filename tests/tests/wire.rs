//! Wire compatibility with the reference article's Python `StreamEventBus`: entries written
//! and read exactly as that code does (raw XADD / XREADGROUP, its field names and JSON).

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::{event, Envelope, EventBus, StartFrom};
use eventbus_tests::{eventually, raw_connection, Backend};
use serde_json::Value;

#[event(name = "PaymentCompleted")]
#[derive(Debug, Clone, PartialEq)]
struct PaymentCompleted {
    order_id: String,
    amount: f64,
}

fn redis_namespace(backend: &Backend) -> String {
    match backend {
        Backend::Redis { namespace, .. } => namespace.clone(),
        Backend::Memory(_) => unreachable!("wire tests run on Redis"),
    }
}

/// What the article's `publish()` does: two XADDs with exact MAXLEN, Python's json.dumps
/// spacing and `str(time.time())`.
async fn python_publish(namespace: &str, event_type: &str, data_json: &str) -> String {
    let mut conn = raw_connection().await;
    let stream_key = format!("{namespace}:stream:{event_type}");
    let entry = [
        ("event_id", "6f1c2d9e-8a4b-4c1e-9f3a-2b7d5e0c1a99"),
        ("event_type", event_type),
        ("source", "payment-service"),
        ("data", data_json),
        ("timestamp", "1732665600.123456"),
        ("metadata", "{}"),
    ];
    let id: String = redis::cmd("XADD")
        .arg(&stream_key)
        .arg("MAXLEN")
        .arg(100000)
        .arg("*")
        .arg(&entry)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(format!("{namespace}:stream:all"))
        .arg("MAXLEN")
        .arg(500000)
        .arg("*")
        .arg(&entry)
        .arg("original_stream")
        .arg(&stream_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn python_publisher_rust_subscriber() {
    let backend = Backend::redis("python_publisher_rust_subscriber").await;
    let ns = redis_namespace(&backend);
    let bus = EventBus::from_arc(backend.transport(), "order-service");
    let got: Arc<Mutex<Vec<Envelope<PaymentCompleted>>>> = Arc::default();
    let all: Arc<Mutex<Vec<Envelope<Value>>>> = Arc::default();
    let (g, a) = (got.clone(), all.clone());
    let typed = bus
        .subscribe()
        .on(move |e: Envelope<PaymentCompleted>| {
            g.lock().unwrap().push(e);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();
    let global = bus
        .subscribe()
        .group("audit-consumers")
        .on_all(move |e: Envelope<Value>| {
            a.lock().unwrap().push(e);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();

    python_publish(
        &ns,
        "PaymentCompleted",
        r#"{"order_id": "ord_123", "amount": 99.99}"#,
    )
    .await;

    eventually(
        Duration::from_secs(10),
        "the Rust subscriber handles the Python event",
        || async { got.lock().unwrap().len() == 1 && all.lock().unwrap().len() == 1 },
    )
    .await;
    let e = got.lock().unwrap()[0].clone();
    assert_eq!(
        e.data,
        PaymentCompleted {
            order_id: "ord_123".into(),
            amount: 99.99
        }
    );
    assert_eq!(e.event_id, "6f1c2d9e-8a4b-4c1e-9f3a-2b7d5e0c1a99");
    assert_eq!(e.source, "payment-service");
    assert_eq!(e.version, 1);
    assert!((e.timestamp - 1732665600.123456).abs() < 1e-6);
    assert_eq!(e.correlation_id, None);
    assert!(e.metadata.is_empty());
    assert_eq!(all.lock().unwrap()[0].event_type, "PaymentCompleted");
    typed.shutdown().await.unwrap();
    global.shutdown().await.unwrap();
}

type Entry = (String, HashMap<String, String>);

/// What the article's `_consume_loop` does: XGROUP CREATE (id 0 here, as `from_beginning`),
/// then XREADGROUP with `>`.
async fn python_read(stream: &str, group: &str) -> Vec<Entry> {
    let mut conn = raw_connection().await;
    let _: Result<String, _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    let reply: Option<Vec<(String, Vec<Entry>)>> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("python-consumer-1")
        .arg("COUNT")
        .arg(100)
        .arg("BLOCK")
        .arg(1000)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply
        .into_iter()
        .flatten()
        .flat_map(|(_, entries)| entries)
        .collect()
}

#[tokio::test]
async fn rust_publisher_python_subscriber() {
    let backend = Backend::redis("rust_publisher_python_subscriber").await;
    let ns = redis_namespace(&backend);
    let bus = EventBus::from_arc(backend.transport(), "payment-service");
    let envelope = bus
        .envelope(PaymentCompleted {
            order_id: "ord_9".into(),
            amount: 12.5,
        })
        .with_correlation_id("corr-1")
        .with_causation_id("cmd-7")
        .with_metadata("tenant", "acme");
    bus.publish_envelope(envelope.clone()).await.unwrap();

    let per_type = python_read(&format!("{ns}:stream:PaymentCompleted"), "python-consumers").await;
    assert_eq!(per_type.len(), 1);
    let fields = &per_type[0].1;
    // The Python consumer reads exactly these keys.
    assert_eq!(fields["event_id"], envelope.event_id);
    assert_eq!(fields["event_type"], "PaymentCompleted");
    assert_eq!(fields["source"], "payment-service");
    let data: Value = serde_json::from_str(&fields["data"]).unwrap();
    assert_eq!(
        data,
        serde_json::json!({"order_id": "ord_9", "amount": 12.5})
    );
    let ts: f64 = fields["timestamp"]
        .parse()
        .expect("float(decoded['timestamp'])");
    assert!((ts - envelope.timestamp).abs() < 1e-5);
    let metadata: Value = serde_json::from_str(&fields["metadata"]).unwrap();
    assert_eq!(metadata["correlation_id"], "corr-1");
    assert_eq!(metadata["causation_id"], "cmd-7");
    assert_eq!(metadata["tenant"], "acme");
    assert_eq!(metadata["schema_version"], 1);

    // A Python `subscribe_all` reads the global stream, with `original_stream`.
    let global = python_read(&format!("{ns}:stream:all"), "python-all-consumers").await;
    assert_eq!(global.len(), 1);
    assert_eq!(
        global[0].1["original_stream"],
        format!("{ns}:stream:PaymentCompleted")
    );
    assert_eq!(global[0].1["event_id"], envelope.event_id);
}

#[tokio::test]
async fn python_group_and_rust_group_coexist() {
    // A Python service and a Rust service each with their own group on one stream.
    let backend = Backend::redis("python_group_and_rust_group_coexist").await;
    let ns = redis_namespace(&backend);
    let bus = EventBus::from_arc(backend.transport(), "rust-service");
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let sub = bus
        .subscribe()
        .start_from(StartFrom::Beginning)
        .on(move |e: Envelope<PaymentCompleted>| {
            g.lock().unwrap().push(e.data.order_id);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();
    python_publish(
        &ns,
        "PaymentCompleted",
        r#"{"order_id": "py_1", "amount": 1.0}"#,
    )
    .await;
    bus.publish(PaymentCompleted {
        order_id: "rs_1".into(),
        amount: 2.0,
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "rust group sees both", || async {
        got.lock().unwrap().len() == 2
    })
    .await;
    let python_saw = python_read(
        &format!("{ns}:stream:PaymentCompleted"),
        "python-service-consumers",
    )
    .await;
    assert_eq!(python_saw.len(), 2);
    sub.shutdown().await.unwrap();
}

#[tokio::test]
async fn foreign_entries_that_cannot_be_handled_are_dead_lettered_with_the_reason() {
    let backend = Backend::redis("foreign_entries_dead_lettered").await;
    let ns = redis_namespace(&backend);
    let transport = backend.transport();
    let bus = EventBus::from_arc(transport.clone(), "strict-service");
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let sub = bus
        .subscribe()
        .on(move |e: Envelope<PaymentCompleted>| {
            g.lock().unwrap().push(e.data.order_id);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();
    let mut conn = raw_connection().await;
    let stream = format!("{ns}:stream:PaymentCompleted");
    let bad: [&[(&str, &str)]; 3] = [
        // No `source`.
        &[
            ("event_id", "e1"),
            ("event_type", "PaymentCompleted"),
            ("data", "{}"),
            ("timestamp", "1.0"),
        ],
        // An event type this stream's handler doesn't know.
        &[
            ("event_id", "e2"),
            ("event_type", "Mystery"),
            ("source", "py"),
            ("data", "{}"),
            ("timestamp", "1.0"),
        ],
        // A timestamp that is not a number.
        &[
            ("event_id", "e3"),
            ("event_type", "PaymentCompleted"),
            ("source", "py"),
            ("data", "{}"),
            ("timestamp", "yesterday"),
        ],
    ];
    for fields in bad {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(fields)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    python_publish(
        &ns,
        "PaymentCompleted",
        r#"{"order_id": "after", "amount": 1.0}"#,
    )
    .await;

    eventually(
        Duration::from_secs(10),
        "the good entry behind three bad ones",
        || async { got.lock().unwrap().len() == 1 },
    )
    .await;
    eventually(Duration::from_secs(10), "three dead letters", || async {
        transport
            .dead_letters("strict-service-consumers", 10)
            .await
            .unwrap()
            .len()
            == 3
    })
    .await;
    let reasons: Vec<String> = transport
        .dead_letters("strict-service-consumers", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason.error)
        .collect();
    assert!(reasons[0].contains("source"), "{reasons:?}");
    assert!(
        reasons[1].contains("Mystery") || reasons[1].contains("expected event type"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("timestamp"), "{reasons:?}");
    sub.shutdown().await.unwrap();
}
