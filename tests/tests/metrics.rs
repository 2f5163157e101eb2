//! An `App`'s metrics on Redis, scraped from the endpoint `metrics_addr` serves: what it
//! published and consumed, how long handling took, and the lag of its own groups.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::prelude::*;
use eventbus_core::telemetry::prometheus;
use eventbus_core::transport::{StartFrom, Topic};
use eventbus_core::{Error, StreamTransport};
use eventbus_redis::{AppBuilderExt, RedisConfig, RedisTransport};
use eventbus_tests::scrape::{find, scrape_until, value};

#[event(name = "MetricsTest.Pinged")]
#[derive(Debug, Clone)]
struct Pinged {
    id: String,
}

#[projection(hash = "metricstest:pings:{id}")]
#[derive(Debug)]
struct PingSeen {
    #[set(from = Pinged)]
    id: String,
}

#[derive(Default)]
struct Pings(AtomicUsize);

async fn count(_event: Pinged, pings: State<Pings>) -> Result<(), HandlerError> {
    pings.0.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn transport(namespace: &str) -> RedisTransport {
    RedisTransport::connect(
        RedisConfig::new(&eventbus_tests::redis_url())
            .unwrap()
            .namespace(namespace),
    )
    .await
    .unwrap()
}

/// Scrapes on a blocking thread until `check` holds (10 s at most).
async fn scraped(
    addr: SocketAddr,
    what: &'static str,
    check: fn(&str, &str) -> bool,
    stream: &str,
) -> String {
    let stream = stream.to_owned();
    tokio::task::spawn_blocking(move || {
        scrape_until(addr, Duration::from_secs(10), what, |t| check(t, &stream))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_serves_its_metrics_and_its_groups_lag() {
    let namespace = eventbus_tests::namespace("app_metrics");
    let _guard = eventbus_tests::NamespaceGuard::new(namespace.clone());
    let transport = transport(&namespace).await;
    let topic = Topic::of_type("MetricsTest.Pinged");
    let stream = transport.destination(&topic);
    // A group of another service on the same stream, that reads nothing.
    transport
        .ensure_group(&topic, "other-consumers", StartFrom::Beginning)
        .await
        .unwrap();
    let pings = Arc::new(Pings::default());
    let app = App::builder("metered")
        .redis(&transport)
        .read_model_prefix(format!("{namespace}:"))
        .on(count)
        .state_arc(pings.clone())
        .projection(PingSeen::projection())
        .metrics_addr(([127, 0, 0, 1], 0))
        .sample_lag(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let addr = app.metrics_addr().expect("the app serves metrics");
    assert_ne!(addr.port(), 0, "the port bound is reported");

    for n in 0..7 {
        app.events()
            .publish(Pinged {
                id: format!("p{n}"),
            })
            .await
            .unwrap();
    }
    eventbus_tests::eventually(Duration::from_secs(10), "7 pings handled", || async {
        pings.0.load(Ordering::SeqCst) == 7
    })
    .await;
    // The projection applies and acknowledges each entry in one step: once its read model
    // has every ping, its group has nothing left to read or acknowledge. Only then do the
    // gauges below (sampled every 100 ms) have a value to catch up to.
    let models = app.read_models().clone();
    eventbus_tests::eventually(Duration::from_secs(10), "7 pings projected", || {
        let models = models.clone();
        async move {
            for n in 0..7 {
                let id = format!("p{n}");
                match PingSeen::load(&models, &id).await {
                    Ok(Some(seen)) if seen.id == id => {}
                    _ => return false,
                }
            }
            true
        }
    })
    .await;

    let text = scraped(
        addr,
        "7 handled and consumed, and the groups caught up",
        |t, stream| {
            let handled = [
                ("messaging_destination_name", stream),
                ("messaging_consumer_group_name", "metered-consumers"),
                ("outcome", "ok"),
            ];
            let caught_up = |group| {
                let series = [("stream", stream), ("group", group)];
                let consumed = [
                    ("messaging_destination_name", stream),
                    ("messaging_consumer_group_name", group),
                ];
                value(t, "messaging_client_consumed_messages_total", &consumed) == Some(7.0)
                    && value(t, "eventbus_consumer_group_lag", &series) == Some(0.0)
                    && value(t, "eventbus_consumer_group_pending", &series) == Some(0.0)
            };
            value(t, "messaging_process_duration_seconds_count", &handled) == Some(7.0)
                && caught_up("metered-consumers")
                && caught_up("metered-projection-PingSeen")
        },
        &stream,
    )
    .await;
    let of_stream = [("messaging_destination_name", stream.as_str())];
    assert_eq!(
        value(&text, "messaging_client_sent_messages_total", &of_stream),
        Some(7.0),
        "{text}"
    );
    for group in ["metered-consumers", "metered-projection-PingSeen"] {
        let consumed = [
            ("messaging_destination_name", stream.as_str()),
            ("messaging_consumer_group_name", group),
        ];
        assert_eq!(
            value(&text, "messaging_client_consumed_messages_total", &consumed),
            Some(7.0),
            "{group}: {text}"
        );
    }
    assert!(
        !find(
            &text,
            "messaging_process_duration_seconds_bucket",
            &of_stream
        )
        .is_empty(),
        "{text}"
    );
    // Only the app's own groups are sampled.
    assert!(
        find(
            &text,
            "eventbus_consumer_group_lag",
            &[("group", "other-consumers")]
        )
        .is_empty(),
        "{text}"
    );

    app.shutdown().await.unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the endpoint stops with the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_one_process_share_its_recorder_and_a_taken_address_is_an_error() {
    let namespace = eventbus_tests::namespace("app_metrics_shared");
    let _guard = eventbus_tests::NamespaceGuard::new(namespace.clone());
    let transport = transport(&namespace).await;
    let app = App::builder("shared")
        .redis(&transport)
        .metrics_addr(([127, 0, 0, 1], 0))
        .start()
        .await
        .unwrap();
    let other = prometheus::serve(([127, 0, 0, 1], 0).into()).await.unwrap();
    assert_ne!(other.local_addr(), app.metrics_addr().unwrap());
    eventbus_core::telemetry::metrics::sent("redis", &format!("{namespace}:shared"), 3);
    for addr in [other.local_addr(), app.metrics_addr().unwrap()] {
        let text = tokio::task::spawn_blocking(move || eventbus_tests::scrape::scrape(addr))
            .await
            .unwrap();
        let sent = [("messaging_destination_name", format!("{namespace}:shared"))];
        let sent = [(sent[0].0, sent[0].1.as_str())];
        assert_eq!(
            value(&text, "messaging_client_sent_messages_total", &sent),
            Some(3.0),
            "{text}"
        );
    }

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    match prometheus::serve(addr).await {
        Err(Error::MetricsListen { addr: refused, .. }) => assert_eq!(refused, addr),
        other => panic!("expected MetricsListen, got {other:?}"),
    }
    let refused = App::builder("shared-too")
        .redis(&transport)
        .metrics_addr(addr)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::MetricsListen { .. }), "{refused}");
    other.shutdown().await;
    app.shutdown().await.unwrap();
}
