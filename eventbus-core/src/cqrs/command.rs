//! The command bus: typed commands, one handler each, events published on success.

use crate::telemetry;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tracing::Instrument;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::bus::EventBus;
use crate::cqrs::emit::Emit;
use crate::envelope::{new_id, EntryId, Envelope};
use crate::error::Error;
use crate::handler::{bind_here, Bound, Handler, Resources};

/// A request to change state, named in the imperative (`CreateOrder`). Its handler either
/// rejects it (`Err(Self::Error)`, nothing published) or accepts it, returning
/// `Self::Output` whose events ([`Emit`]) are published.
///
/// Declare it with `#[command(output = OrderCreated, error = OrderError)]`, or by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command",
    note = "add `#[eventbus_core::command(output = ..., error = ...)]` to the type, or implement `eventbus_core::Command` by hand"
)]
pub trait Command: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The command's name (for routing, logs and remote dispatch).
    const COMMAND_TYPE: &'static str;
    /// What a successful handling returns to the caller; its events get published.
    /// Serializable, so that a remote caller gets it back too.
    type Output: Emit + Serialize + DeserializeOwned + Send + 'static;
    /// The business rejection (serializable, for remote callers); [`NoRejection`] for a
    /// command that is never rejected.
    type Error: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static;
}

/// The rejection of a command that is never rejected (it has no values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, thiserror::Error)]
pub enum NoRejection {}

/// What a command handler knows about the command it handles.
#[derive(Clone, Debug)]
pub struct CommandContext {
    command_id: String,
    correlation_id: String,
    causation_id: Option<String>,
    service: Arc<str>,
    resources: Resources,
}

impl CommandContext {
    /// The command's unique id; the published events name it as their cause.
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// The flow's correlation id (the caller's, or the command id for a new flow).
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// What caused the command, when the caller said.
    pub fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }

    /// The handling service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A fresh unique, time-ordered id (for new entities).
    pub fn new_id(&self) -> String {
        new_id()
    }

    /// A shared resource registered with the bus.
    pub fn resource<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.resources.get::<T>()
    }
}

crate::handler::context_extractor!(CommandContext);

impl<C: Command> crate::handler::Message<CommandContext> for C {
    type Raw = C;
    type Output = Result<C::Output, C::Error>;

    fn from_raw(raw: C) -> Result<Self, Self::Output> {
        Ok(raw)
    }
}

/// A type whose methods handle several commands (an impl block under `#[command_handler]`),
/// registered all at once with [`CommandBus::handlers`].
pub trait CommandHandlers: Send + Sync + 'static {
    /// Registers every handler of `self` on `bus`.
    fn register(self: Arc<Self>, bus: CommandBus) -> CommandBus;
}

