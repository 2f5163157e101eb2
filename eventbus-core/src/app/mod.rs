//! [`App`]: one service — commands, queries, projections, event handlers, routers, sagas
//! and remote command serving — wired, run and shut down together.
//!
//! ```
//! use eventbus_core::prelude::*;
//!
//! #[event]
//! #[derive(Debug, Clone)]
//! pub struct OrderCreated { pub order_id: String, pub total: f64 }
//!
//! #[command(output = OrderCreated)]
//! pub struct CreateOrder { pub total: f64 }
//!
//! #[command_handler]
//! async fn create_order(cmd: CreateOrder, ctx: CommandContext) -> Result<OrderCreated, NoRejection> {
//!     Ok(OrderCreated { order_id: ctx.new_id(), total: cmd.total })
//! }
//!
//! #[projection(hash = "orders:summary:{order_id}")]
//! #[derive(Debug)]
//! pub struct OrderSummary {
//!     #[set(from = OrderCreated)] pub order_id: String,
//!     #[set(from = OrderCreated)] pub total: f64,
//! }
//!
//! #[query(output = Option<OrderSummary>)]
//! pub struct GetOrder { pub order_id: String }
//!
//! #[query_handler]
//! async fn get_order(q: GetOrder, models: State<ReadModels>) -> Result<Option<OrderSummary>, QueryError> {
//!     Ok(OrderSummary::load(&models, &q.order_id).await?)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::builder("order-service")
//!     .in_memory()
//!     .command(create_order)
//!     .projection(OrderSummary::projection())
//!     .query(get_order)
//!     .start()
//!     .await?;
//! let created = app.dispatch(CreateOrder { total: 12.5 }).await?;
//! // Read your own write: waits until the projection applied the command's event.
//! let summary = app.query_after(&created.receipt, GetOrder { order_id: created.order_id.clone() }).await?;
//! assert_eq!(summary.map(|s| s.total), Some(12.5));
//! app.shutdown().await?;
//! # Ok(()) }
//! ```

mod backend;
mod builder;
mod consistency;

use std::sync::Arc;
use std::time::Duration;

pub use backend::{Backend, Connected, InMemory};
pub use builder::AppBuilder;

use crate::bus::{EventBus, Subscription};
use crate::cqrs::{
    Command, CommandBus, CommandError, DispatchOptions, Dispatched, Query, QueryBus, QueryError,
    Receipt,
};
use crate::error::Result;
use crate::projection::{ReadModels, RunningProjection};
use crate::saga::{SagaCoordinator, SagaStore};
use crate::telemetry::lag::RunningLagSampler;
use consistency::Watched;

/// The running parts of an app, shut down in reverse order of their start.
#[derive(Default)]
struct Parts {
    projections: Vec<RunningProjection>,
    watched: Vec<Watched>,
    subscription: Option<Subscription>,
    coordinator: Option<SagaCoordinator>,
    participant: Option<Subscription>,
    serving: Option<Subscription>,
    lag_sampler: Option<RunningLagSampler>,
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::telemetry::prometheus::MetricsServer>,
}

/// A running service: dispatch commands, answer queries, keep read models current, handle
/// events, drive sagas. Built with [`App::builder`]; see the [module docs](self).
///
/// Consistency: read models are **eventually consistent** with the commands that change
/// them: a [`query`](Self::query) reads what the projections applied so far.
/// [`query_after`](Self::query_after) reads **your own writes**: it first waits until every
/// projection of this app that reads the dispatched events' streams has applied them.
pub struct App {
    events: EventBus,
    commands: CommandBus,
    queries: QueryBus,
    read_models: ReadModels,
    saga_store: Arc<dyn SagaStore>,
    parts: Parts,
    read_your_writes_timeout: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.events.service())
            .field("commands", &self.commands)
            .field("queries", &self.queries)
            .finish()
    }
}

impl App {
    /// Starts building the app of `service` (the name that stamps its events and names its
    /// consumer groups).
    pub fn builder(service: impl Into<String>) -> AppBuilder {
        AppBuilder::new(service.into())
    }

    /// Dispatches a command in a new flow. The result derefs to the handler's output and
    /// carries the [`Receipt`] of the events it published.
    pub async fn dispatch<C: Command>(
        &self,
        command: C,
    ) -> std::result::Result<Dispatched<C::Output>, CommandError<C::Error>> {
        self.commands
            .dispatch_with(command, DispatchOptions::default())
            .await
    }

