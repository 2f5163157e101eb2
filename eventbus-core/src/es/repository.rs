//! [`Repository`]: loads aggregates (snapshot + later events) and runs their commands with
//! optimistic concurrency and retries.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::cqrs::{
    AggregateDispatch, AggregateOutcome, Command, CommandBus, CommandContext, CommandError, Emit,
    Position,
};
use crate::envelope::{now_seconds, Envelope};
use crate::error::{Error, Result};
use crate::es::aggregate::{Aggregate, AggregateCommand, AggregateHandler, AggregateHandlers};
use crate::es::store::{EventStore, Snapshot};

/// Default number of retries after a concurrency conflict.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default number of events one read of a stream returns while loading.
pub const DEFAULT_PAGE_SIZE: usize = 256;

/// Metadata key naming the aggregate type on events appended by a repository.
pub const META_AGGREGATE_TYPE: &str = "aggregate_type";
pub use crate::envelope::META_AGGREGATE_ID;
/// Metadata key holding the aggregate version an event produced.
pub const META_AGGREGATE_VERSION: &str = "aggregate_version";

/// An aggregate's state with the version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The version of the last event applied (0: no events).
    pub version: u64,
    /// The snapshot version loading started from, if a snapshot was used.
    pub from_snapshot: Option<u64>,
}

