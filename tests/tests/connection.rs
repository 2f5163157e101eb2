//! Connection faults, on a Redis server of the test's own.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::{event, Backoff, Envelope, EventBus, TransportErrorKind};
use eventbus_redis::{RedisConfig, RedisTransport};
use eventbus_tests::{eventually, RedisServer};

#[event(name = "Tick")]
#[derive(Debug, Clone)]
struct Tick {
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_client_kill() {
    let server = RedisServer::start(&[]).await;
    let transport = RedisTransport::connect(RedisConfig::new(&server.url()).unwrap())
        .await
        .unwrap();
    let bus = EventBus::new(transport.clone(), "ticker");
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let s = seen.clone();
    let sub = bus
        .subscribe()
        .configure(|o| {
            o.block = Duration::from_millis(200);
            o.reconnect_backoff =
                Backoff::new(Duration::from_millis(20), Duration::from_millis(300));
        })
        .on(move |e: Envelope<Tick>| {
            s.lock().unwrap().push(e.data.n);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();
    bus.publish_batch((0..10).map(|n| Tick { n }))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "first ten", || async {
        seen.lock().unwrap().len() == 10
    })
    .await;

    // Kill every client connection (the subscriber's blocking reader, the shared one).
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 2, "killed {killed} connections");

    // Publishing may fail once while the connection is re-established; retry like a caller would.
    let mut published = false;
    for _ in 0..50 {
        if bus
            .publish_batch((10..20).map(|n| Tick { n }))
            .await
            .is_ok()
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(published, "publishing recovers after the connection loss");
    eventually(
        Duration::from_secs(15),
        "the rest after reconnecting",
        || async { seen.lock().unwrap().len() >= 20 },
    )
    .await;
    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, (0..20).collect::<Vec<_>>(), "nothing lost");
    eventually(Duration::from_secs(10), "nothing left pending", || async {
        bus.transport()
            .lag(None)
            .await
            .map(|l| l.iter().all(|g| g.pending == 0))
            .unwrap_or(false)
    })
    .await;
    sub.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("redis://user:s3cret@127.0.0.1:{port}/0");
    let err = RedisTransport::connect(RedisConfig::new(&url).unwrap())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("s3cret"), "the password leaked: {text}");
    match err {
        eventbus_redis::Error::Transport(t) => assert_eq!(t.kind(), TransportErrorKind::Connection),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let server = RedisServer::start(&["--requirepass", "right-one"]).await;
    let url = format!("redis://default:wrong-one@127.0.0.1:{}", server.port());
    let err = RedisTransport::connect(RedisConfig::new(&url).unwrap())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("wrong-one"), "the password leaked: {text}");
    match err {
        eventbus_redis::Error::Transport(t) => {
            assert_eq!(t.kind(), TransportErrorKind::Auth, "{t}")
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    let ok = format!("redis://default:right-one@127.0.0.1:{}", server.port());
    RedisTransport::connect(RedisConfig::new(&ok).unwrap())
        .await
        .expect("the right password works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connection_carries_the_bus() {
    let server = RedisServer::start_tls().await;
    let url = server.tls_url().unwrap();
    let transport = RedisTransport::connect(RedisConfig::new(&url).unwrap())
        .await
        .unwrap_or_else(|e| panic!("TLS connect to {url}: {e}"));
    let bus = EventBus::new(transport, "secure");
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let s = seen.clone();
    let sub = bus
        .subscribe()
        .on(move |e: Envelope<Tick>| {
            s.lock().unwrap().push(e.data.n);
            std::future::ready(Ok(()))
        })
        .start()
        .await
        .unwrap();
    bus.publish_batch((0..5).map(|n| Tick { n })).await.unwrap();
    eventually(Duration::from_secs(10), "five events over TLS", || async {
        seen.lock().unwrap().len() == 5
    })
    .await;
    sub.shutdown().await.unwrap();
    // The plain port of that server is the same data: the events really went through it.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let len: i64 = redis::cmd("XLEN")
        .arg("eventbus:stream:Tick")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 5);
}
