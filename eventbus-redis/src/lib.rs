//! # eventbus-redis
//!
//! The Redis backend of eventbus: a Streams event bus wire-compatible with the reference
//! article's Python `StreamEventBus`, so Rust and Python services can share one bus.
//!
//! [`RedisTransport`] implements core's [`StreamTransport`](eventbus_core::StreamTransport):
//! every event is appended to its type's stream (`eventbus:stream:{event_type}`) and to the
//! global stream (`eventbus:stream:all`) in one `MULTI`/`EXEC`; consumer groups read with
//! `XREADGROUP`, reclaim idle entries with `XAUTOCLAIM`, and dead-letter what keeps failing
//! to `eventbus:dlq:{group}` atomically with its ack.
//!
//! ```no_run
//! use eventbus_core::transport::{ConsumerSpec, StartFrom, StreamTransport, Topic};
//! use eventbus_core::Envelope;
//! use eventbus_redis::{group_for_service, RedisConfig, RedisTransport};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // REDIS_URL, or redis://127.0.0.1:6379
//! let transport = RedisTransport::connect(RedisConfig::from_env()?).await?;
//!
//! let topic = Topic::of_type("OrderCreated");
//! let group = group_for_service("billing");
//! transport.ensure_group(&topic, &group, StartFrom::New).await?;
//!
//! let event = Envelope::new("OrderCreated", 1, "order-service", serde_json::json!({"order_id": "o1"}));
//! transport.publish(&[event]).await?;
//!
//! let consumer = transport
//!     .consumer(ConsumerSpec { group, consumer: "billing-1".into(), topics: vec![topic.clone()] })
//!     .await?;
//! for delivery in consumer.read(100, Duration::from_secs(5)).await? {
//!     println!("{:?}", delivery.event);
//!     consumer.ack(&[(topic.clone(), vec![delivery.entry_id])]).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`RedisPubSub`] implements core's [`PubSubTransport`](eventbus_core::PubSubTransport) for
//! the at-most-once Pub/Sub bus: `PUBLISH events:{event_type}` with the article's six-key
//! JSON message, wire-compatible with its Python `PubSubEventBus` in both directions.
//!
//! [`RedisSagaStore`] implements core's [`SagaStore`](eventbus_core::saga::SagaStore): saga
//! state as JSON at `saga:{saga_id}` (the article's layout, plus a version), every transition
//! one compare-and-set script that also maintains per-state index sets and the sorted set of
//! deadlines — on a Redis Cluster sharded by the slot of the state key, so the script stays
//! in one slot.
//!
//! ## Connection
//!
//! [`RedisConfig`] takes a URL: `redis://[user:password@]host[:port][/db]`, `rediss://…` for
//! TLS (webpki roots, or a private CA with [`RedisConfig::tls_ca_file`]), `rediss://…#insecure`
//! to skip certificate verification. Errors name the server with its password redacted.

#![deny(rustdoc::broken_intra_doc_links)]

mod admin;
mod app;
pub mod client;
pub mod codec;
pub mod config;
mod conn;
pub mod consumer;
pub mod error;
pub mod event_store;
mod fence;
pub mod inspect;
pub mod keys;
pub mod partition;
pub mod prelude;
mod publish;
pub mod pubsub;
pub mod read_models;
mod replication;
mod reply;
pub mod sagas;
mod scripts;
pub mod server_info;
pub mod settings;
pub mod summary;
pub mod tail;
pub mod topics;
pub mod transport;

pub use app::{AppBuilderExt, RedisBackend};
pub use client::RedisClient;
pub use config::{RedisConfig, DEFAULT_URL};
pub use consumer::RedisConsumer;
pub use error::{Error, Result};
pub use event_store::RedisEventStore;
pub use keys::{group_for_service, Keys, SagaKeys};
pub use pubsub::RedisPubSub;
pub use read_models::RedisReadModels;
pub use sagas::RedisSagaStore;
pub use server_info::ServerInfo;
pub use settings::NamespaceSettings;
pub use summary::StreamSummary;
pub use tail::{StreamTail, TailEntry};
pub use topics::{PartitionInfo, TopicInfo};
pub use transport::RedisTransport;

/// The README's code blocks, compiled (and, unless marked `no_run`, run) by `cargo test`
/// as doctests, so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