/// Why a dispatch did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The handler rejected the command (a business rule); nothing was published.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// No handler is registered for the command: a wiring mistake.
    #[error("no handler for command `{command_type}`")]
    NoHandler {
        /// The command's name.
        command_type: String,
    },
    /// The handler accepted the command but its events could not be published (or encoded).
    /// Whether a retry is safe depends on the handler's side effects; see
    /// [`Error::is_retryable`].
    #[error("command accepted but its events were not published: {0}")]
    Publish(#[source] Error),
    /// An aggregate command kept conflicting with concurrent writers: every one of
    /// `attempts` tries found the aggregate changed between loading and appending. Nothing
    /// of this command was stored or published; retrying the whole dispatch later is safe.
    #[error("command gave up after {attempts} concurrency conflicts: {source}")]
    Conflict {
        /// How many times the command was decided and its append refused.
        attempts: u32,
        /// The last [`Error::Conflict`].
        #[source]
        source: Error,
    },
    /// The event store failed to load the aggregate or to append its events (nothing was
    /// stored nor published: appends are atomic). See [`Error::is_retryable`].
    #[error("event store failed: {0}")]
    Store(#[source] Error),
    /// The handler panicked; nothing was published.
    #[error("command handler panicked: {0}")]
    Panicked(String),
    /// A remote command got no reply in time. It may still be handled: make retries
    /// idempotent (the command id is stable per send).
    #[error("no reply to command within {0:?}")]
    Timeout(std::time::Duration),
    /// A remote command could not be sent.
    #[error("command could not be sent: {0}")]
    Send(#[source] Error),
    /// The remote service failed to handle the command (its handler panicked, its events
    /// could not be published, it could not decode the command, or the command expired).
    #[error("remote command failed: {0}")]
    Remote(String),
}

impl<E> CommandError<E> {
    /// The rejection, if the handler rejected the command.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// Options of one dispatch.
#[derive(Debug, Clone, Default)]
pub struct DispatchOptions {
    /// Continue this flow (default: a new flow correlated by the command id).
    pub correlation_id: Option<String>,
    /// What caused the command.
    pub causation_id: Option<String>,
    /// The command's id (default: a new one). Remote commands keep the sender's id.
    pub command_id: Option<String>,
}

/// Where one published event landed: its type's stream and its entry id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The event type (the stream).
    pub event_type: String,
    /// The entry id in that stream.
    pub entry_id: EntryId,
}

impl Position {
    /// Pairs published events with the entry ids their publish returned.
    pub(crate) fn of(events: &[Envelope<Value>], ids: Vec<EntryId>) -> Vec<Position> {
        events
            .iter()
            .zip(ids)
            .map(|(event, entry_id)| Position {
                event_type: event.event_type.clone(),
                entry_id,
            })
            .collect()
    }
}

/// What a dispatch wrote: the positions of the events it published. Hand it to
/// [`App::query_after`](crate::App::query_after) to read your own writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The published events' positions, in order.
    pub positions: Vec<Position>,
}

impl Receipt {
    /// Whether the dispatch published nothing (a query after it needs no wait).
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// What a successful dispatch returns besides the output: the published events' positions.
#[derive(Debug, Clone)]
pub struct Dispatched<T> {
    /// The handler's output.
    pub output: T,
    /// The command's id (the events' causation id).
    pub command_id: String,
    /// Where the published events landed (for read-your-writes).
    pub receipt: Receipt,
}

impl<T> std::ops::Deref for Dispatched<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.output
    }
}

impl<T> Dispatched<T> {
    /// The handler's output.
    pub fn into_output(self) -> T {
        self.output
    }

    /// Entry ids of the published events, in order.
    pub fn entry_ids(&self) -> impl Iterator<Item = &EntryId> {
        self.receipt.positions.iter().map(|p| &p.entry_id)
    }

    fn new(output: T, command_id: String, positions: Vec<Position>) -> Self {
        Dispatched {
            output,
            command_id,
            receipt: Receipt { positions },
        }
    }
}

type Erased = Arc<dyn std::any::Any + Send + Sync>;

/// Dispatches commands to their handlers and publishes the resulting events.
///
/// ```
/// use eventbus_core::{command, event, CommandBus, CommandContext, EventBus};
/// use eventbus_core::transport::memory::MemoryTransport;
///
/// #[event]
/// #[derive(Debug)]
/// pub struct OrderCreated { pub order_id: String }
///
/// #[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
/// pub enum OrderError { #[error("no items")] Empty }
///
/// #[command(output = OrderCreated, error = OrderError)]
/// pub struct CreateOrder { pub items: Vec<String> }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let commands = CommandBus::new(EventBus::new(MemoryTransport::new(), "orders"))
///     .handle(|cmd: CreateOrder, ctx: CommandContext| async move {
///         if cmd.items.is_empty() {
///             return Err(OrderError::Empty);
///         }
///         Ok(OrderCreated { order_id: ctx.new_id() })
///     });
/// let created = commands.dispatch(CreateOrder { items: vec!["book".into()] }).await.unwrap();
/// assert!(!created.order_id.is_empty());
/// assert!(commands.dispatch(CreateOrder { items: vec![] }).await.unwrap_err().rejection().is_some());
/// # }
/// ```
#[derive(Clone)]
pub struct CommandBus {
    events: EventBus,
    handlers: Arc<HashMap<&'static str, Erased>>,
    remote: Arc<HashMap<&'static str, RemoteInvoker>>,
    resources: Resources,
}

impl fmt::Debug for CommandBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("CommandBus")
            .field("service", &self.events.service())
            .field("commands", &names)
            .finish()
    }
}

/// The stored form of a handler of `C`: a plain handler whose events the bus publishes, or
/// an aggregate's, whose events the event store appends and publishes.
enum Slot<C: Command> {
    Handler(Bound<CommandContext, C>),
    Aggregate(Arc<dyn AggregateDispatch<C>>),
}

