//! Metrics from the command line, scraped as Prometheus would: `eventbus monitor` (the lag,
//! pending entries and oldest pending age of every group, on one node and on a cluster) and
//! `eventbus consume --metrics-addr` (what it consumed and how long handling took).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use eventbus_core::transport::{StartFrom, Topic};
use eventbus_core::{Envelope, EventBus, StreamTransport};
use eventbus_redis::RedisTransport;
use eventbus_tests::scrape::{find, scrape_until, value};
use serde_json::json;
use support::{cli, publish, raw_connection, Namespace, BIN};

const LAG: &str = "eventbus_consumer_group_lag";
const PENDING: &str = "eventbus_consumer_group_pending";
const OLDEST: &str = "eventbus_consumer_group_oldest_pending_seconds";

/// Spawns `command` with its stderr piped, and reads its stderr up to the line naming where
/// it serves metrics (`eventbus: serving metrics on http://ADDR/metrics`): that address, and
/// the lines before it.
fn serving(command: &mut Command) -> (Child, SocketAddr, Vec<String>, BufReader<ChildStderr>) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line
            .trim_end()
            .strip_prefix("eventbus: serving metrics on http://")
        {
            let addr = rest.strip_suffix("/metrics").unwrap().parse().unwrap();
            return (child, addr, before, stderr);
        }
        before.push(line);
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    panic!("no metrics address ({status}): {before:?}");
}

/// The next line of `stderr`.
fn next_line(stderr: &mut BufReader<ChildStderr>) -> String {
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    line
}

/// SIGTERM, then its exit status within 15 s (killed and failed otherwise).
fn terminate(mut child: Child, what: &str) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{what}: still running 15 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn redis<T: redis::FromRedisValue>(cmd: &mut redis::Cmd) -> T {
    cmd.query_async(&mut raw_connection().await).await.unwrap()
}

#[tokio::test]
async fn monitor_exports_lag_pending_and_oldest_pending_age_of_every_group() {
    let ns = Namespace::new("monitor");
    let stream = format!("{ns}:stream:Order");
    // `billing` is behind by exactly 20 unread entries and holds 3 unacknowledged ones (a
    // consumer that read them and died); `shipping` is done with everything.
    for group in ["billing-consumers", "shipping-consumers"] {
        let _: String = redis(
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(group)
                .arg("$")
                .arg("MKSTREAM"),
        )
        .await;
    }
    for n in 0..23 {
        let _: String = redis(redis::cmd("XADD").arg(&stream).arg("*").arg("n").arg(n)).await;
    }
    let _: redis::Value = redis(
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("billing-consumers")
            .arg("crashed")
            .arg("COUNT")
            .arg(3)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">"),
    )
    .await;
    let read: redis::streams::StreamReadReply = redis(
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("shipping-consumers")
            .arg("done")
            .arg("STREAMS")
            .arg(&stream)
            .arg(">"),
    )
    .await;
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 23);
    let _: u64 = redis(
        redis::cmd("XACK")
            .arg(&stream)
            .arg("shipping-consumers")
            .arg(&ids),
    )
    .await;

    // With JSON log records on stderr, around the progress lines.
    let (child, addr, before, mut stderr) = serving(
        cli(
            &ns,
            &[
                "--log-format",
                "json",
                "monitor",
                "--metrics-addr",
                "127.0.0.1:0",
                "--interval",
                "0.2",
            ],
        )
        .env("EVENTBUS_LOG", "eventbus_core::telemetry=debug"),
    );
    let record: serde_json::Value = serde_json::from_str(&before.concat()).unwrap();
    assert_eq!(record["level"], "DEBUG", "{record}");
    assert_eq!(record["fields"]["message"], "serving metrics", "{record}");
    assert_eq!(record["fields"]["addr"], addr.to_string(), "{record}");
    let line = next_line(&mut stderr);
    assert!(
        line.starts_with("eventbus: sampling 2 consumer groups in namespace")
            && line.contains("every 200ms"),
        "{line}"
    );

    let billing = [("stream", stream.as_str()), ("group", "billing-consumers")];
    let text = scrape_until(addr, Duration::from_secs(10), "billing's lag", |t| {
        value(t, LAG, &billing) == Some(20.0)
    });
    let line = format!(
        "eventbus_consumer_group_lag{{stream=\"{stream}\",group=\"billing-consumers\",partition=\"\"}} 20"
    );
    assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    assert_eq!(value(&text, PENDING, &billing), Some(3.0), "{text}");
    let oldest = value(&text, OLDEST, &billing).unwrap();
    assert!((0.0..60.0).contains(&oldest), "{oldest}");
    let shipping = [("stream", stream.as_str()), ("group", "shipping-consumers")];
    assert_eq!(value(&text, LAG, &shipping), Some(0.0), "{text}");
    assert_eq!(value(&text, PENDING, &shipping), Some(0.0), "{text}");
    assert_eq!(value(&text, OLDEST, &shipping), Some(0.0), "{text}");
    // The pending entries age between samples.
    scrape_until(
        addr,
        Duration::from_secs(10),
        "the oldest pending entry to age",
        |t| value(t, OLDEST, &billing).is_some_and(|s| s > oldest),
    );

    // A group deleted leaves nothing to do behind: its series drop to 0.
    let _: u64 = redis(
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(&stream)
            .arg("billing-consumers"),
    )
    .await;
    let text = scrape_until(
        addr,
        Duration::from_secs(10),
        "billing's series at 0",
        |t| value(t, LAG, &billing) == Some(0.0),
    );
    assert_eq!(value(&text, PENDING, &billing), Some(0.0), "{text}");

    let status = terminate(child, "monitor");
    assert!(status.success(), "exit status {status}");
    assert_eq!(next_line(&mut stderr), "eventbus: stopping\n");
}

