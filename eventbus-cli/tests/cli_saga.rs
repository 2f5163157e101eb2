//! `eventbus saga show` and `eventbus saga list` against the real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use eventbus_core::envelope::now_seconds;
use eventbus_core::saga::{transition, SagaDefinition, SagaState, SagaStore};
use eventbus_redis::{RedisConfig, RedisSagaStore, RedisTransport};
use serde_json::{json, Map, Value};
use support::{assert_left_aligned, ok, raw_connection, redis_url, right_cell, run, Namespace};

fn saga() -> SagaDefinition {
    support::console::create_order_saga()
}

/// Fails a pending saga's first step with the error `out of stock`.
async fn fail(store: &RedisSagaStore, pending: &SagaState, now: f64) {
    let mut reply = Map::new();
    reply.insert("error".into(), json!("out of stock"));
    let transition::Transition::Apply(failed) = transition::on_reply(
        &saga(),
        pending,
        "InventoryReserveFailed",
        "e1",
        &reply,
        Duration::from_secs(30),
        now,
    ) else {
        panic!("failure not applied");
    };
    assert!(store.update(pending, &failed).await.unwrap());
}

#[tokio::test]
async fn saga_show_and_list() {
    let ns = Namespace::new("saga");
    let transport =
        RedisTransport::connect(RedisConfig::new(&redis_url()).unwrap().namespace(&*ns))
            .await
            .unwrap();
    let store = RedisSagaStore::new(&transport);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (ok_id, failed_id) = (format!("ok-{suffix}"), format!("failed-{suffix}"));
    // The article's layout keeps saga state outside the namespace.
    ns.also(format!("saga:{ok_id}"));
    ns.also(format!("saga:{failed_id}"));
    let now = now_seconds();
    let mut data = Map::new();
    data.insert("order_id".into(), json!("ord_1"));
    let pending = transition::start(&saga(), &ok_id, data.clone(), now).unwrap();
    assert!(store.create(&pending).await.unwrap());
    let failing = transition::start(&saga(), &failed_id, data, now).unwrap();
    assert!(store.create(&failing).await.unwrap());
    fail(&store, &failing, now).await;

    // The article's layout: JSON at `saga:{id}`.
    let raw: String = redis::cmd("GET")
        .arg(format!("saga:{failed_id}"))
        .query_async(&mut raw_connection().await)
        .await
        .unwrap();
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["state"], "failed");

    let text = ok(&run(&ns, &["saga", "show", &failed_id]));
    assert!(
        text.contains("create_order") && text.contains("failed"),
        "{text}"
    );
    assert!(text.contains("error: out of stock"), "{text}");
    assert!(
        text.contains("  started 20") && text.contains("ms ago)\n"),
        "the start as a UTC time and an age: {text}"
    );
    assert!(
        text.contains("reserve_inventory") && text.contains("started"),
        "{text}"
    );

    let shown: Value =
        serde_json::from_str(&ok(&run(&ns, &["saga", "show", &ok_id, "--json"]))).unwrap();
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

    let failed_only = ok(&run(&ns, &["saga", "list", "--state", "failed", "--json"]));
    let rows: Vec<Value> = failed_only
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{failed_only}");
    assert_eq!(rows[0]["saga_id"], json!(failed_id));
    assert_eq!(rows[0]["error"], "out of stock");

    let out = run(&ns, &["saga", "list"]);
    let all = ok(&out);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two sagas: {all}");
    assert!(
        lines[0].starts_with("SAGA ") && lines[0].ends_with("ERROR"),
        "{all}"
    );
    assert_left_aligned(&all, &["SAGA", "NAME", "STATE", "STEP", "ERROR"]);
    assert_eq!(right_cell(lines[0], lines[1], "STARTED"), "ago", "{all}");
    assert!(lines[1].contains("ms ago  "), "a human age: {all}");
    assert!(all.contains(&ok_id) && all.contains(&failed_id), "{all}");
    assert!(all.contains("pending") && all.contains("failed"), "{all}");
    assert!(all.contains("out of stock"), "{all}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "eventbus: 2 sagas\n");

    // `--limit` applies per state: one pending and one failed saga.
    let limited = ok(&run(&ns, &["saga", "list", "--limit", "1", "--json"]));
    assert_eq!(limited.lines().count(), 2, "{limited}");
    let out = run(&ns, &["saga", "list", "--state", "failed"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "eventbus: 1 saga\n");
    assert_eq!(
        ok(&run(&ns, &["saga", "list", "--state", "completed"])),
        "no completed sagas\n"
    );

    let missing = run(&ns, &["saga", "show", "no-such-saga"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no saga `no-such-saga`"));
    let bad_state = run(&ns, &["saga", "list", "--state", "done"]);
    assert_eq!(bad_state.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&bad_state.stderr);
    assert!(
        stderr.contains("invalid value 'done'")
            && stderr.contains("started, pending, completed, compensating, failed"),
        "{stderr}"
    );

    assert_eq!(store.delete_all().await.unwrap(), 2);
}

/// On a cluster the status indexes are sharded by slot: `saga list` finds every saga of a
/// state on every master, and `saga show` reads `{prefix}{id}` as on one node.
#[test]
fn saga_list_on_a_cluster() {
    let server = eventbus_tests::Server::cluster();
    let guard = eventbus_tests::NamespaceGuard::on(
        server.clone(),
        eventbus_tests::namespace("cli:saga_cluster"),
    );
    let ns = guard.namespace().to_owned();
    let prefix = format!("{ns}:saga:");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failed_ids: Vec<String> = runtime.block_on(async {
        let transport = RedisTransport::connect(server.config(&ns)).await.unwrap();
        let store = RedisSagaStore::new(&transport).with_state_prefix(&prefix);
        assert!(store.keys().is_sharded());
        let now = now_seconds();
        let mut failed_ids = Vec::new();
        for i in 0..30 {
            let id = format!("c{i}");
            let state = transition::start(&saga(), &id, Map::new(), now).unwrap();
            assert!(store.create(&state).await.unwrap());
            if i % 3 == 0 {
                fail(&store, &state, now).await;
                failed_ids.push(id);
            }
        }
        failed_ids
    });
    let cli = |args: &[&str]| {
        let child = std::process::Command::new(support::BIN)
            .env("REDIS_URL", server.url())
            .args(["--namespace", &ns, "saga", "--saga-prefix", &prefix])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        support::wait_output(child, Duration::from_secs(20))
    };
    let failed = ok(&cli(&["list", "--state", "failed", "--json"]));
    let mut listed: Vec<String> = failed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["saga_id"].to_string())
        .map(|id| id.trim_matches('"').to_owned())
        .collect();
    listed.sort();
    let mut expected = failed_ids.clone();
    expected.sort();
    assert_eq!(listed, expected, "{failed}");
    let out = cli(&["list", "--state", "pending"]);
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "eventbus: 20 sagas\n");
    let shown = ok(&cli(&["show", &failed_ids[0]]));
    assert!(shown.contains("error: out of stock"), "{shown}");
    drop(guard);
}
