//! `eventbus saga show` and `eventbus saga list` against the real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use eventbus_core::envelope::now_seconds;
use eventbus_core::saga::{transition, SagaDefinition, SagaStep, SagaStore};
use eventbus_redis::RedisSagaStore;
use serde_json::{json, Map, Value};
use support::{redis_url, setup};

const BIN: &str = env!("CARGO_BIN_EXE_eventbus");

fn run(ns: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("REDIS_URL", redis_url())
        .arg("--namespace")
        .arg(ns)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "eventbus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn saga() -> SagaDefinition {
    SagaDefinition::new("create_order")
        .step(
            SagaStep::new("reserve_inventory")
                .command_type("InventoryReserveCommand")
                .success_type("InventoryReserved")
                .failure_type("InventoryReserveFailed")
                .compensation_type("InventoryReleaseCommand"),
        )
        .step(
            SagaStep::new("process_payment")
                .command_type("PaymentProcessCommand")
                .success_type("PaymentProcessed")
                .failure_type("PaymentFailed")
                .compensation_type("PaymentRefundCommand"),
        )
}

#[tokio::test]
async fn saga_show_and_list() {
    let ctx = setup("cli-saga").await;
    let store = RedisSagaStore::new(&ctx.transport);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (ok_id, failed_id) = (format!("ok-{suffix}"), format!("failed-{suffix}"));
    let now = now_seconds();
    let mut data = Map::new();
    data.insert("order_id".into(), json!("ord_1"));
    let pending = transition::start(&saga(), &ok_id, data.clone(), now).unwrap();
    assert!(store.create(&pending).await.unwrap());
    let failing = transition::start(&saga(), &failed_id, data, now).unwrap();
    assert!(store.create(&failing).await.unwrap());
    let mut reply = Map::new();
    reply.insert("error".into(), json!("out of stock"));
    let transition::Transition::Apply(failed) = transition::on_reply(
        &saga(),
        &failing,
        "InventoryReserveFailed",
        "e1",
        &reply,
        Duration::from_secs(30),
        now,
    ) else {
        panic!("failure not applied");
    };
    assert!(store.update(&failing, &failed).await.unwrap());

    // The article's layout: JSON at `saga:{id}`.
    let raw: String = ctx
        .cmd(redis::cmd("GET").arg(format!("saga:{failed_id}")))
        .await;
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["state"], "failed");

    let ns = ctx.namespace.clone();
    let text = stdout(&run(&ns, &["saga", "show", &failed_id]));
    assert!(
        text.contains("create_order") && text.contains("failed"),
        "{text}"
    );
    assert!(text.contains("error: out of stock"), "{text}");
    assert!(
        text.contains("reserve_inventory") && text.contains("started"),
        "{text}"
    );

    let shown: Value =
        serde_json::from_str(&stdout(&run(&ns, &["saga", "show", &ok_id, "--json"]))).unwrap();
    for key in [
        "saga_id",
        "saga_name",
        "state",
        "current_step",
        "data",
        "history",
        "started_at",
        "version",
    ] {
        assert!(shown.get(key).is_some(), "{key} missing: {shown}");
    }
    assert_eq!(shown["state"], "pending");

    let failed_only = stdout(&run(&ns, &["saga", "list", "--state", "failed", "--json"]));
    let rows: Vec<Value> = failed_only
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{failed_only}");
    assert_eq!(rows[0]["saga_id"], json!(failed_id));
    assert_eq!(rows[0]["error"], "out of stock");

    let all = stdout(&run(&ns, &["saga", "list"]));
    assert!(all.contains(&ok_id) && all.contains(&failed_id), "{all}");
    assert!(all.contains("pending") && all.contains("failed"), "{all}");

    let missing = run(&ns, &["saga", "show", "no-such-saga"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no saga `no-such-saga`"));
    let bad_state = run(&ns, &["saga", "list", "--state", "done"]);
    assert!(!bad_state.status.success());
    assert!(String::from_utf8_lossy(&bad_state.stderr).contains("unknown saga state"));

    assert_eq!(store.delete_all().await.unwrap(), 2);
}