/// What an aggregate dispatch returns: the output and the events' entry ids.
pub(crate) type AggregateOutcome<C> =
    Result<(<C as Command>::Output, Vec<Position>), CommandError<<C as Command>::Error>>;

/// Loads an aggregate, decides, appends (with retries): the whole handling of an aggregate
/// command.
pub(crate) trait AggregateDispatch<C: Command>: Send + Sync + 'static {
    fn dispatch(&self, command: C, ctx: CommandContext) -> BoxFuture<'_, AggregateOutcome<C>>;
}

impl CommandBus {
    /// A command bus publishing through `events` (whose service name stamps the events).
    pub fn new(events: EventBus) -> Self {
        CommandBus {
            events,
            handlers: Arc::new(HashMap::new()),
            remote: Arc::new(HashMap::new()),
            resources: Resources::default(),
        }
    }

    /// Registers the handler of a command: an async fn or closure taking the command, then
    /// extractors (`CommandContext`, `State<T>`; see [`Handler`]), and returning
    /// `Result<C::Output, C::Error>`.
    ///
    /// # Panics
    ///
    /// When the command already has a handler (one command, one handler), or when the
    /// handler takes a `State<T>` not registered before it (`.resource`): wiring mistakes.
    #[track_caller]
    pub fn handle<Args, H>(self, handler: H) -> Self
    where
        H: Handler<CommandContext, Args>,
        H::Message: Command,
    {
        let bound = bind_here(handler, &self.resources);
        self.handle_bound(bound)
    }

    /// Registers an already bound handler of `C`.
    #[track_caller]
    pub(crate) fn handle_bound<C: Command>(self, bound: Bound<CommandContext, C>) -> Self {
        self.insert_slot(Slot::<C>::Handler(bound))
    }

    /// Registers an aggregate's handling of `C` (see `CommandBus::handle_aggregate`).
    #[track_caller]
    pub(crate) fn insert_aggregate<C: Command>(self, d: Arc<dyn AggregateDispatch<C>>) -> Self {
        self.insert_slot(Slot::<C>::Aggregate(d))
    }

    #[track_caller]
    fn insert_slot<C: Command>(mut self, slot: Slot<C>) -> Self {
        let slot: Erased = Arc::new(slot);
        let handlers = Arc::make_mut(&mut self.handlers);
        if handlers.insert(C::COMMAND_TYPE, slot).is_some() {
            panic!(
                "command `{}` already has a handler: one command, one handler",
                C::COMMAND_TYPE
            );
        }
        Arc::make_mut(&mut self.remote).insert(C::COMMAND_TYPE, invoker::<C>());
        self
    }

    /// Registers every command handler of a service type (see [`CommandHandlers`]).
    #[track_caller]
    pub fn handlers<T: CommandHandlers>(self, service: Arc<T>) -> Self {
        service.register(self)
    }

    /// Registers a shared resource: handlers registered after it take it as
    /// [`State<T>`](crate::State) (or reach it with [`CommandContext::resource`]).
    pub fn resource<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// The resources handlers are bound against (the app's).
    pub(crate) fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// The commands that have a handler.
    pub(crate) fn command_types(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    /// The event bus events are published on.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    pub(crate) fn remote_invoker(&self, command_type: &str) -> Option<RemoteInvoker> {
        self.remote.get(command_type).cloned()
    }

    /// Whether `C` has a handler.
    pub fn handles<C: Command>(&self) -> bool {
        self.handlers.contains_key(C::COMMAND_TYPE)
    }

    /// Dispatches a command in a new flow; returns the handler's output after its events are
    /// published.
    pub async fn dispatch<C: Command>(
        &self,
        command: C,
    ) -> Result<C::Output, CommandError<C::Error>> {
        self.dispatch_with(command, DispatchOptions::default())
            .await
            .map(|d| d.output)
    }

