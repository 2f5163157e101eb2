//! [`AppBuilder`]: everything one service registers, in one place.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::app::backend::{Backend, Connected, InMemory};
use crate::app::consistency::Watched;
use crate::app::App;
use crate::bus::handler::erase;
use crate::bus::EventMessage;
use crate::bus::{group_for_service, Context, EventBus, SubscriptionBuilder};
use crate::cqrs::{CommandBus, CommandContext, CommandServer, QueryBus, QueryContext};
use crate::error::{Error, HandlerError, Result};
use crate::es::{AggregateHandlers, MemoryEventStore, Repository};
use crate::event::Event;
use crate::handler::{Handler, Message, Resources, Unbound};
use crate::projection::{Projection, ProjectionRunner, ReadModels};
use crate::router::Router;
use crate::saga::{Confirmation, Participant, Reply, SagaContext, SagaCoordinator, SagaDefinition};
use crate::telemetry::lag::LagSampler;
use crate::transport::memory::MemoryTransport;
use crate::transport::Topic;

/// One registration, applied when the app starts.
type Wire = Box<dyn FnOnce(&mut Wiring) -> std::result::Result<(), String> + Send>;

/// The parts registrations are applied to.
pub(crate) struct Wiring {
    resources: Resources,
    connected: Connected,
    commands: CommandBus,
    queries: QueryBus,
    handlers: Option<SubscriptionBuilder>,
    events: EventBus,
}

impl Wiring {
    fn handlers(&mut self) -> SubscriptionBuilder {
        self.handlers
            .take()
            .unwrap_or_else(|| self.events.subscribe().resources(self.resources.clone()))
    }
}

/// Builds an [`App`]; see [`App::builder`].
///
/// ```
/// use eventbus_core::prelude::*;
///
/// #[event]
/// #[derive(Debug, Clone)]
/// pub struct Pinged { pub n: u32 }
///
/// #[command(output = Pinged)]
/// pub struct Ping { pub n: u32 }
///
/// #[command_handler]
/// async fn ping(cmd: Ping) -> Result<Pinged, NoRejection> {
///     Ok(Pinged { n: cmd.n })
/// }
///
/// struct Log(std::sync::Mutex<Vec<u32>>);
///
/// async fn record(event: Pinged, log: State<Log>) -> Result<(), HandlerError> {
///     log.0.lock().map_err(|e| HandlerError::permanent(e.to_string()))?.push(event.n);
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder("pinger")
///     .in_memory()
///     .command(ping)
///     .on(record) // takes `State<Log>`: registered below, bound when the app starts
///     .state(Log(std::sync::Mutex::new(Vec::new())))
///     .start()
///     .await?;
/// app.dispatch(Ping { n: 7 }).await?;
/// app.shutdown().await?; // stops intake, drains the handlers in flight, acks
/// # Ok(()) }
/// ```
///
/// Registrations are checked when they are made: a second handler for one command or
/// query panics at the caller's line. Handlers are bound to their [`State`](crate::State)
/// when the app starts (so `.state` may come before or after them); a `State<T>` never
/// registered fails [`start`](Self::start) with an error naming the line that registered
/// the handler.
pub struct AppBuilder {
    service: String,
    backend: Option<Box<dyn Backend>>,
    read_model_prefix: String,
    resources: Resources,
    wires: Vec<Wire>,
    commands: HashSet<&'static str>,
    queries: HashSet<&'static str>,
    projections: Vec<Arc<dyn Projection>>,
    sagas: Vec<SagaDefinition>,
    participant: Option<Participant>,
    serve_commands: bool,
    read_your_writes_timeout: Duration,
    lag_interval: Option<Duration>,
    #[cfg(feature = "prometheus")]
    metrics_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut commands: Vec<_> = self.commands.iter().collect();
        commands.sort();
        let mut queries: Vec<_> = self.queries.iter().collect();
        queries.sort();
        f.debug_struct("AppBuilder")
            .field("service", &self.service)
            .field("commands", &commands)
            .field("queries", &queries)
            .field(
                "projections",
                &self
                    .projections
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AppBuilder {
    pub(crate) fn new(service: String) -> Self {
        AppBuilder {
            service,
            backend: None,
            read_model_prefix: String::new(),
            resources: Resources::default(),
            wires: Vec::new(),
            commands: HashSet::new(),
            queries: HashSet::new(),
            projections: Vec::new(),
            sagas: Vec::new(),
            participant: None,
            serve_commands: false,
            read_your_writes_timeout: Duration::from_secs(5),
            lag_interval: None,
            #[cfg(feature = "prometheus")]
            metrics_addr: None,
        }
    }

    /// The backend the app runs on, connected when it starts (eventbus-redis adds
    /// `.redis(url or transport)`).
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(Box::new(backend));
        self
    }

    /// The in-memory backend (tests and demos).
    pub fn in_memory(self) -> Self {
        self.backend(InMemory::new())
    }

    /// Puts `prefix` in front of every read-model key (none by default, so keys are the
    /// projections' templates, as the reference article's services expect).
    pub fn read_model_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.read_model_prefix = prefix.into();
        self
    }

