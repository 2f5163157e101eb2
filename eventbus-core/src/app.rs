//! [`App`]: one service's command bus, query bus and projections, wired and started together.

use std::sync::Arc;

use crate::bus::{EventBus, Subscription};
use crate::cqrs::{
    Command, CommandBus, CommandError, CommandHandler, Query, QueryBus, QueryError, QueryHandler,
};
use crate::error::{Error, Result};
use crate::projection::{Projection, ProjectionRunner, ReadModels, RunningProjection};
use crate::transport::memory::MemoryTransport;
use crate::transport::StreamTransport;

/// Builds an [`App`]; see [`App::builder`].
pub struct AppBuilder {
    service: String,
    transport: Option<Arc<dyn StreamTransport>>,
    read_models: Option<ReadModels>,
    commands: Vec<Box<dyn FnOnce(CommandBus) -> CommandBus + Send>>,
    queries: Vec<Box<dyn FnOnce(QueryBus) -> QueryBus + Send>>,
    projections: Vec<Arc<dyn Projection>>,
    serve_commands: bool,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("service", &self.service)
            .field(
                "projections",
                &self
                    .projections
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AppBuilder {
    /// The backend: a transport and the read-model store projections write to and queries
    /// read from (for Redis: `eventbus_redis::RedisTransport` and `RedisReadModels`).
    pub fn backend(mut self, transport: Arc<dyn StreamTransport>, read_models: ReadModels) -> Self {
        self.transport = Some(transport);
        self.read_models = Some(read_models);
        self
    }

    /// The in-memory backend (tests and demos).
    pub fn in_memory(self) -> Self {
        let memory = MemoryTransport::new();
        let models = ReadModels::new(memory.read_models());
        self.backend(Arc::new(memory), models)
    }

    /// Registers the handler of command `C`.
    pub fn command<C: Command>(mut self, handler: impl CommandHandler<C>) -> Self {
        self.commands
            .push(Box::new(move |bus: CommandBus| bus.handle(handler)));
        self
    }

    /// Registers the handler of query `Q`. Query handlers reach the read models as the
    /// resource `&ReadModels`.
    pub fn query<Q: Query>(mut self, handler: impl QueryHandler<Q>) -> Self {
        self.queries
            .push(Box::new(move |bus: QueryBus| bus.handle(handler)));
        self
    }

    /// Runs a projection (its own consumer group) while the app runs.
    pub fn projection(mut self, projection: impl Projection) -> Self {
        self.projections.push(Arc::new(projection));
        self
    }

    /// Also serves this service's commands to remote senders (a [`CommandServer`](crate::CommandServer)).
    pub fn serve_commands(mut self) -> Self {
        self.serve_commands = true;
        self
    }

    /// Wires the buses and starts the projections (and command serving).
    pub async fn start(self) -> Result<App> {
        let (Some(transport), Some(read_models)) = (self.transport, self.read_models) else {
            return Err(Error::Config(
                "an app needs a backend: `.backend(transport, read_models)` or `.in_memory()`"
                    .into(),
            ));
        };
        let events = EventBus::from_arc(transport, self.service);
        let commands = self
            .commands
            .into_iter()
            .fold(CommandBus::new(events.clone()), |bus, add| add(bus));
        let queries = self
            .queries
            .into_iter()
            .fold(QueryBus::new().resource(read_models.clone()), |bus, add| {
                add(bus)
            });
        let mut projections = Vec::new();
        for projection in self.projections {
            projections.push(
                ProjectionRunner::from_arc(&events, &read_models, projection)
                    .start()
                    .await?,
            );
        }
        let serving = if self.serve_commands {
            Some(
                crate::cqrs::CommandServer::new(commands.clone())
                    .start()
                    .await?,
            )
        } else {
            None
        };
        Ok(App {
            events,
            commands,
            queries,
            read_models,
            projections,
            serving,
        })
    }
}

/// A running service: dispatch commands, answer queries, keep read models current.
///
/// ```
/// use eventbus_core::{command, command_handler, event, projection, query, query_handler};
/// use eventbus_core::{App, BoxError, ReadModel, ReadModels};
///
/// #[event]
/// #[derive(Debug, Clone)]
/// pub struct OrderCreated { pub order_id: String, pub total: f64 }
///
/// #[command(output = OrderCreated)]
/// pub struct CreateOrder { pub total: f64 }
///
/// #[command_handler]
/// async fn create_order(cmd: CreateOrder, ctx: &eventbus_core::CommandContext)
///     -> Result<OrderCreated, eventbus_core::NoRejection> {
///     Ok(OrderCreated { order_id: ctx.new_id(), total: cmd.total })
/// }
///
/// #[projection(hash = "orders:summary:{order_id}")]
/// #[derive(Debug)]
/// pub struct OrderSummary {
///     #[set(from = OrderCreated)] pub order_id: String,
///     #[set(from = OrderCreated)] pub total: f64,
/// }
///
/// #[query(output = Option<OrderSummary>)]
/// pub struct GetOrder { pub order_id: String }
///
/// #[query_handler]
/// async fn get_order(q: GetOrder, models: &ReadModels) -> Result<Option<OrderSummary>, BoxError> {
///     Ok(OrderSummary::load(models, &q.order_id).await?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder("order-service")
///     .in_memory()
///     .command(create_order)
///     .projection(OrderSummary::projection())
///     .query(get_order)
///     .start()
///     .await?;
/// let created = app.dispatch(CreateOrder { total: 12.5 }).await?;
/// let summary = app.query_eventually(|| GetOrder { order_id: created.order_id.clone() }).await?;
/// assert_eq!(summary.map(|s| s.total), Some(12.5));
/// app.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct App {
    events: EventBus,
    commands: CommandBus,
    queries: QueryBus,
    read_models: ReadModels,
    projections: Vec<RunningProjection>,
    serving: Option<Subscription>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.events.service())
            .finish()
    }
}

