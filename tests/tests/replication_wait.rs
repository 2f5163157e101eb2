//! `RedisConfig::publish_wait_for_replicas` on a master with one replica (both servers of
//! the test's own): publishes and event-store appends return once the replica has their
//! events; while the replica is stopped (SIGSTOP) they fail with a timeout that says the
//! events were written all the same, and they are.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::time::Duration;

use eventbus_core::es::EventStore;
use eventbus_core::transport::Topic;
use eventbus_core::{Envelope, Error, StreamTransport, TransportErrorKind};
use eventbus_redis::{RedisConfig, RedisEventStore, RedisTransport};
use eventbus_tests::{eventually, replicated_write, waiting_connection, RedisServer};
use serde_json::json;

const TYPE: &str = "Replicated.Deposited";
const ACCOUNT: &str = "ReplicatedAccount";
/// The replica wait: long enough for a replica on a loaded 2-core host, short enough to
/// wait out twice while the replica is stopped.
const TIMEOUT: Duration = Duration::from_secs(1);

/// A process stopped with SIGSTOP until dropped (SIGCONT), also when the test fails.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Self {
        signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A master and its replica, in sync.
async fn replicated() -> (RedisServer, RedisServer) {
    let master = RedisServer::start(&["--repl-diskless-sync-delay", "0"]).await;
    let replica =
        RedisServer::start(&["--replicaof", "127.0.0.1", &master.port().to_string()]).await;
    let conn = waiting_connection(&master.url()).await;
    eventually(Duration::from_secs(30), "the replica in sync", || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .unwrap();
            info.contains("state=online")
        }
    })
    .await;
    // And acknowledging.
    assert_eq!(
        replicated_write(&master.url(), "replicated:synced").await,
        1,
        "the replica acknowledges"
    );
    (master, replica)
}

fn deposited(n: u64) -> Envelope<serde_json::Value> {
    Envelope::new(TYPE, 1, "accounts", json!({ "n": n }))
}

fn is_wait_timeout(error: &Error, operation: &str) -> bool {
    matches!(error, Error::Transport(t)
        if t.kind() == TransportErrorKind::Timeout && t.operation() == operation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_appends_wait_for_the_replica_and_fail_while_it_is_stopped() {
    let (master, replica) = replicated().await;
    let transport = RedisTransport::connect(
        RedisConfig::new(&master.url())
            .unwrap()
            .namespace("replicated")
            .publish_wait_for_replicas(1, TIMEOUT),
    )
    .await
    .unwrap();
    let store = RedisEventStore::new(&transport);

    // In sync: both return once the replica has them.
    transport.publish(&[deposited(0)]).await.unwrap();
    store
        .append(ACCOUNT, "a1", 0, &[deposited(1)])
        .await
        .unwrap();

    {
        let _stopped = Stopped::stop(replica.pid());
        let started = std::time::Instant::now();
        let error = transport.publish(&[deposited(2)]).await.unwrap_err();
        assert!(is_wait_timeout(&error, "publish (WAIT)"), "{error}");
        assert!(
            started.elapsed() >= TIMEOUT,
            "it waited {:?}",
            started.elapsed()
        );
        assert!(error.to_string().contains("0 of 1 replicas"), "{error}");

        let error = store
            .append(ACCOUNT, "a1", 1, &[deposited(3)])
            .await
            .unwrap_err();
        assert!(is_wait_timeout(&error, "append (WAIT)"), "{error}");
        assert!(
            error.to_string().contains("appended up to version 2"),
            "{error}"
        );
        // Written all the same: the aggregate is at version 2, and a retry conflicts.
        assert_eq!(store.version(ACCOUNT, "a1").await.unwrap(), 2);
        let retry = store
            .append(ACCOUNT, "a1", 1, &[deposited(3)])
            .await
            .unwrap_err();
        assert!(retry.is_conflict(), "{retry}");
    }

    // Resumed: the next append waits and succeeds, and the replica has every event.
    store
        .append(ACCOUNT, "a1", 2, &[deposited(4)])
        .await
        .unwrap();
    let stream = transport.destination(&Topic::of_type(TYPE));
    let mut on_replica = waiting_connection(&replica.url()).await;
    let entries: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert_eq!(entries.len(), 5, "the replica's {stream}");
}

#[tokio::test]
async fn a_wait_as_long_as_the_response_timeout_is_refused_at_connect() {
    // Refused before any connection is tried: nothing listens on port 1.
    let config = RedisConfig::new("redis://127.0.0.1:1")
        .unwrap()
        .response_timeout(Duration::from_secs(2))
        .publish_wait_for_replicas(1, Duration::from_secs(2));
    let error = RedisTransport::connect(config).await.err().unwrap();
    assert!(
        matches!(error, eventbus_redis::Error::InvalidConfig { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("response_timeout (2000 ms)"),
        "{error}"
    );
}
