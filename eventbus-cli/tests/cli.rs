//! The `eventbus` command-line tool against the real Redis, each test in its own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    billing_dlq, cli, consume_one_order, dead_letter_malformed, jobs_left_pending, json_lines, ok,
    publish, raw_connection, run, Namespace, BIN,
};

/// The keys of a test's namespace.
async fn keys(ns: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query_async(&mut raw_connection().await)
        .await
        .unwrap()
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
    let ns = Namespace::new("publish_consume");
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
    let ns = Namespace::new("dlq");
    let mut conn = raw_connection().await;
    // A malformed entry (bad JSON), as a buggy producer would write it, then a good one.
    let lines = dead_letter_malformed(&ns, "{oops").await;
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
    let ns = Namespace::new("reclaim");
    // A consumer takes all three and dies without acknowledging.
    jobs_left_pending(&ns, "crashed-worker", 10).await;
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
    let ns = Namespace::new("sigterm");
    let (mut child, mut stdout, _stderr) = consuming_three_ticks(&ns);
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
    let code = wait_exit(&mut child, Duration::from_secs(15), "consume after SIGTERM");
    assert!(code.success(), "exit status {code}");
    assert_eq!(pending(&ns, "Tick", "svc-consumers").await, 0);
}

#[tokio::test]
async fn tail_follows_without_a_group() {
    let ns = Namespace::new("tail");
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
    let ns = Namespace::new("badjson");
    let out = cli(&ns, &["publish", "X", "{nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

/// Waits for a child to exit within `limit`; kills it and fails otherwise.
/// `consume` of `Tick` as `svc` (its group created before anything is published, so nothing
/// is missed), then three `Tick`s published: the process, its stdout, and its stderr (kept
/// open while the caller holds it).
fn consuming_three_ticks(ns: &str) -> (Child, BufReader<ChildStdout>, BufReader<ChildStderr>) {
    let mut child = cli(ns, &["consume", "--service", "svc", "--type", "Tick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("consuming"), "{line}");
    for i in 0..3 {
        publish(ns, "Tick", &format!(r#"{{"n":{i}}}"#), &[]);
    }
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout, stderr)
}

fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Entries of `stream` the group has not acknowledged: pending plus never delivered.
async fn unacked(ns: &str, stream: &str, group: &str) -> i64 {
    let mut conn = raw_connection().await;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{ns}:stream:{stream}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let lag = groups
        .iter()
        .find_map(|g| {
            let redis::Value::Array(items) = g else {
                return None;
            };
            let named = items.chunks(2).any(|kv| {
                matches!(&kv[0], redis::Value::BulkString(k) if k == b"name")
                    && matches!(&kv[1], redis::Value::BulkString(v) if v == group.as_bytes())
            });
            if !named {
                return None;
            }
            items.chunks(2).find_map(|kv| match (&kv[0], &kv[1]) {
                (redis::Value::BulkString(k), redis::Value::Int(n)) if k == b"lag" => Some(*n),
                _ => None,
            })
        })
        .unwrap_or_else(|| panic!("no lag for group {group}: {groups:?}"));
    lag + pending(ns, stream, group).await
}

async fn xlen(key: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut raw_connection().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn closed_stdout_stops_consume_and_leaves_the_rest_to_the_group() {
    let ns = Namespace::new("closed_stdout");
    let (mut child, mut stdout, _stderr) = consuming_three_ticks(&ns);
    // `| head -n 3`: read three lines, then close the pipe.
    for i in 0..3 {
        let mut l = String::new();
        stdout.read_line(&mut l).unwrap();
        assert!(l.contains(&format!(r#""n":{i}"#)), "{l}");
    }
    drop(stdout);
    for i in 3..8 {
        publish(&ns, "Tick", &format!(r#"{{"n":{i}}}"#), &[]);
    }

    let status = wait_exit(
        &mut child,
        Duration::from_secs(5),
        "consume with stdout closed",
    );
    assert!(
        status.success(),
        "a closed stdout exits with status 0, got {status}"
    );
    assert_eq!(
        xlen(&format!("{ns}:dlq:svc-consumers")).await,
        0,
        "nothing is dead-lettered"
    );
    assert_eq!(
        unacked(&ns, "Tick", "svc-consumers").await,
        5,
        "the five events it could not print are still the group's (pending or unread)"
    );
    // They are delivered to the group's next consumer.
    let lines = json_lines(&ok(&run(
        &ns,
        &[
            "consume",
            "--service",
            "svc",
            "--type",
            "Tick",
            "--claim-idle-ms",
            "100",
            "--count",
            "5",
        ],
    )));
    let mut seen: Vec<i64> = lines
        .iter()
        .map(|l| l["data"]["n"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![3, 4, 5, 6, 7]);
}

/// A stream entry's fields as raw bytes.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

#[tokio::test]
async fn dlq_replay_copies_fields_that_are_not_utf8_byte_for_byte() {
    let ns = Namespace::new("replay_bytes");
    let stream = format!("{ns}:stream:OrderCreated");
    let mut conn = raw_connection().await;
    // Written raw, as a producer in another language might: `data` is not UTF-8 (so the
    // consumer finds the entry malformed), and a field name and value carry more such bytes.
    let original: Fields = vec![
        (b"event_id".to_vec(), b"e-bytes".to_vec()),
        (b"event_type".to_vec(), b"OrderCreated".to_vec()),
        (b"source".to_vec(), b"legacy".to_vec()),
        (
            b"data".to_vec(),
            b"{\"name\":\"caf\xe9 \xff\xfe\"}".to_vec(),
        ),
        (b"timestamp".to_vec(), b"1700000000.0".to_vec()),
        (b"x-\xc3\x28".to_vec(), b"\x80\x00\"\\/\x01end".to_vec()),
    ];
    let mut xadd = redis::cmd("XADD");
    xadd.arg(&stream).arg("*");
    for (k, v) in &original {
        xadd.arg(k.as_slice()).arg(v.as_slice());
    }
    let _: String = xadd.query_async(&mut conn).await.unwrap();
    publish(&ns, "OrderCreated", r#"{"order_id":"ord_ok"}"#, &[]);

    let lines = consume_one_order(&ns);
    assert_eq!(lines[0]["data"]["order_id"], "ord_ok");
    let listed = json_lines(&ok(&run(
        &ns,
        &["dlq", "list", "--service", "billing", "--json"],
    )));
    assert_eq!(listed.len(), 1, "the malformed entry was dead-lettered");
    assert!(
        listed[0]["error"].as_str().unwrap().contains("UTF-8"),
        "{}",
        listed[0]
    );

    let id = listed[0]["id"].as_str().unwrap();
    assert_eq!(billing_dlq(&ns, "replay", &[id])[0]["replayed"], 1);
    assert_eq!(xlen(&format!("{ns}:dlq:billing-consumers")).await, 0);

    let entries: Vec<(String, Fields)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 3, "original, good event, replayed copy");
    assert_eq!(
        entries[2].1, original,
        "the replayed entry's bytes equal the original's"
    );
}

#[test]
fn passwords_with_reserved_characters_never_print() {
    let port = support::server::free_port();
    for password in ["pa#ss", "12#x", "p/ss", "p?ss", "p@ss", "s3cr/et#?@x"] {
        let url = format!("redis://admin:{password}@127.0.0.1:{port}");
        let out = Command::new(BIN)
            .args(["--url", &url, "lag"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains(password), "{url}: {stderr}");
        for part in password
            .split(['#', '/', '?', '@'])
            .filter(|p| !p.is_empty())
        {
            assert!(!stderr.contains(&format!(":{part}")), "{url}: {stderr}");
        }
        // The same from REDIS_URL.
        let out = Command::new(BIN)
            .env("REDIS_URL", &url)
            .arg("lag")
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            !out.status.success() && !stderr.contains(password),
            "{stderr}"
        );
    }
    // `--help` names the variable, not its value.
    let out = Command::new(BIN)
        .env("REDIS_URL", "redis://admin:hunter2@127.0.0.1:1")
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("REDIS_URL") && !help.contains("hunter2"),
        "{help}"
    );
}

#[tokio::test]
async fn publish_refuses_what_consumers_would_dead_letter_or_what_lands_elsewhere() {
    let ns = Namespace::new("publish_refuses");
    for (args, reason) in [
        (vec!["publish", "", "{}"], "empty"),
        (vec!["publish", "all", "{}"], "global stream"),
        (vec!["publish", "cmd:billing", "{}"], "command stream"),
        (vec!["publish", "reply:abc", "{}"], "reply stream"),
        (
            vec!["publish", "OrderCreated", "{}", "--schema-version", "0"],
            "schema version",
        ),
        (vec!["publish", "OrderCreated", "[1,2]"], "JSON object"),
        (vec!["publish", "OrderCreated", "\"text\""], "JSON object"),
        (vec!["publish", "OrderCreated", "{nope"], "not valid JSON"),
    ] {
        let out = cli(&ns, &args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert!(keys(&ns).await.is_empty(), "nothing was written");
}

#[test]
fn consume_count_zero_is_an_error() {
    let ns = Namespace::new("count_zero");
    let out = cli(
        &ns,
        &["consume", "--service", "svc", "--type", "X", "--count", "0"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count"));
}

#[tokio::test]
async fn an_empty_redis_url_means_the_default() {
    let ns = Namespace::new("empty_url");
    // The run's server may be another one (a throwaway server, or Valkey in CI's Valkey
    // pass), with the default address answering or not: what counts is where the CLI goes.
    let connection = match redis::Client::open(eventbus_redis::DEFAULT_URL) {
        Ok(client) => client.get_multiplexed_async_connection().await.ok(),
        Err(_) => None,
    };
    // Deletes what the CLI writes at the default, also when the test fails.
    let _on_default = connection.as_ref().map(|_| {
        let default = eventbus_tests::Server::Single(eventbus_redis::DEFAULT_URL.to_owned());
        eventbus_tests::NamespaceGuard::on(default, ns.to_string())
    });
    let out = Command::new(BIN)
        .env("REDIS_URL", "")
        .args(["--namespace", &ns, "publish", "Ping", "{}"])
        .output()
        .unwrap();
    let Some(mut default) = connection else {
        // Nothing answers at the default: the CLI says where it tried.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("127.0.0.1:6379"),
            "{stderr}"
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len: i64 = redis::cmd("XLEN")
        .arg(format!("{ns}:stream:Ping"))
        .query_async(&mut default)
        .await
        .unwrap();
    assert_eq!(len, 1, "published to redis://127.0.0.1:6379");
}

#[test]
fn a_non_redis_endpoint_fails_in_one_line() {
    // A server that answers every connection like an HTTP server would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            use std::io::{Read, Write};
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>\n<body>no</body>\n</html>\n",
            );
        }
    });
    let out = Command::new(BIN)
        .args([
            "--url",
            &format!("redis://admin:hunter2@127.0.0.1:{port}"),
            "lag",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("eventbus: "), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("is it a Redis server?"), "{stderr}");
    assert!(
        !stderr.contains("hunter2") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[tokio::test]
async fn closed_stdout_ends_tail_quietly() {
    let ns = Namespace::new("tail_closed");
    publish(&ns, "Note", r#"{"n":0}"#, &[]);
    let mut child = cli(&ns, &["tail", "Note", "--from-beginning"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut l = String::new();
    stdout.read_line(&mut l).unwrap();
    assert!(l.contains(r#""n":0"#), "{l}");
    drop(stdout);
    publish(&ns, "Note", r#"{"n":1}"#, &[]);
    let status = wait_exit(
        &mut child,
        Duration::from_secs(5),
        "tail with stdout closed",
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit status {status}: {stderr}");
    assert!(stderr.is_empty(), "quietly: {stderr}");
}
