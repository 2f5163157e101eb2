//! The `eventbus` command-line tool against the real Redis, each test in its own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{raw_connection, redis_url, Namespace};

const BIN: &str = env!("CARGO_BIN_EXE_eventbus");

/// The test's namespace, deleted when dropped (also when the test fails).
fn namespace(test: &str) -> Namespace {
    Namespace::new(&format!("test:cli:{test}"))
}

fn cli(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("REDIS_URL", redis_url())
        .arg("--namespace")
        .arg(ns)
        .args(args);
    cmd
}

/// Runs to completion (killing it after 20 s) and returns its output.
fn run(ns: &str, args: &[&str]) -> Output {
    let child = cli(ns, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(20))
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "eventbus did not finish in {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "eventbus failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn publish(ns: &str, event_type: &str, data: &str, extra: &[&str]) -> String {
    let mut args = vec!["publish", event_type, data];
    args.extend_from_slice(extra);
    ok(&run(ns, &args)).trim().to_string()
}

async fn pending(ns: &str, stream: &str, group: &str) -> i64 {
    let mut conn = raw_connection().await;
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(format!("{ns}:stream:{stream}"))
        .arg(group)
        .query_async(&mut conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING summary {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

#[tokio::test]
async fn publish_then_consume_prints_json_lines_and_acks() {
    let ns = namespace("publish_consume");
    let id = publish(
        &ns,
        "OrderCreated",
        r#"{"order_id":"ord_1","total":10.5}"#,
        &["--source", "shop", "--correlation-id", "corr-9"],
    );
    assert!(id.contains('-'), "prints the stream id, got {id:?}");
    publish(
        &ns,
        "OrderCreated",
        r#"{"order_id":"ord_2","total":3}"#,
        &[],
    );

    let out = run(
        &ns,
        &[
            "consume",
            "--service",
            "billing",
            "--type",
            "OrderCreated",
            "--from-beginning",
            "--count",
            "2",
        ],
    );
    let lines = json_lines(&ok(&out));
    assert_eq!(lines.len(), 2);
    let first = &lines[0];
    for key in [
        "stream_id",
        "event_id",
        "event_type",
        "source",
        "timestamp",
        "version",
        "correlation_id",
        "causation_id",
        "metadata",
        "data",
    ] {
        assert!(first.get(key).is_some(), "missing key {key} in {first}");
    }
    assert_eq!(first["stream_id"], id);
    assert_eq!(first["event_type"], "OrderCreated");
    assert_eq!(first["source"], "shop");
    assert_eq!(first["correlation_id"], "corr-9");
    assert_eq!(first["version"], 1);
    assert_eq!(first["data"]["order_id"], "ord_1");
    assert_eq!(lines[1]["data"]["order_id"], "ord_2");
    assert_eq!(
        pending(&ns, "OrderCreated", "billing-consumers").await,
        0,
        "acked after printing"
    );

    // Another group gets every entry too; the same group gets nothing new.
    let out = run(
        &ns,
        &[
            "consume",
            "--service",
            "shipping",
            "--all",
            "--from-beginning",
            "--count",
            "2",
        ],
    );
    assert_eq!(json_lines(&ok(&out)).len(), 2);
}

#[tokio::test]
async fn dead_letter_list_replay_and_purge() {
    let ns = namespace("dlq");
    let mut conn = raw_connection().await;
    // A malformed entry (bad JSON), as a buggy producer would write it, then a good one.
    let _: String = redis::cmd("XADD")
        .arg(format!("{ns}:stream:OrderCreated"))
        .arg("*")
        .arg(&[
            ("event_id", "e-bad"),
            ("event_type", "OrderCreated"),
            ("source", "legacy"),
            ("data", "{oops"),
            ("timestamp", "1700000000.0"),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    publish(&ns, "OrderCreated", r#"{"order_id":"ord_ok"}"#, &[]);

    let out = run(
        &ns,
        &[
            "consume",
            "--service",
            "billing",
            "--type",
            "OrderCreated",
            "--from-beginning",
            "--count",
            "1",
        ],
    );
    let lines = json_lines(&ok(&out));
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["data"]["order_id"], "ord_ok",
        "the entry behind the bad one flows"
    );

    let listed = json_lines(&ok(&run(
        &ns,
        &["dlq", "list", "--service", "billing", "--json"],
    )));
    assert_eq!(listed.len(), 1);
    let dead = &listed[0];
    assert_eq!(dead["origin_stream"], "OrderCreated");
    assert!(dead["error"].as_str().unwrap().contains("data"), "{dead}");
    assert_eq!(dead["delivery_count"], 1);
    assert_eq!(pending(&ns, "OrderCreated", "billing-consumers").await, 0);

    let replayed = ok(&run(
        &ns,
        &["dlq", "replay", "--service", "billing", "--json"],
    ));
    assert_eq!(json_lines(&replayed)[0]["replayed"], 1);
    assert!(json_lines(&ok(&run(
        &ns,
        &["dlq", "list", "--service", "billing", "--json"]
    )))
    .is_empty());
    let len: i64 = redis::cmd("XLEN")
        .arg(format!("{ns}:stream:OrderCreated"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 3, "replay re-appended the entry to its origin stream");

    // It fails again when consumed (it is still malformed); then purge it by id.
    publish(&ns, "OrderCreated", r#"{"order_id":"ord_2"}"#, &[]);
    ok(&run(
        &ns,
        &[
            "consume",
            "--service",
            "billing",
            "--type",
            "OrderCreated",
            "--count",
            "1",
        ],
    ));
    let listed = json_lines(&ok(&run(
        &ns,
        &["dlq", "list", "--service", "billing", "--json"],
    )));
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let purged = ok(&run(
        &ns,
        &[
            "dlq",
            "purge",
            "--service",
            "billing",
            "--id",
            &id,
            "--json",
        ],
    ));
    assert_eq!(json_lines(&purged)[0]["purged"], 1);
    assert!(json_lines(&ok(&run(
        &ns,
        &["dlq", "list", "--service", "billing", "--json"]
    )))
    .is_empty());
}

#[tokio::test]
async fn consume_reclaims_what_a_dead_consumer_left_pending() {
    let ns = namespace("reclaim");
    let stream = format!("{ns}:stream:Job");
    for i in 0..3 {
        publish(&ns, "Job", &format!(r#"{{"n":{i}}}"#), &[]);
    }
    let mut conn = raw_connection().await;
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("worker-consumers")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A consumer takes all three and dies without acknowledging.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("worker-consumers")
        .arg("crashed-worker")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending(&ns, "Job", "worker-consumers").await, 3);
    tokio::time::sleep(Duration::from_millis(150)).await;

    let out = run(
        &ns,
        &[
            "consume",
            "--service",
            "worker",
            "--type",
            "Job",
            "--claim-idle-ms",
            "100",
            "--count",
            "3",
        ],
    );
    let lines = json_lines(&ok(&out));
    let mut ns_seen: Vec<i64> = lines
        .iter()
        .map(|l| l["data"]["n"].as_i64().unwrap())
        .collect();
    ns_seen.sort_unstable();
    assert_eq!(ns_seen, vec![0, 1, 2]);
    assert_eq!(pending(&ns, "Job", "worker-consumers").await, 0);

    // The lag report shows the group and its consumers.
    let lag = json_lines(&ok(&run(&ns, &["lag", "--service", "worker", "--json"])));
    let rows = lag[0].as_array().unwrap();
    let row = rows.iter().find(|r| r["stream"] == "Job").unwrap();
    assert_eq!(row["group"], "worker-consumers");
    assert_eq!(row["pending"], 0);
    assert_eq!(row["lag"], 0);
    assert!(row["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "crashed-worker"));
}

#[tokio::test]
async fn sigterm_acks_what_was_printed_and_exits_zero() {
    let ns = namespace("sigterm");
    // Create the group first so nothing published next is missed.
    let mut child = cli(&ns, &["consume", "--service", "svc", "--type", "Tick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("consuming"), "{line}");
    for i in 0..3 {
        publish(&ns, "Tick", &format!(r#"{{"n":{i}}}"#), &[]);
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..3 {
        let mut l = String::new();
        stdout.read_line(&mut l).unwrap();
        assert!(l.contains("\"Tick\""), "{l}");
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "consume did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
    assert_eq!(pending(&ns, "Tick", "svc-consumers").await, 0);
}

#[tokio::test]
async fn tail_follows_without_a_group() {
    let ns = namespace("tail");
    publish(&ns, "Note", r#"{"text":"one"}"#, &[]);
    publish(&ns, "Other", r#"{"text":"two"}"#, &[]);
    let out = run(&ns, &["tail", "all", "--from-beginning", "--count", "2"]);
    let lines = json_lines(&ok(&out));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event_type"], "Note");
    assert_eq!(lines[1]["event_type"], "Other");
    let mut conn = raw_connection().await;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{ns}:stream:all"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(groups.is_empty(), "tail creates no consumer group");
}

#[test]
fn unreachable_server_fails_in_one_line_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "--url",
            &format!("redis://admin:hunter2@127.0.0.1:{port}"),
            "lag",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn invalid_json_is_rejected_before_publishing() {
    let ns = namespace("badjson");
    let out = cli(&ns, &["publish", "X", "{nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}
