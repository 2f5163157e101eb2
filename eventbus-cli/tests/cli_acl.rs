//! Least-privilege ACL users, created from the README's table of rules per role, on a
//! private `redis-server`: each role can do its job with exactly those rules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::{Backoff, Context, Envelope, EventBus, HandlerError};
use eventbus_redis::{RedisConfig, RedisTransport};
use serde_json::{json, Value};
use support::server::{free_port, PrivateServer};
use support::BIN;

const README: &str = include_str!("../../README.md");
const NS: &str = "cliacl";

/// The ACL rules of `role` in the README's table, for namespace [`NS`].
fn documented_rules(role: &str) -> String {
    let row = README
        .lines()
        .find(|l| l.starts_with(&format!("| {role} |")))
        .unwrap_or_else(|| panic!("the README has no ACL row for {role}"));
    let cell = row.trim_end_matches('|').rsplit(" | ").next().unwrap();
    cell.trim()
        .trim_matches('`')
        .replace("\\|", "|")
        .replace("eventbus:", &format!("{NS}:"))
}

struct Acl {
    _server: PrivateServer,
    port: u16,
    admin: redis::aio::MultiplexedConnection,
}

impl Acl {
    async fn start() -> Self {
        let port = free_port();
        let server = PrivateServer::start(port, &[], port);
        let admin = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut acl = Acl {
            _server: server,
            port,
            admin,
        };
        for role in ["publisher", "consumer", "operator"] {
            let rules = documented_rules(role);
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER")
                .arg(role)
                .arg("on")
                .arg(format!(">{role}-pw"))
                .arg("resetkeys")
                .arg("-@all");
            for rule in rules.split_whitespace() {
                cmd.arg(rule);
            }
            let _: () = cmd.query_async(&mut acl.admin).await.unwrap();
        }
        acl
    }

    fn url(&self, role: &str) -> String {
        format!("redis://{role}:{role}-pw@127.0.0.1:{}", self.port)
    }

    fn run(&self, role: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .env("REDIS_URL", self.url(role))
            .args(["--namespace", NS])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, role: &str, args: &[&str]) -> String {
        let out = self.run(role, args);
        assert!(
            out.status.success(),
            "{role} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn admin<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.admin.clone()).await.unwrap()
    }

    async fn pending(&self, group: &str) -> i64 {
        let summary: Vec<redis::Value> = self
            .admin(
                redis::cmd("XPENDING")
                    .arg(format!("{NS}:stream:Job"))
                    .arg(group),
            )
            .await;
        match summary.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING summary {other:?}"),
        }
    }