    /// Dispatches with explicit correlation/causation; returns the output with the command id
    /// and the events' entry ids.
    ///
    /// The dispatch runs in a span (`command {type}`) and in the trace context of the
    /// caller (a child of it, or a new trace): the events it publishes carry it.
    pub async fn dispatch_with<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
    ) -> Result<Dispatched<C::Output>, CommandError<C::Error>> {
        let context = telemetry::context::current()
            .map_or_else(telemetry::TraceContext::new_root, |c| c.child());
        let span = telemetry::spans::internal("command", C::COMMAND_TYPE);
        span.record("trace_id", context.trace_id_hex().as_str());
        let started = std::time::Instant::now();
        let result = telemetry::context::scope(context, self.dispatch_in_span(command, options))
            .instrument(span)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(_) => "error",
        };
        telemetry::metrics::command(C::COMMAND_TYPE, outcome, started.elapsed());
        result
    }

    async fn dispatch_in_span<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
    ) -> Result<Dispatched<C::Output>, CommandError<C::Error>> {
        let Some(slot) = self
            .handlers
            .get(C::COMMAND_TYPE)
            .and_then(|s| s.downcast_ref::<Slot<C>>())
        else {
            return Err(CommandError::NoHandler {
                command_type: C::COMMAND_TYPE.to_string(),
            });
        };
        let command_id = options.command_id.unwrap_or_else(new_id);
        let ctx = CommandContext {
            correlation_id: options.correlation_id.unwrap_or_else(|| command_id.clone()),
            causation_id: options.causation_id,
            command_id,
            service: self.events.service().into(),
            resources: self.resources.clone(),
        };
        let handler = match slot {
            Slot::Handler(handler) => handler.clone(),
            Slot::Aggregate(aggregate) => {
                let command_id = ctx.command_id.clone();
                let (output, positions) = aggregate.dispatch(command, ctx).await?;
                return Ok(Dispatched::new(output, command_id, positions));
            }
        };
        let output = match crate::panic::catch(|| handler.call(command, ctx.clone())).await {
            Ok(Ok(output)) => output,
            Ok(Err(rejection)) => return Err(CommandError::Rejected(rejection)),
            Err(panic) => return Err(CommandError::Panicked(panic)),
        };
        let mut events = Vec::new();
        output
            .emit(self.events.service(), &mut events)
            .map_err(CommandError::Publish)?;
        for event in &mut events {
            event.correlation_id = Some(ctx.correlation_id.clone());
            event.causation_id = Some(ctx.command_id.clone());
        }
        let entry_ids = self
            .events
            .publish_raw(&events)
            .await
            .map_err(CommandError::Publish)?;
        Ok(Dispatched::new(
            output,
            ctx.command_id,
            Position::of(&events, entry_ids),
        ))
    }
}

/// Runs a serialized command of one type on a command bus: what a
/// [`CommandServer`](crate::CommandServer) does with each entry of its command stream.
pub(crate) type RemoteInvoker = Arc<
    dyn Fn(CommandBus, Arc<Envelope<serde_json::Value>>) -> BoxFuture<'static, RemoteOutcome>
        + Send
        + Sync,
>;

/// How a serialized command ended, serialized (the command server puts it on the wire).
pub(crate) enum RemoteOutcome {
    /// Handled; the output.
    Handled(serde_json::Value),
    /// Rejected by its handler; the rejection's message and the rejection.
    Rejected {
        message: String,
        error: serde_json::Value,
    },
    /// No handler of this command type.
    NoHandler,
    /// Not decoded, not handled or not encoded; why.
    Failed(String),
}

/// The invoker of commands of type `C`.
fn invoker<C: Command>() -> RemoteInvoker {
    Arc::new(
        |bus: CommandBus, envelope: Arc<Envelope<serde_json::Value>>| {
            Box::pin(async move {
                let command: C = match <C as serde::Deserialize>::deserialize(&envelope.data) {
                    Ok(c) => c,
                    Err(e) => {
                        let why = format!("cannot decode command `{}`: {e}", C::COMMAND_TYPE);
                        return RemoteOutcome::Failed(why);
                    }
                };
                let options = DispatchOptions {
                    correlation_id: envelope.correlation_id.clone(),
                    causation_id: envelope.causation_id.clone(),
                    command_id: Some(envelope.event_id.clone()),
                };
                match bus.dispatch_with(command, options).await {
                    Ok(done) => match serde_json::to_value(&done.output) {
                        Ok(output) => RemoteOutcome::Handled(output),
                        Err(e) => RemoteOutcome::Failed(format!("cannot encode the output: {e}")),
                    },
                    Err(CommandError::Rejected(rejection)) => RemoteOutcome::Rejected {
                        message: rejection.to_string(),
                        error: serde_json::to_value(&rejection).unwrap_or(serde_json::Value::Null),
                    },
                    Err(CommandError::NoHandler { .. }) => RemoteOutcome::NoHandler,
                    Err(other) => RemoteOutcome::Failed(other.to_string()),
                }
            })
        },
    )
}