/// Loads and saves aggregates of type `A` through an [`EventStore`].
///
/// Cheap to clone. Register it on a command bus with [`CommandBus::aggregate`] (all handlers
/// of an aggregate written with `#[command_handler(aggregate)]`) or
/// [`CommandBus::handle_aggregate`] (one handler).
///
/// # Example
///
/// A counter that snapshots every second event: loading starts from the newest snapshot.
///
/// ```
/// use std::sync::Arc;
/// use eventbus_core::es::{MemoryEventStore, Repository};
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::{aggregate, command, command_handler, event, CommandBus, EventBus, NoRejection};
///
/// #[event]
/// pub struct Incremented { pub by: u64 }
///
/// #[command(output = Incremented)]
/// pub struct Increment { #[aggregate_id] pub counter: String, pub by: u64 }
///
/// #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
/// pub struct Counter { value: u64 }
///
/// #[aggregate(name = "Counter")]
/// impl Counter {
///     #[apply]
///     fn incremented(&mut self, e: Incremented) { self.value += e.by; }
/// }
///
/// #[command_handler(aggregate)]
/// impl Counter {
///     async fn increment(&self, cmd: Increment) -> Result<Incremented, NoRejection> {
///         Ok(Incremented { by: cmd.by })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = MemoryTransport::new();
/// let store = Arc::new(MemoryEventStore::new(transport.clone()));
/// let counters = Repository::<Counter>::new(store).snapshot_every(2);
/// let bus = CommandBus::new(EventBus::new(transport, "counting")).aggregate(counters.clone());
/// for by in [1, 2, 3] {
///     bus.dispatch(Increment { counter: "c1".into(), by }).await?;
/// }
///
/// // The snapshot at version 2, then the third event …
/// let loaded = counters.load("c1").await?;
/// assert_eq!((loaded.state.value, loaded.version, loaded.from_snapshot), (6, 3, Some(2)));
/// // … which is what replaying every event gives.
/// assert_eq!(counters.replay("c1").await?.state.value, 6);
/// # Ok(())
/// # }
/// ```
pub struct Repository<A> {
    store: Arc<dyn EventStore>,
    snapshot_every: u64,
    max_retries: u32,
    page_size: usize,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            snapshot_every: self.snapshot_every,
            max_retries: self.max_retries,
            page_size: self.page_size,
            _aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &std::any::type_name::<A>())
            .field("store", &self.store.describe())
            .field("snapshot_every", &self.snapshot_every)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`, snapshotting every `A::SNAPSHOT_EVERY` events and retrying
    /// conflicts [`DEFAULT_MAX_RETRIES`] times.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Repository {
            store,
            snapshot_every: A::SNAPSHOT_EVERY,
            max_retries: DEFAULT_MAX_RETRIES,
            page_size: DEFAULT_PAGE_SIZE,
            _aggregate: PhantomData,
        }
    }

    /// Takes a snapshot every `n` events (0: never).
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = n;
        self
    }

    /// How many times a command is decided again after a concurrency conflict before the
    /// dispatch fails with [`CommandError::Conflict`] (0: never retried).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// How many events one read returns while loading (at least 1).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Loads an instance: its newest snapshot of `A::STATE_VERSION` (others are ignored),
    /// plus the events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let snapshot = self.store.snapshot(A::TYPE, id).await?;
        let start = snapshot
            .filter(|s| s.state_version == A::STATE_VERSION)
            .and_then(|s| match serde_json::from_value::<A>(s.state) {
                Ok(state) => Some((state, s.version)),
                Err(e) => {
                    tracing::warn!(aggregate = A::TYPE, id, error = %e, "unreadable snapshot ignored");
                    None
                }
            });
        match start {
            Some((state, version)) => self.replay_from(id, state, version, Some(version)).await,
            None => self.replay(id).await,
        }
    }

    /// Rebuilds an instance from all its events, ignoring snapshots.
    pub async fn replay(&self, id: &str) -> Result<Loaded<A>> {
        self.replay_from(id, A::default(), 0, None).await
    }

    async fn replay_from(
        &self,
        id: &str,
        mut state: A,
        mut version: u64,
        from_snapshot: Option<u64>,
    ) -> Result<Loaded<A>> {
        loop {
            let page = self
                .store
                .read(A::TYPE, id, version, self.page_size)
                .await?;
            let full = page.len() == self.page_size;
            for stored in page {
                if stored.version != version + 1 {
                    return Err(Error::Decode {
                        event_type: stored.event.event_type,
                        reason: format!(
                            "aggregate `{}` `{id}`: found version {} after version {version}",
                            A::TYPE,
                            stored.version
                        ),
                    });
                }
                state.apply(&stored.event)?;
                version = stored.version;
            }
            if !full {
                return Ok(Loaded {
                    state,
                    version,
                    from_snapshot,
                });
            }
        }
    }

    /// Stores a snapshot of `state` at `version`.
    pub async fn save_snapshot(&self, id: &str, state: &A, version: u64) -> Result<()> {
        let state = serde_json::to_value(state).map_err(|source| Error::Serialize {
            event_type: format!("{} snapshot", A::TYPE),
            source,
        })?;
        let snapshot = Snapshot {
            version,
            state_version: A::STATE_VERSION,
            state,
            taken_at: now_seconds(),
        };
        self.store.save_snapshot(A::TYPE, id, &snapshot).await
    }

    /// Load, decide, append; reload and decide again on a conflict.
    async fn execute<C, H>(
        &self,
        handler: &H,
        command: C,
        ctx: CommandContext,
    ) -> AggregateOutcome<C>
    where
        C: AggregateCommand,
        H: AggregateHandler<A, C>,
    {
        let id = command.aggregate_id();
        // A retry decides on the same command again: keep its JSON to rebuild it.
        let copy = if self.max_retries > 0 {
            Some(
                serde_json::to_value(&command)
                    .map_err(|source| CommandError::Store(serialize_command::<C>(source)))?,
            )
        } else {
            None
        };
        let mut command = Some(command);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let loaded = self.load(&id).await.map_err(CommandError::Store)?;
            let command = match (command.take(), &copy) {
                (Some(c), _) => c,
                (None, Some(json)) => serde_json::from_value::<C>(json.clone())
                    .map_err(|e| CommandError::Store(serialize_command::<C>(e)))?,
                (None, None) => return Err(CommandError::Store(Error::Shutdown)),
            };
            let output =
                match crate::panic::catch(|| handler.handle(&loaded.state, command, &ctx)).await {
                    Ok(Ok(output)) => output,
                    Ok(Err(rejection)) => return Err(CommandError::Rejected(rejection)),
                    Err(panic) => return Err(CommandError::Panicked(panic)),
                };
            let mut events = Vec::new();
            output
                .emit(ctx.service(), &mut events)
                .map_err(CommandError::Publish)?;
            if events.is_empty() {
                return Ok((output, Vec::new()));
            }
            stamp(&mut events, &ctx, A::TYPE, &id, loaded.version);
            crate::telemetry::context::stamp_all(events.iter_mut().map(|e| &mut e.metadata));
            let span = crate::telemetry::spans::internal("append", A::TYPE);
            match self
                .store
                .append(A::TYPE, &id, loaded.version, &events)
                .instrument(span)
                .await
            {
                Ok(ids) => {
                    self.maybe_snapshot(&id, loaded, &events).await;
                    return Ok((output, Position::of(&events, ids)));
                }
                Err(e) if e.is_conflict() && attempt <= self.max_retries => {
                    tracing::debug!(aggregate = A::TYPE, id, attempt, "conflict; reloading");
                    tokio::time::sleep(jitter(attempt)).await;
                }
                Err(e) if e.is_conflict() => {
                    return Err(CommandError::Conflict {
                        attempts: attempt,
                        source: e,
                    })
                }
                Err(e) => return Err(CommandError::Store(e)),
            }
        }
    }

    /// Snapshots when the append crossed a multiple of `snapshot_every`. A failure is
    /// logged, not returned: the events are committed, and the next load replays them.
    async fn maybe_snapshot(&self, id: &str, loaded: Loaded<A>, events: &[Envelope<Value>]) {
        let n = self.snapshot_every;
        let new_version = loaded.version + events.len() as u64;
        if n == 0 || new_version / n == loaded.version / n {
            return;
        }
        let mut state = loaded.state;
        let outcome = match events.iter().try_for_each(|e| state.apply(e)) {
            Ok(()) => self.save_snapshot(id, &state, new_version).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(aggregate = A::TYPE, id, error = %e, "snapshot not saved");
        }
    }
}

fn serialize_command<C: Command>(source: serde_json::Error) -> Error {
    Error::Serialize {
        event_type: format!("command {}", C::COMMAND_TYPE),
        source,
    }
}

/// Correlation, causation and the aggregate's coordinates on each new event.
fn stamp(events: &mut [Envelope<Value>], ctx: &CommandContext, ty: &str, id: &str, version: u64) {
    for (offset, event) in (1u64..).zip(events.iter_mut()) {
        event.correlation_id = Some(ctx.correlation_id().to_owned());
        event.causation_id = Some(ctx.command_id().to_owned());
        event.metadata.insert(META_AGGREGATE_TYPE.into(), ty.into());
        event.metadata.insert(META_AGGREGATE_ID.into(), id.into());
        event
            .metadata
            .insert(META_AGGREGATE_VERSION.into(), (version + offset).into());
    }
}

/// A short random pause before retrying, growing with the attempt (at most ~20 ms), so that
/// writers that keep colliding spread out.
fn jitter(attempt: u32) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let ceiling = u64::from(attempt.min(20)) * 1_000;
    Duration::from_micros(random % ceiling.max(1))
}

/// A handler bound to its repository: what the command bus stores for an aggregate command.
struct Bound<A, H> {
    repository: Repository<A>,
    handler: H,
}

impl<A, C, H> AggregateDispatch<C> for Bound<A, H>
where
    A: Aggregate,
    C: AggregateCommand,
    H: AggregateHandler<A, C>,
{
    fn dispatch(
        &self,
        command: C,
        ctx: CommandContext,
    ) -> BoxFuture<'_, std::result::Result<(C::Output, Vec<Position>), CommandError<C::Error>>>
    {
        Box::pin(self.repository.execute(&self.handler, command, ctx))
    }
}

impl CommandBus {
    /// Registers `handler` as the handler of `C` on aggregate `A`: a dispatch loads the
    /// aggregate named by [`AggregateCommand::aggregate_id`] from `repository`, decides, and
    /// appends the output's events with optimistic concurrency (the store publishes them);
    /// on a conflict it reloads and decides again, up to the repository's `max_retries`.
    ///
    /// # Panics
    ///
    /// When `C` already has a handler.
    #[track_caller]
    pub fn handle_aggregate<A, C>(
        self,
        repository: Repository<A>,
        handler: impl AggregateHandler<A, C>,
    ) -> Self
    where
        A: Aggregate,
        C: AggregateCommand,
    {
        self.insert_aggregate::<C>(Arc::new(Bound {
            repository,
            handler,
        }))
    }

    /// Registers every command handler of aggregate `A` (its `#[command_handler(aggregate)]`
    /// impl block), loading and appending through `repository`.
    #[track_caller]
    pub fn aggregate<A: AggregateHandlers>(self, repository: Repository<A>) -> Self {
        A::register(self, &repository)
    }
}