    async fn dead_letters(&self, group: &str) -> i64 {
        self.admin(redis::cmd("XLEN").arg(format!("{NS}:dlq:{group}")))
            .await
    }
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_works_with_exactly_the_documented_acl() {
    let acl = Acl::start().await;

    // The publisher may not run INFO or CONFIG GET: it connects and publishes anyway.
    for n in 1..=2 {
        let id = acl.ok("publisher", &["publish", "Job", &format!(r#"{{"n":{n}}}"#)]);
        assert!(id.trim().contains('-'), "{id}");
    }
    // …and nothing else: it cannot read the bus. One line, naming the permission.
    let out = acl.run("publisher", &["lag"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("permission"), "{stderr}");

    // A malformed entry between them, as a buggy producer would write it.
    let _: String = acl
        .admin(
            redis::cmd("XADD")
                .arg(format!("{NS}:stream:Job"))
                .arg("*")
                .arg("event_id")
                .arg("e-bad")
                .arg("data")
                .arg("{oops"),
        )
        .await;
    acl.ok("publisher", &["publish", "Job", r#"{"n":3}"#]);

    // The consumer consumes and acks, and dead-letters the malformed entry.
    let printed = lines(&acl.ok(
        "consumer",
        &[
            "consume",
            "--service",
            "worker",
            "--type",
            "Job",
            "--from-beginning",
            "--count",
            "3",
        ],
    ));
    let ns: Vec<i64> = printed
        .iter()
        .map(|l| l["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 2, 3]);
    assert_eq!(acl.pending("worker-consumers").await, 0, "acked");
    assert_eq!(
        acl.dead_letters("worker-consumers").await,
        1,
        "dead-lettered"
    );

    // It reclaims what a crashed consumer left pending.
    acl.ok("publisher", &["publish", "Job", r#"{"n":4}"#]);
    let _: redis::Value = acl
        .admin(
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("worker-consumers")
                .arg("crashed")
                .arg("COUNT")
                .arg(10)
                .arg("STREAMS")
                .arg(format!("{NS}:stream:Job"))
                .arg(">"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reclaimed = lines(&acl.ok(
        "consumer",
        &[
            "consume",
            "--service",
            "worker",
            "--type",
            "Job",
            "--claim-idle-ms",
            "100",
            "--count",
            "1",
        ],
    ));
    assert_eq!(reclaimed[0]["data"]["n"], 4);
    assert_eq!(acl.pending("worker-consumers").await, 0);

    // A subscription retries a failed handler under the consumer role too.
    let transport = RedisTransport::connect(
        RedisConfig::new(&acl.url("consumer"))
            .unwrap()
            .namespace(NS),
    )
    .await
    .unwrap();
    let bus = EventBus::new(transport, "worker");
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    let sub = bus
        .subscribe()
        .retry_backoff(Backoff::constant(Duration::from_millis(10)))
        .on_raw("Job", move |e: Envelope<Value>, _ctx: Context| {
            let seen = seen.clone();
            async move {
                if e.data["n"] == json!(5) && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::retryable("first attempt fails"));
                }
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    acl.ok("publisher", &["publish", "Job", r#"{"n":5}"#]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while attempts.load(Ordering::SeqCst) < 2 || acl.pending("worker-consumers").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry did not succeed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sub.shutdown().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(
        acl.dead_letters("worker-consumers").await,
        1,
        "no new dead letter"
    );

    // The operator inspects and manages.
    let lag = lines(&acl.ok("operator", &["lag", "--service", "worker", "--json"]));
    let row = &lag[0].as_array().unwrap()[0];
    assert_eq!(row["group"], "worker-consumers");
    assert_eq!(row["pending"], 0);
    acl.ok("operator", &["lag"]);
    let tailed = lines(&acl.ok(
        "operator",
        &["tail", "Job", "--from-beginning", "--count", "1"],
    ));
    assert_eq!(tailed[0]["data"]["n"], 1);
    let listed = lines(&acl.ok(
        "operator",
        &["dlq", "list", "--service", "worker", "--json"],
    ));
    assert_eq!(listed.len(), 1);
    let replayed = lines(&acl.ok(
        "operator",
        &["dlq", "replay", "--service", "worker", "--json"],
    ));
    assert_eq!(replayed[0]["replayed"], 1);
    assert_eq!(acl.dead_letters("worker-consumers").await, 0);
    // Consumed again, it is dead-lettered again; the operator purges it.
    acl.ok("publisher", &["publish", "Job", r#"{"n":6}"#]);
    acl.ok(
        "consumer",
        &[
            "consume",
            "--service",
            "worker",
            "--type",
            "Job",
            "--count",
            "1",
        ],
    );
    assert_eq!(acl.dead_letters("worker-consumers").await, 1);
    let purged = lines(&acl.ok(
        "operator",
        &["dlq", "purge", "--service", "worker", "--json"],
    ));
    assert_eq!(purged[0]["purged"], 1);
    let listed = lines(&acl.ok(
        "operator",
        &["dlq", "list", "--service", "worker", "--json"],
    ));
    assert!(listed.is_empty());
    // The operator creates and lists partitioned topics.
    acl.ok("operator", &["topic", "create", "Job", "--partitions", "2"]);
    let topics = lines(&acl.ok("operator", &["topic", "list", "--json"]));
    let job = topics[0]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "Job")
        .unwrap();
    assert_eq!(job["partitions"].as_array().unwrap().len(), 2);
    acl.ok("operator", &["lag"]);
}
