//! What an operator reads: tables with headers, human durations and plurals, hints on stderr,
//! the real consumer name, `--format pretty` and the help's global options — against the real
//! Redis, each test in its own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{
    assert_left_aligned, chars, cli, column, dead_letter_malformed, jobs_left_pending, json_lines,
    ok, publish, raw_connection, right_cell, run, wait_output, Namespace, BIN,
};

/// Starts `eventbus …args` with stdout and stderr piped.
fn spawn(ns: &str, args: &[&str]) -> Child {
    cli(ns, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads one line of a child's stderr.
fn stderr_line(stderr: &mut BufReader<std::process::ChildStderr>) -> String {
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    line
}

#[tokio::test]
async fn lag_prints_a_table_with_headers_and_human_idle_times() {
    let ns = Namespace::new("lag_table");
    let empty = ok(&run(&ns, &["lag"]));
    assert_eq!(
        empty,
        format!("no consumer groups in namespace `{}`\n", &*ns),
        "an empty namespace says so in one line"
    );

    jobs_left_pending(&ns, "worker-1", 1).await;

    let table = ok(&run(&ns, &["lag"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("STREAM ") && lines[0].ends_with("CONSUMERS"),
        "{table}"
    );
    assert_left_aligned(&table, &["STREAM", "GROUP", "CONSUMERS"]);
    assert_eq!(right_cell(lines[0], lines[1], "LAG"), "2", "{table}");
    assert_eq!(right_cell(lines[0], lines[1], "PENDING"), "1", "{table}");
    let idle = right_cell(lines[0], lines[1], "OLDEST IDLE");
    assert!(
        idle.ends_with("ms") || idle.ends_with('s'),
        "a human duration, got {idle:?}: {table}"
    );
    assert!(
        lines[1].starts_with("Job ") && lines[1].contains("  worker-consumers  "),
        "{table}"
    );
    assert!(
        lines[1].contains("worker-1 (1 pending, idle "),
        "the consumer with its pending count: {table}"
    );

    let none = ok(&run(&ns, &["lag", "--service", "nobody"]));
    assert_eq!(
        none,
        format!("no group `nobody-consumers` in namespace `{}`\n", &*ns)
    );
}

#[tokio::test]
async fn dlq_list_shows_a_table_with_the_payload_truncated_and_full_in_json() {
    let ns = Namespace::new("dlq_table");
    let empty = ok(&run(&ns, &["dlq", "list", "--service", "billing"]));
    assert_eq!(empty, "no dead letters in group `billing-consumers`\n");

    // A malformed entry (its data is not JSON) with a long payload, then a good one.
    let long = format!("{{oops {}", "x".repeat(200));
    let consumed = dead_letter_malformed(&ns, &long).await;
    assert_eq!(consumed[0]["data"]["order_id"], "ord_ok");

    let out = run(&ns, &["dlq", "list", "--service", "billing"]);
    let table = ok(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {table}");
    assert_left_aligned(&table, &["ID", "STREAM", "TYPE", "ERROR", "PAYLOAD"]);
    assert_eq!(right_cell(lines[0], lines[1], "DELIVERIES"), "1", "{table}");
    assert!(
        right_cell(lines[0], lines[1], "AGE").ends_with("ms"),
        "{table}"
    );
    assert!(lines[1].contains("(undecodable)"), "{table}");
    let payload = chars(lines[1], column(lines[0], "PAYLOAD"), usize::MAX);
    assert!(
        payload.starts_with("{oops xxx") && payload.ends_with('…'),
        "{payload}"
    );
    assert_eq!(payload.chars().count(), 60, "{payload}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "eventbus: 1 dead letter in group `billing-consumers`\n",
        "the singular"
    );

    let listed = json_lines(&ok(&run(
        &ns,
        &["dlq", "list", "--service", "billing", "--json"],
    )));
    let fields = listed[0]["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .any(|f| f[0] == "data" && f[1] == long.as_str()),
        "the whole payload in JSON: {fields:?}"
    );
    let replayed = ok(&run(&ns, &["dlq", "replay", "--service", "billing"]));
    assert_eq!(replayed, "replayed 1 dead letter\n");
}

#[tokio::test]
async fn consume_prints_the_real_consumer_name_and_hints_at_skipped_entries() {
    let ns = Namespace::new("consume_hint");
    for i in 0..2 {
        publish(&ns, "Tick", &format!(r#"{{"n":{i}}}"#), &[]);
    }
    let mut child = spawn(
        &ns,
        &[
            "consume",
            "--service",
            "svc",
            "--type",
            "Tick",
            "--count",
            "1",
        ],
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let consuming = stderr_line(&mut stderr);
    let name = consuming
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no consumer name in {consuming:?}"))
        .to_string();
    assert!(name.starts_with("svc-cli-"), "{consuming}");
    let hint = stderr_line(&mut stderr);
    assert_eq!(
        hint,
        "eventbus: group `svc-consumers` is new and starts at the end of stream `Tick` \
         (2 entries before it); use --from-beginning to read them\n"
    );
    publish(&ns, "Tick", r#"{"n":2}"#, &[]);
    let out = wait_output(child, Duration::from_secs(20));
    assert!(out.status.success());
    assert_eq!(json_lines(&String::from_utf8(out.stdout).unwrap()).len(), 1);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(rest, "eventbus: 1 event consumed\n", "the singular");

    // The name printed is the one in Redis.
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(format!("{}:stream:Tick", &*ns))
        .arg("svc-consumers")
        .query_async(&mut raw_connection().await)
        .await
        .unwrap();
    let printed = redis::Value::BulkString(name.clone().into_bytes());
    assert!(
        consumers
            .iter()
            .any(|c| matches!(c, redis::Value::Array(kv) if kv.contains(&printed))),
        "{name} not among {consumers:?}"
    );

    // An existing group, or --from-beginning: no hint.
    for extra in [&[][..], &["--from-beginning"][..]] {
        let service = if extra.is_empty() { "svc" } else { "other" };
        let mut args = vec![
            "consume",
            "--service",
            service,
            "--type",
            "Tick",
            "--consumer",
            "named-1",
            "--count",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut child = spawn(&ns, &args);
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let consuming = stderr_line(&mut stderr);
        assert_eq!(
            consuming,
            format!("eventbus: consuming as `named-1` in group `{service}-consumers`\n")
        );
        publish(&ns, "Tick", r#"{"n":3}"#, &[]);
        let out = wait_output(child, Duration::from_secs(20));
        assert!(out.status.success());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        assert!(!rest.contains("is new"), "{extra:?}: {rest}");
    }
}

#[tokio::test]
async fn tail_hints_when_the_stream_does_not_exist() {
    let ns = Namespace::new("tail_hint");
    let mut child = spawn(&ns, &["tail", "Nope", "--count", "1"]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    assert_eq!(
        stderr_line(&mut stderr),
        format!(
            "eventbus: stream `Nope` (key `{}:stream:Nope`) does not exist yet; \
             waiting for its first event\n",
            &*ns
        )
    );
    publish(&ns, "Nope", r#"{"n":1}"#, &[]);
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(json_lines(&ok(&out)).len(), 1);

    // An existing stream: no hint.
    let out = run(&ns, &["tail", "Nope", "--from-beginning", "--count", "1"]);
    ok(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `2026-12-03T17:40:01Z`.
fn is_utc_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && s.chars().enumerate().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            19 => c == 'Z',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test]
async fn pretty_format_prints_a_header_line_and_indented_data() {
    let ns = Namespace::new("pretty");
    publish(
        &ns,
        "OrderCreated",
        r#"{"order_id":"ord_1","total":10.5}"#,
        &["--correlation-id", "corr-9", "--source", "shop"],
    );
    let expect_pretty = |out: &str| {
        let lines: Vec<&str> = out.lines().collect();
        let (time, rest) = lines[0].split_once("  ").unwrap();
        assert!(is_utc_time(time), "{out}");
        assert!(rest.starts_with("OrderCreated v1  id="), "{out}");
        assert!(
            rest.contains("  source=shop") && rest.ends_with("  corr=corr-9"),
            "{out}"
        );
        // The publish stamped the event's trace context (W3C `traceparent`) in its metadata.
        let traceparent = lines
            .get(7)
            .and_then(|l| l.strip_prefix(r#"    "traceparent": ""#))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no traceparent line: {out}"));
        assert!(
            eventbus_core::telemetry::TraceContext::parse(traceparent, None).is_some(),
            "{out}"
        );
        assert_eq!(
            &lines[1..],
            [
                "  {",
                r#"    "order_id": "ord_1","#,
                r#"    "total": 10.5"#,
                "  }",
                "  metadata:",
                "  {",
                &format!(r#"    "traceparent": "{traceparent}""#),
                "  }",
                ""
            ],
            "{out}"
        );
    };
    expect_pretty(&ok(&run(
        &ns,
        &[
            "tail",
            "OrderCreated",
            "--from-beginning",
            "--count",
            "1",
            "--format",
            "pretty",
        ],
    )));
    expect_pretty(&ok(&run(
        &ns,
        &[
            "consume",
            "--service",
            "svc",
            "--all",
            "--from-beginning",
            "--count",
            "1",
            "--format",
            "pretty",
        ],
    )));
    // JSON lines stay the default.
    let default = ok(&run(
        &ns,
        &["tail", "all", "--from-beginning", "--count", "1"],
    ));
    assert_eq!(json_lines(&default)[0]["correlation_id"], "corr-9");
}

#[test]
fn help_lists_global_options_apart_from_the_command_s_own() {
    let out = Command::new(BIN)
        .args(["consume", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let (own, global) = help
        .split_once("Global options:")
        .unwrap_or_else(|| panic!("no global options heading: {help}"));
    assert!(
        own.contains("--service") && own.contains("--format"),
        "{help}"
    );
    for option in ["--url", "--namespace", "--tls-ca-file"] {
        assert!(
            global.contains(option) && !own.contains(option),
            "{option}: {help}"
        );
    }
}