    /// Dispatches a command with explicit correlation, causation or command id.
    pub async fn dispatch_with<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
    ) -> std::result::Result<Dispatched<C::Output>, CommandError<C::Error>> {
        self.commands.dispatch_with(command, options).await
    }

    /// Answers a query from the read models as they are now (eventually consistent).
    pub async fn query<Q: Query>(&self, query: Q) -> std::result::Result<Q::Output, QueryError> {
        self.queries.query(query).await
    }

    /// Answers a query once every projection of this app that reads the streams of
    /// `receipt`'s events has applied them (read-your-writes), waiting at most the
    /// builder's `read_your_writes_timeout` (5 s by default).
    ///
    /// # Errors
    ///
    /// [`QueryError::NotCaughtUp`] when a projection did not catch up in time; the
    /// query's own errors.
    pub async fn query_after<Q: Query>(
        &self,
        receipt: &Receipt,
        query: Q,
    ) -> std::result::Result<Q::Output, QueryError> {
        consistency::settle(
            self.events.transport(),
            &self.parts.watched,
            receipt,
            self.read_your_writes_timeout,
        )
        .await?;
        self.queries.query(query).await
    }

    /// Answers a query once every projection of this app has applied everything published
    /// before the call (not only one command's events), waiting at most the
    /// `read_your_writes_timeout`. Prefer [`query_after`](Self::query_after) with the
    /// receipt of the dispatch you want to see.
    pub async fn query_eventually<Q: Query>(
        &self,
        query: Q,
    ) -> std::result::Result<Q::Output, QueryError> {
        consistency::catch_up(
            self.events.transport(),
            &self.parts.watched,
            self.read_your_writes_timeout,
        )
        .await?;
        self.queries.query(query).await
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The command bus.
    pub fn commands(&self) -> &CommandBus {
        &self.commands
    }

    /// The query bus.
    pub fn queries(&self) -> &QueryBus {
        &self.queries
    }

    /// The read models.
    pub fn read_models(&self) -> &ReadModels {
        &self.read_models
    }

    /// The running projections.
    pub fn projections(&self) -> &[RunningProjection] {
        &self.parts.projections
    }

    /// The saga coordinator, when the app registered sagas: start sagas with it.
    pub fn sagas(&self) -> Option<&SagaCoordinator> {
        self.parts.coordinator.as_ref()
    }

    /// The saga store of the app's backend.
    pub fn saga_store(&self) -> &Arc<dyn SagaStore> {
        &self.saga_store
    }

    /// Where the app serves `GET /metrics`, when it was built with
    /// [`metrics_addr`](AppBuilder::metrics_addr): the address bound (with the port picked
    /// for port 0).
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.parts.metrics.as_ref().map(|m| m.local_addr())
    }

    /// Runs until SIGINT (Ctrl-C) or SIGTERM, then [shuts down](Self::shutdown).
    pub async fn run(self) -> Result<()> {
        shutdown_signal().await;
        tracing::info!(service = self.events.service(), "shutting down");
        self.shutdown().await
    }

    /// Shuts every part down in order: stop taking remote commands, then stop reading
    /// events and drain the handlers, routers and saga coordinator in flight (their entries
    /// acknowledged), then the projections, and last the lag sampling and the metrics
    /// endpoint. Every part is shut down even when one fails; the first error is returned.
    pub async fn shutdown(self) -> Result<()> {
        let parts = self.parts;
        let mut first = Ok(());
        let mut keep = |result: Result<()>| {
            if first.is_ok() {
                first = result;
            }
        };
        if let Some(serving) = parts.serving {
            keep(serving.shutdown().await.map(drop));
        }
        if let Some(subscription) = parts.subscription {
            keep(subscription.shutdown().await.map(drop));
        }
        if let Some(participant) = parts.participant {
            keep(participant.shutdown().await.map(drop));
        }
        if let Some(coordinator) = parts.coordinator {
            keep(coordinator.shutdown().await);
        }
        for projection in parts.projections {
            keep(projection.shutdown().await);
        }
        if let Some(sampler) = parts.lag_sampler {
            sampler.shutdown().await;
        }
        #[cfg(feature = "prometheus")]
        if let Some(metrics) = parts.metrics {
            metrics.shutdown().await;
        }
        first
    }
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