/// On a cluster, `monitor` takes `redis+cluster://` like every command and reports every
/// partition of a partitioned topic (spread over the masters) as a series of its own.
#[test]
fn monitor_on_a_cluster_reports_every_partition() {
    let server = eventbus_tests::Server::cluster();
    let guard = eventbus_tests::NamespaceGuard::on(
        server.clone(),
        eventbus_tests::namespace("cli:monitor_cluster"),
    );
    let ns = guard.namespace().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = runtime.block_on(async {
        let transport = RedisTransport::connect(server.config(&ns)).await.unwrap();
        transport.create_topic("Order", 3).await.unwrap();
        let topic = Topic::of_type("Order");
        transport
            .ensure_group(&topic, "billing-consumers", StartFrom::New)
            .await
            .unwrap();
        let bus = EventBus::new(transport.clone(), "shop");
        let events: Vec<_> = (0..20)
            .map(|n| Envelope::new("Order", 1, "shop", json!({ "n": n })))
            .collect();
        bus.publish_raw(&events).await.unwrap();
        transport.destination(&topic)
    });
    let (child, addr, _, _stderr) = serving(
        Command::new(BIN)
            .env("REDIS_URL", server.url())
            .args(["--namespace", &ns, "monitor", "--interval", "0.2"])
            .args(["--metrics-addr", "127.0.0.1:0"]),
    );
    let billing = [("stream", base.as_str()), ("group", "billing-consumers")];
    let text = scrape_until(addr, Duration::from_secs(15), "20 behind", |t| {
        find(t, LAG, &billing).iter().map(|s| s.value).sum::<f64>() == 20.0
    });
    let partitions: BTreeSet<String> = find(&text, LAG, &billing)
        .into_iter()
        .map(|s| s.labels["partition"].clone())
        .collect();
    assert_eq!(
        partitions,
        ["0", "1", "2"].map(String::from).into(),
        "{text}"
    );
    assert!(terminate(child, "monitor on a cluster").success());
    drop(guard);
}

#[tokio::test]
async fn consume_serves_what_it_consumed_and_how_long_handling_took() {
    let ns = Namespace::new("consume_metrics");
    let mut consume = cli(
        &ns,
        &[
            "consume",
            "--service",
            "svc",
            "--type",
            "Tick",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let (mut child, addr, _, mut stderr) = serving(consume.stdout(Stdio::piped()));
    let line = next_line(&mut stderr);
    assert!(line.contains("consuming as"), "{line}");
    for n in 0..5 {
        publish(&ns, "Tick", &format!(r#"{{"n":{n}}}"#), &[]);
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for n in 0..5 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains(&format!(r#""n":{n}"#)), "{line}");
    }

    let stream = format!("{ns}:stream:Tick");
    let consumed = [
        ("messaging_system", "redis"),
        ("messaging_destination_name", stream.as_str()),
        ("messaging_consumer_group_name", "svc-consumers"),
    ];
    let handled = [
        ("messaging_destination_name", stream.as_str()),
        ("messaging_consumer_group_name", "svc-consumers"),
        ("outcome", "ok"),
    ];
    let text = scrape_until(addr, Duration::from_secs(10), "5 handled", |t| {
        value(t, "messaging_process_duration_seconds_count", &handled) == Some(5.0)
    });
    assert_eq!(
        value(&text, "messaging_client_consumed_messages_total", &consumed),
        Some(5.0),
        "{text}"
    );
    // A histogram in the duration buckets, 100 µs to 10 s, cumulative up to +Inf.
    let buckets = find(&text, "messaging_process_duration_seconds_bucket", &handled);
    let bounds: Vec<&str> = buckets.iter().map(|b| b.labels["le"].as_str()).collect();
    for bound in ["0.0001", "0.001", "0.1", "1", "10", "+Inf"] {
        assert!(bounds.contains(&bound), "no bucket le={bound}: {bounds:?}");
    }
    let inf = value(
        &text,
        "messaging_process_duration_seconds_bucket",
        &[handled.as_slice(), &[("le", "+Inf")]].concat(),
    );
    assert_eq!(inf, Some(5.0), "{text}");
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "{buckets:?}"
    );
    let sum = value(&text, "messaging_process_duration_seconds_sum", &handled).unwrap();
    assert!(sum > 0.0 && sum < 5.0, "{sum}");

    // And its group's lag, sampled every 5 s.
    let group = [("stream", stream.as_str()), ("group", "svc-consumers")];
    let text = scrape_until(addr, Duration::from_secs(15), "the group's lag", |t| {
        value(t, LAG, &group).is_some()
    });
    assert_eq!(value(&text, LAG, &group), Some(0.0), "{text}");
    assert_eq!(value(&text, PENDING, &group), Some(0.0), "{text}");

    let status = terminate(child, "consume");
    assert!(status.success(), "exit status {status}");
}
