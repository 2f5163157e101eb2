//! Shared helpers of the CLI tests: running the `eventbus` binary against the server at
//! `REDIS_URL` (default `redis://127.0.0.1:6379`), one key namespace per test, deleted when
//! the test ends — also when it fails (the workspace's `eventbus-tests` guard deletes
//! `{namespace}:*` on drop) — and private servers ([`server`]) for ACL users and TLS.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod console;
pub mod server;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use eventbus_tests::NamespaceGuard;
pub use eventbus_tests::{raw_connection, redis_url};

/// The `eventbus` binary of this crate.
pub const BIN: &str = env!("CARGO_BIN_EXE_eventbus");

/// A test's key namespace `test:cli:{test}:{suffix}`: deletes every key under it, and the
/// keys given to [`also`](Self::also), when dropped, whether the test passed or panicked.
/// Derefs to the namespace string.
#[derive(Debug)]
pub struct Namespace(NamespaceGuard);

impl Namespace {
    /// A fresh namespace for `test`.
    pub fn new(test: &str) -> Self {
        Namespace(NamespaceGuard::new(eventbus_tests::namespace(&format!(
            "cli:{test}"
        ))))
    }

    /// Deletes `key` too (a key outside the namespace, such as a saga's `saga:{id}`).
    pub fn also(&self, key: impl Into<String>) {
        self.0.also(key);
    }
}

impl std::ops::Deref for Namespace {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.namespace()
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.namespace())
    }
}

/// `eventbus --namespace {ns} …args` against the test server.
pub fn cli(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("REDIS_URL", redis_url())
        .arg("--namespace")
        .arg(ns)
        .args(args);
    cmd
}

/// Runs to completion (killing it after 20 s) and returns its output.
pub fn run(ns: &str, args: &[&str]) -> Output {
    let child = cli(ns, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(20))
}

/// Waits for a child to finish within `limit` and returns its output; kills it and fails
/// otherwise.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
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

/// The stdout of a run that succeeded; fails with its stderr otherwise.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "eventbus failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// One JSON value per line.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `eventbus dlq {action} --service billing [--id ID…] --json`: the JSON lines it printed.
pub fn billing_dlq(ns: &str, action: &str, ids: &[&str]) -> Vec<Value> {
    let mut args = vec!["dlq", action, "--service", "billing", "--json"];
    for id in ids {
        args.extend(["--id", id]);
    }
    json_lines(&ok(&run(ns, &args)))
}

/// `eventbus publish`: the entry id it printed.
pub fn publish(ns: &str, event_type: &str, data: &str, extra: &[&str]) -> String {
    let mut args = vec!["publish", event_type, data];
    args.extend_from_slice(extra);
    ok(&run(ns, &args)).trim().to_string()
}

/// The column (in characters, as a terminal shows it) where `header` starts.
pub fn column(header_line: &str, header: &str) -> usize {
    let at = header_line
        .find(header)
        .unwrap_or_else(|| panic!("no {header} in {header_line}"));
    header_line[..at].chars().count()
}

/// `line` from character `from` to character `to`.
pub fn chars(line: &str, from: usize, to: usize) -> String {
    line.chars()
        .skip(from)
        .take(to.saturating_sub(from))
        .collect()
}

/// Checks that every row of a table has a cell starting right under each of the (left-aligned)
/// `headers`.
pub fn assert_left_aligned(table: &str, headers: &[&str]) {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for h in headers {
        let start = column(header, h);
        for line in lines.clone() {
            let before = chars(line, 0, start);
            let at = chars(line, start, usize::MAX);
            assert!(
                (start == 0 || before.ends_with("  ")) && !at.starts_with(' ') && !at.is_empty(),
                "column {h} is not aligned:\n{table}"
            );
        }
    }
}

/// The right-aligned cell of `line` under `header` of `header_line`: it ends where the header
/// ends.
pub fn right_cell(header_line: &str, line: &str, header: &str) -> String {
    let head = chars(
        line,
        0,
        column(header_line, header) + header.chars().count(),
    );
    assert!(
        !head.ends_with(' '),
        "{header} is not right-aligned: {line}"
    );
    head.rsplit(' ').next().unwrap().to_string()
}

/// Appends an `OrderCreated` entry whose `data` is `data`, not JSON, as a buggy producer
/// would write it, then a good one (`ord_ok`), and consumes one event as `billing` from the
/// beginning: the bad entry is dead-lettered, the good one flows. Returns what it printed.
pub async fn dead_letter_malformed(ns: &str, data: &str) -> Vec<Value> {
    let _: String = redis::cmd("XADD")
        .arg(format!("{ns}:stream:OrderCreated"))
        .arg("*")
        .arg(&[
            ("event_id", "e-bad"),
            ("event_type", "OrderCreated"),
            ("source", "legacy"),
            ("data", data),
            ("timestamp", "1700000000.0"),
        ])
        .query_async(&mut raw_connection().await)
        .await
        .unwrap();
    publish(ns, "OrderCreated", r#"{"order_id":"ord_ok"}"#, &[]);
    consume_one_order(ns)
}

/// Consumes one `OrderCreated` as `billing`, a new group starting from the beginning, and
/// returns what it printed.
pub fn consume_one_order(ns: &str) -> Vec<Value> {
    let args = [
        "consume",
        "--service",
        "billing",
        "--type",
        "OrderCreated",
        "--from-beginning",
        "--count",
        "1",
    ];
    json_lines(&ok(&run(ns, &args)))
}

/// Publishes three `Job` events, creates group `worker-consumers` at their start, and lets
/// `consumer` read `taken` of them without acknowledging (a consumer that then dies).
pub async fn jobs_left_pending(ns: &str, consumer: &str, taken: usize) {
    for i in 0..3 {
        publish(ns, "Job", &format!(r#"{{"n":{i}}}"#), &[]);
    }
    let stream = format!("{ns}:stream:Job");
    let mut conn = raw_connection().await;
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("worker-consumers")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("worker-consumers")
        .arg(consumer)
        .arg("COUNT")
        .arg(taken)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
}