impl App {
    /// Starts building the app of `service`.
    pub fn builder(service: impl Into<String>) -> AppBuilder {
        AppBuilder {
            service: service.into(),
            transport: None,
            read_models: None,
            commands: Vec::new(),
            queries: Vec::new(),
            projections: Vec::new(),
            serve_commands: false,
        }
    }

    /// Dispatches a command (see [`CommandBus::dispatch`]).
    pub async fn dispatch<C: Command>(
        &self,
        command: C,
    ) -> std::result::Result<C::Output, CommandError<C::Error>> {
        self.commands.dispatch(command).await
    }

    /// Answers a query (see [`QueryBus::query`]).
    pub async fn query<Q: Query>(&self, query: Q) -> std::result::Result<Q::Output, QueryError> {
        self.queries.query(query).await
    }

    /// Answers a query once the read models reflect it: asks again (for up to 5 s) while the
    /// answer is `None`. Read models are eventually consistent; this is for a caller that
    /// just dispatched the command that creates what it asks for.
    pub async fn query_eventually<Q, T>(
        &self,
        query: impl Fn() -> Q,
    ) -> std::result::Result<Option<T>, QueryError>
    where
        Q: Query<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let answer = self.queries.query(query()).await?;
            if answer.is_some() || tokio::time::Instant::now() >= deadline {
                return Ok(answer);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The command bus.
    pub fn commands(&self) -> &CommandBus {
        &self.commands
    }

    /// The read models.
    pub fn read_models(&self) -> &ReadModels {
        &self.read_models
    }

    /// The running projections.
    pub fn projections(&self) -> &[RunningProjection] {
        &self.projections
    }

    /// Stops serving commands and the projections (draining in-flight work).
    pub async fn shutdown(self) -> Result<()> {
        if let Some(serving) = self.serving {
            serving.shutdown().await?;
        }
        for projection in self.projections {
            projection.shutdown().await?;
        }
        Ok(())
    }
}
