//! The query bus: typed queries with typed results, one handler each.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tracing::Instrument;

use crate::error::BoxError;
use crate::handler::{bind_here, Bound, Handler, Resources};

/// A question about state (`GetOrder`), answered from read models.
///
/// Declare it with `#[query(output = Option<OrderSummary>)]`, or by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a query",
    note = "add `#[eventbus_core::query(output = ...)]` to the type, or implement `eventbus_core::Query` by hand"
)]
pub trait Query: Send + 'static {
    /// The query's name (for logs and errors).
    const QUERY_TYPE: &'static str;
    /// The answer.
    type Output: Send + 'static;
}

/// What a query handler can reach: shared resources registered with the bus.
#[derive(Clone, Debug, Default)]
pub struct QueryContext {
    resources: Resources,
}

impl QueryContext {
    /// A shared resource (e.g. the read models handle), if registered.
    pub fn resource<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.resources.get::<T>()
    }

    /// A shared resource that must be registered.
    pub fn require<T: Send + Sync + 'static>(&self) -> Result<&T, QueryError> {
        self.resource::<T>()
            .ok_or_else(|| QueryError::MissingResource {
                type_name: std::any::type_name::<T>(),
            })
    }
}

crate::handler::context_extractor!(QueryContext);

impl<Q: Query> crate::handler::Message<QueryContext> for Q {
    type Raw = Q;
    type Output = Result<Q::Output, QueryError>;

    fn from_raw(raw: Q) -> Result<Self, Self::Output> {
        Ok(raw)
    }
}

/// A type whose methods answer several queries (an impl block under `#[query_handler]`),
/// registered all at once with [`QueryBus::handlers`].
pub trait QueryHandlers: Send + Sync + 'static {
    /// Registers every handler of `self` on `bus`.
    fn register(self: Arc<Self>, bus: QueryBus) -> QueryBus;
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No handler is registered for the query: a wiring mistake.
    #[error("no handler for query `{query_type}`")]
    NoHandler {
        /// The query's name.
        query_type: String,
    },
    /// A resource the handler needs was not registered with the bus: a wiring mistake.
    #[error("query handler needs a `{type_name}` resource, which is not registered")]
    MissingResource {
        /// The resource's type.
        type_name: &'static str,
    },
    /// A read-your-writes query gave up waiting for a projection to apply the events it
    /// waits for (the projection is stopped, failing, or far behind).
    #[error("projection `{projection}` did not catch up within {waited:?}")]
    NotCaughtUp {
        /// The projection waited for.
        projection: String,
        /// How long the query waited.
        waited: std::time::Duration,
    },
    /// The handler failed (e.g. the read-model store is unreachable).
    #[error("query failed: {0}")]
    Failed(#[source] BoxError),
}

impl From<BoxError> for QueryError {
    fn from(e: BoxError) -> Self {
        QueryError::Failed(e)
    }
}

impl From<crate::Error> for QueryError {
    fn from(e: crate::Error) -> Self {
        QueryError::Failed(Box::new(e))
    }
}

type Erased = Arc<dyn std::any::Any + Send + Sync>;
struct Slot<Q: Query>(Bound<QueryContext, Q>);

/// Routes queries to their handlers.
///
/// ```
/// use eventbus_core::{query, QueryBus, QueryContext, QueryError};
///
/// #[query(output = Option<String>)]
/// pub struct GetName { pub id: u32 }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let queries = QueryBus::new().handle(|q: GetName, _ctx: QueryContext| async move {
///     Ok::<_, QueryError>((q.id == 1).then(|| "Ada".to_string()))
/// });
/// assert_eq!(queries.query(GetName { id: 1 }).await.unwrap().as_deref(), Some("Ada"));
/// # }
/// ```
#[derive(Clone, Default)]
pub struct QueryBus {
    handlers: Arc<HashMap<&'static str, Erased>>,
    resources: Resources,
}

impl fmt::Debug for QueryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("QueryBus").field("queries", &names).finish()
    }
}

impl QueryBus {
    /// An empty bus.
    pub fn new() -> Self {
        QueryBus::default()
    }

    /// Registers the handler of a query: an async fn or closure taking the query, then
    /// extractors (`QueryContext`, `State<T>`; see [`Handler`]), and returning
    /// `Result<Q::Output, QueryError>`.
    ///
    /// # Panics
    ///
    /// When the query already has a handler, or when the handler takes a `State<T>` not
    /// registered before it (`.resource`): wiring mistakes.
    #[track_caller]
    pub fn handle<Args, H>(self, handler: H) -> Self
    where
        H: Handler<QueryContext, Args>,
        H::Message: Query,
    {
        let bound = bind_here(handler, &self.resources);
        self.handle_bound(bound)
    }

    /// Registers an already bound handler of `Q`.
    #[track_caller]
    pub(crate) fn handle_bound<Q: Query>(mut self, bound: Bound<QueryContext, Q>) -> Self {
        let slot: Erased = Arc::new(Slot::<Q>(bound));
        if Arc::make_mut(&mut self.handlers)
            .insert(Q::QUERY_TYPE, slot)
            .is_some()
        {
            panic!("query `{}` already has a handler", Q::QUERY_TYPE);
        }
        self
    }

    /// Registers every query handler of a type (see [`QueryHandlers`]).
    #[track_caller]
    pub fn handlers<T: QueryHandlers>(self, service: Arc<T>) -> Self {
        service.register(self)
    }

    /// Registers a shared resource handlers reach with [`QueryContext::resource`].
    pub fn resource<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// The resources handlers are bound against (the app's).
    pub(crate) fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Answers a query.
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Output, QueryError> {
        let Some(slot) = self
            .handlers
            .get(Q::QUERY_TYPE)
            .and_then(|s| s.downcast_ref::<Slot<Q>>())
        else {
            return Err(QueryError::NoHandler {
                query_type: Q::QUERY_TYPE.to_string(),
            });
        };
        let handler = slot.0.clone();
        let span = crate::telemetry::spans::internal("query", Q::QUERY_TYPE);
        handler
            .call(
                query,
                QueryContext {
                    resources: self.resources.clone(),
                },
            )
            .instrument(span)
            .await
    }
}