    /// Registers a shared resource handlers take as [`State<T>`](crate::State). The app
    /// registers its [`ReadModels`] and [`EventBus`] itself.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// Registers a resource already shared (an `Arc<T>` the caller keeps too), taken as
    /// [`State<T>`](crate::State).
    pub fn state_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.resources.insert_arc(value);
        self
    }

    /// Registers the handler of a command: an async fn or closure taking the command, then
    /// extractors (`CommandContext`, `State<T>`).
    ///
    /// # Panics
    ///
    /// When the command already has a handler.
    #[track_caller]
    pub fn command<Args, H>(mut self, handler: H) -> Self
    where
        H: Handler<CommandContext, Args>,
        H::Message: crate::Command,
    {
        let name = <H::Message as crate::Command>::COMMAND_TYPE;
        if !self.commands.insert(name) {
            panic!("command `{name}` already has a handler: one command, one handler");
        }
        let unbound = Unbound::new(handler);
        self.wire(move |w| {
            let bound = unbound.bind(&w.resources)?;
            w.commands = w.commands.clone().handle_bound(bound);
            Ok(())
        })
    }

    /// Registers the command handlers of an event-sourced aggregate (its
    /// `#[command_handler(aggregate)]` impl block), loaded from and appended to the
    /// backend's event store through a [`Repository`].
    ///
    /// # Panics
    ///
    /// When one of its commands already has a handler.
    #[track_caller]
    pub fn aggregate<A: AggregateHandlers>(self) -> Self {
        self.aggregate_with::<A>(|repository| repository)
    }

    /// [`aggregate`](Self::aggregate), with the repository configured by `configure`
    /// (snapshots, retries).
    ///
    /// # Panics
    ///
    /// When one of its commands already has a handler.
    #[track_caller]
    pub fn aggregate_with<A: AggregateHandlers>(
        self,
        configure: impl FnOnce(Repository<A>) -> Repository<A> + Send + 'static,
    ) -> Self {
        // Learn the aggregate's commands now, on a scratch bus, to refuse duplicates here.
        let scratch = MemoryTransport::new();
        let probe = A::register(
            CommandBus::new(EventBus::new(scratch.clone(), "probe")),
            &Repository::new(Arc::new(MemoryEventStore::new(scratch))),
        );
        let mut this = self;
        for name in probe.command_types() {
            if !this.commands.insert(name) {
                panic!("command `{name}` already has a handler: one command, one handler");
            }
        }
        this.wire(move |w| {
            let repository = configure(Repository::new(w.connected.event_store.clone()));
            w.commands = A::register(w.commands.clone(), &repository);
            Ok(())
        })
    }

    /// Registers the handler of a query: an async fn or closure taking the query, then
    /// extractors (`QueryContext`, `State<T>`; `State<ReadModels>` reads the projections'
    /// models).
    ///
    /// # Panics
    ///
    /// When the query already has a handler.
    #[track_caller]
    pub fn query<Args, H>(mut self, handler: H) -> Self
    where
        H: Handler<QueryContext, Args>,
        H::Message: crate::Query,
    {
        let name = <H::Message as crate::Query>::QUERY_TYPE;
        if !self.queries.insert(name) {
            panic!("query `{name}` already has a handler");
        }
        let unbound = Unbound::new(handler);
        self.wire(move |w| {
            let bound = unbound.bind(&w.resources)?;
            w.queries = w.queries.clone().handle_bound(bound);
            Ok(())
        })
    }

    /// Runs a projection (its own consumer group) while the app runs.
    ///
    /// # Panics
    ///
    /// When a projection of the same name is already registered.
    #[track_caller]
    pub fn projection(mut self, projection: impl Projection) -> Self {
        if self
            .projections
            .iter()
            .any(|p| p.name() == projection.name())
        {
            panic!("projection `{}` is already registered", projection.name());
        }
        self.projections.push(Arc::new(projection));
        self
    }

    /// Handles events of one type while the app runs: `handler` takes the event `E` or
    /// its `Envelope<E>`, then extractors (`Context`, `State<T>`). Every handler of the app
    /// shares one subscription, in the group `{service}-consumers`.
    #[track_caller]
    pub fn on<Args, H>(self, handler: H) -> Self
    where
        H: Handler<Context, Args>,
        H::Message: EventMessage + Message<Context, Output = std::result::Result<(), HandlerError>>,
    {
        let unbound = Unbound::new(handler);
        self.wire(move |w| {
            let bound = unbound.bind(&w.resources)?;
            let topic = Topic::of_type(<H::Message as EventMessage>::EVENT_TYPE);
            w.handlers = Some(w.handlers().add(topic, erase(bound)));
            Ok(())
        })
    }

    /// Routes events with `router` while the app runs, on the app's subscription (read
    /// from the global stream, with the Streams guarantees).
    pub fn router(self, router: Router) -> Self {
        self.wire(move |w| {
            let handlers = w.handlers();
            w.handlers = Some(handlers.route(&router));
            Ok(())
        })
    }

    /// Runs the saga coordinator for `definition` while the app runs (state in the
    /// backend's saga store). Start sagas with [`App::sagas`].
    pub fn saga<D>(mut self, definition: &SagaDefinition<D>) -> Self {
        self.sagas.push(definition.erased());
        self
    }

    /// Serves one step of `saga` as a participant while the app runs (see
    /// [`Participant::step`]): `execute` handles the step's command `C` and replies with
    /// its success `S` or failure `F`; `compensate` undoes it on the compensation `U`.
    ///
    /// # Panics
    ///
    /// At the caller's line, when `saga` has no step whose command is `C`, or when the
    /// step's events are not `S`, `F`, `U` (and the confirmation `R`).
    #[track_caller]
    pub fn saga_step<D, C, S, F, U, R, E, EFut, K, KFut>(
        mut self,
        saga: &SagaDefinition<D>,
        execute: E,
        compensate: K,
    ) -> Self
    where
        C: Event,
        S: Event,
        F: Event,
        U: Event,
        E: Fn(C, SagaContext) -> EFut + Send + Sync + 'static,
        EFut: Future<Output = std::result::Result<Reply<S, F>, HandlerError>> + Send + 'static,
        K: Fn(U, SagaContext) -> KFut + Send + Sync + 'static,
        KFut: Future<Output = std::result::Result<R, HandlerError>> + Send + 'static,
        R: Confirmation,
    {
        let participant = self
            .participant
            .take()
            .unwrap_or_else(Participant::detached);
        self.participant = Some(participant.step(saga, execute, compensate));
        self
    }

    /// Also serves this service's commands to remote senders
    /// ([`CommandClient`](crate::CommandClient)).
    pub fn serve_commands(mut self) -> Self {
        self.serve_commands = true;
        self
    }

    /// How long [`App::query_after`] waits for the projections (5 s by default).
    pub fn read_your_writes_timeout(mut self, limit: Duration) -> Self {
        self.read_your_writes_timeout = limit;
        self
    }

    /// Samples the lag, pending entries and oldest pending idle time of the app's consumer
    /// groups (`{service}-consumers`, `{service}-commands`, its projections' groups) every
    /// `interval` into the group gauges (see [`LagSampler`]), through the `metrics` facade:
    /// to whatever recorder the process installed. `metrics_addr` (feature `prometheus`)
    /// does it too, every 15 s unless this says otherwise.
    pub fn sample_lag(mut self, interval: Duration) -> Self {
        self.lag_interval = Some(interval);
        self
    }

    /// Serves the process's metrics as `GET /metrics` on `addr` (Prometheus text format; port
    /// 0 picks a free port, see [`App::metrics_addr`]) while the app runs, and samples the
    /// app's consumer groups into the group gauges ([`sample_lag`](Self::sample_lag)).
    /// Installs eventbus's Prometheus recorder unless it is (see
    /// [`telemetry::prometheus`](crate::telemetry::prometheus)).
    ///
    /// ```no_run
    /// # use eventbus_core::prelude::*;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let app = App::builder("billing")
    ///     .in_memory()
    ///     .metrics_addr(([0, 0, 0, 0], 9464))
    ///     .start()
    ///     .await?;
    /// println!("scrape http://{}/metrics", app.metrics_addr().expect("serving"));
    /// app.run().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn metrics_addr(mut self, addr: impl Into<std::net::SocketAddr>) -> Self {
        self.metrics_addr = Some(addr.into());
        self
    }

    fn wire(
        mut self,
        wire: impl FnOnce(&mut Wiring) -> std::result::Result<(), String> + Send + 'static,
    ) -> Self {
        self.wires.push(Box::new(wire));
        self
    }

    /// Connects the backend, binds every handler and starts every part: projections
    /// first, then the event handlers and routers, the saga coordinator and command
    /// serving.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the app has no backend or a handler takes a `State<T>` that
    /// was never registered (the message names the line that registered the handler);
    /// backend errors when it cannot connect or a part cannot start;
    /// [`Error::MetricsListen`] or [`Error::MetricsRecorderTaken`] when the metrics cannot be
    /// served on the `metrics_addr` (feature `prometheus`).
    pub async fn start(self) -> Result<App> {
        let Some(backend) = self.backend else {
            return Err(Error::Config(
                "an app needs a backend: `.in_memory()`, `.backend(...)`, or `.redis(...)` from eventbus-redis".into(),
            ));
        };
        let connected = backend.connect(&self.read_model_prefix).await?;
        // Bound first: a taken address fails the start before any part runs.
        #[cfg(feature = "prometheus")]
        let metrics = match self.metrics_addr {
            // Sampled gauges outlive a few intervals before an idle one leaves the scrape.
            Some(addr) => Some(
                crate::telemetry::prometheus::PrometheusExporter::new(addr)
                    .gauge_idle(
                        self.lag_interval
                            .map_or(Duration::ZERO, |every| every * 4)
                            .max(crate::telemetry::prometheus::DEFAULT_GAUGE_IDLE),
                    )
                    .serve()
                    .await?,
            ),
            None => None,
        };
        let events = EventBus::from_arc(connected.transport.clone(), self.service);
        let read_models = ReadModels::from_arc(connected.read_models.clone());
        let mut resources = self.resources;
        resources.insert(read_models.clone());
        resources.insert(events.clone());
        let mut wiring = Wiring {
            commands: CommandBus::new(events.clone()).resources(resources.clone()),
            queries: QueryBus::new().resources(resources.clone()),
            handlers: None,
            events: events.clone(),
            connected,
            resources,
        };
        for wire in self.wires {
            wire(&mut wiring).map_err(Error::Config)?;
        }
        let mut parts = super::Parts::default();
        for projection in self.projections {
            let runner = ProjectionRunner::from_arc(&events, &read_models, projection);
            parts.watched.push(Watched {
                name: runner.name().to_string(),
                group: runner.group().to_string(),
                topics: runner.topics(),
            });
            parts.projections.push(runner.start().await?);
        }
        if let Some(handlers) = wiring.handlers.take() {
            parts.subscription = Some(handlers.start().await?);
        }
        if !self.sagas.is_empty() {
            let coordinator = self.sagas.iter().fold(
                SagaCoordinator::builder_with(events.clone(), wiring.connected.saga_store.clone()),
                |builder, saga| builder.saga(saga),
            );
            parts.coordinator = Some(coordinator.start().await?);
        }
        if let Some(participant) = self.participant {
            let participant =
                participant.attach(events.clone(), wiring.connected.saga_store.clone());
            parts.participant = Some(participant.start().await?);
        }
        if self.serve_commands {
            parts.serving = Some(CommandServer::new(wiring.commands.clone()).start().await?);
        }
        #[cfg(feature = "prometheus")]
        let lag_interval = self.lag_interval.or(metrics
            .is_some()
            .then_some(crate::telemetry::lag::DEFAULT_INTERVAL));
        #[cfg(not(feature = "prometheus"))]
        let lag_interval = self.lag_interval;
        if let Some(interval) = lag_interval {
            let service = events.service();
            let groups = [group_for_service(service), format!("{service}-commands")]
                .into_iter()
                .chain(parts.watched.iter().map(|w| w.group.clone()));
            parts.lag_sampler = Some(
                LagSampler::new(wiring.connected.transport.clone())
                    .groups(groups)
                    .every(interval)
                    .start(),
            );
        }
        #[cfg(feature = "prometheus")]
        {
            parts.metrics = metrics;
        }
        Ok(App {
            events,
            commands: wiring.commands,
            queries: wiring.queries,
            read_models,
            saga_store: wiring.connected.saga_store,
            parts,
            read_your_writes_timeout: self.read_your_writes_timeout,
        })
    }
}
