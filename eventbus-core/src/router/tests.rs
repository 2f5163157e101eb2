use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::*;
use crate::error::Error;

type Log = Arc<Mutex<Vec<String>>>;

fn recorder(
    log: &Log,
    tag: &'static str,
) -> impl Fn(Envelope<Value>) -> std::future::Ready<Result<(), HandlerError>> + Clone {
    let log = log.clone();
    move |e: Envelope<Value>| {
        log.lock().unwrap().push(format!("{tag}:{}", e.event_type));
        std::future::ready(Ok(()))
    }
}

fn event(event_type: &str, data: Value) -> Envelope<Value> {
    Envelope::new(event_type, 1, "test", data)
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn several_matches_run_in_priority_then_registration_order() {
    let log = Log::default();
    let mut router = Router::new();
    router
        .add(Rule::new("**", recorder(&log, "all")).unwrap())
        .unwrap()
        .add(Rule::new("Order.*", recorder(&log, "first-0")).unwrap())
        .unwrap()
        .add(
            Rule::new("Order.Created", recorder(&log, "high"))
                .unwrap()
                .priority(10),
        )
        .unwrap()
        .add(Rule::new("*.Created", recorder(&log, "second-0")).unwrap())
        .unwrap()
        .add(
            Rule::new("Order.**", recorder(&log, "low"))
                .unwrap()
                .priority(-1),
        )
        .unwrap();
    let d = router.dispatch(&event("Order.Created", json!({}))).await;
    assert!(d.is_routed() && d.is_ok());
    assert_eq!(
        taken(&log),
        [
            "high:Order.Created",
            "all:Order.Created",
            "first-0:Order.Created",
            "second-0:Order.Created",
            "low:Order.Created"
        ]
    );
    assert_eq!(
        d.matched(),
        ["Order.Created", "**", "Order.*", "*.Created", "Order.**"]
    );
}

#[tokio::test]
async fn no_match_is_unrouted_and_goes_to_the_fallback() {
    let log = Log::default();
    let mut router = Router::new();
    router.route("Order.*", recorder(&log, "order")).unwrap();
    let d = router.dispatch(&event("Order.Item.Added", json!({}))).await;
    assert!(!d.is_routed(), "`*` is exactly one segment");
    assert_eq!(router.stats().unrouted(), 1);
    assert!(taken(&log).is_empty());

    router.fallback(recorder(&log, "fallback"));
    let d = router.dispatch(&event("Stock.Reserved", json!({}))).await;
    assert!(!d.is_routed());
    assert_eq!(taken(&log), ["fallback:Stock.Reserved"]);
    assert_eq!(router.stats().unrouted(), 2);
    assert_eq!(router.stats().routed(), 0);
}

#[tokio::test]
async fn dotted_names_and_json_filters() {
    let log = Log::default();
    let mut router = Router::new();
    router
        .add(
            Rule::new("Order.**", recorder(&log, "big"))
                .unwrap()
                .filter(|e: &Envelope<Value>| e.data["total"].as_f64().unwrap_or(0.0) > 1000.0),
        )
        .unwrap();
    router
        .dispatch(&event("Order.Item.Added", json!({"total": 5000})))
        .await;
    router
        .dispatch(&event("Order.Created", json!({"total": 10})))
        .await;
    router
        .dispatch(&event("Order", json!({"total": 2000})))
        .await;
    assert_eq!(taken(&log), ["big:Order.Item.Added", "big:Order"]);
    assert_eq!(router.stats().unrouted(), 1, "filtered out = unrouted");
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderCreated {
    total: f64,
}
impl Event for OrderCreated {
    const EVENT_TYPE: &'static str = "Order.Created";
    const VERSION: u32 = 1;
}

#[tokio::test]
async fn typed_rules_take_their_type_only_and_filter_typed() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut router = Router::new();
    router
        .add(
            Rule::new("Order.*", move |e: Envelope<OrderCreated>| {
                s.lock().unwrap().push(e.data.total);
                std::future::ready(Ok(()))
            })
            .unwrap()
            .filter(|e: &Envelope<OrderCreated>| e.data.total > 1000.0),
        )
        .unwrap();
    router
        .dispatch(&event("Order.Created", json!({"total": 1500.0})))
        .await;
    router
        .dispatch(&event("Order.Created", json!({"total": 50.0})))
        .await;
    let other = router.dispatch(&event("Order.Shipped", json!({}))).await;
    assert!(!other.is_routed(), "a typed rule takes its own type only");
    assert_eq!(*seen.lock().unwrap(), [1500.0]);

    // Data that doesn't fit the type is routed, so the failure is reported, not lost.
    let bad = router
        .dispatch(&event("Order.Created", json!({"total": "x"})))
        .await;
    assert!(bad.is_routed());
    assert!(bad.failures()[0].error.is_permanent());
}

#[tokio::test]
async fn one_rule_failing_or_panicking_does_not_stop_the_others() {
    let log = Log::default();
    let mut router = Router::new();
    router
        .add(
            Rule::new("X", |_e: Envelope<Value>| async {
                Err(HandlerError::retryable("nope"))
            })
            .unwrap()
            .priority(3)
            .name("fails"),
        )
        .unwrap()
        .add(
            Rule::new("X", |_e: Envelope<Value>| async {
                if true {
                    panic!("kaboom");
                }
                Ok(())
            })
            .unwrap()
            .priority(2)
            .name("panics"),
        )
        .unwrap()
        .add(Rule::new("X", recorder(&log, "ok")).unwrap().priority(1))
        .unwrap();
    let d = router.dispatch(&event("X", json!({}))).await;
    assert!(d.is_routed() && !d.is_ok());
    assert_eq!(taken(&log), ["ok:X"]);
    let failed: Vec<_> = d.failures().iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(failed, ["fails", "panics"]);
    assert!(d.failures()[1].error.message().contains("kaboom"));
    assert_eq!(router.stats().rule_failures(), 2);
}

#[test]
fn invalid_patterns_fail_at_registration() {
    let mut router = Router::new();
    let err = router
        .route("Order..Created", |_e: Envelope<Value>| async { Ok(()) })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPattern { .. }), "{err}");
    let err = Rule::new("Order.Cre*", |_e: Envelope<Value>| async { Ok(()) }).unwrap_err();
    assert!(err.to_string().contains("whole segments"), "{err}");
    assert!(router.rules().is_empty());
}
