//! Routing rules: a pattern, an optional content filter, a priority and a handler.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Value;

use crate::dispatch::{erase, Payload, RawHandler};
use crate::envelope::Envelope;
use crate::error::Result;
use crate::handler::Handler;
use crate::pattern::Pattern;

/// A content filter over a decoded envelope.
type Filter<T> = Arc<dyn Fn(&Envelope<T>) -> bool + Send + Sync>;

/// A routing rule before registration: events whose type matches `pattern` (and, for a typed
/// rule, whose type is `T`'s), that pass the filter, go to the handler.
///
/// `T` is a typed [`Event`](crate::Event) or [`serde_json::Value`] (any event, as JSON); the
/// filter sees the same `Envelope<T>` as the handler.
///
/// ```
/// use eventbus_core::{Envelope, HandlerError, Rule};
/// use serde_json::Value;
///
/// async fn high_value(event: Envelope<Value>) -> Result<(), HandlerError> {
///     println!("high value order: {}", event.data);
///     Ok(())
/// }
///
/// let rule = Rule::new("Order.Created", high_value)?
///     .priority(10)
///     .filter(|e: &Envelope<Value>| e.data["total"].as_f64().is_some_and(|t| t > 1000.0));
/// # Ok::<(), eventbus_core::Error>(())
/// ```
pub struct Rule<T> {
    pattern: Pattern,
    name: String,
    priority: i32,
    filter: Option<Filter<T>>,
    handler: RawHandler,
    _payload: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Rule<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("pattern", &self.pattern.as_str())
            .field("priority", &self.priority)
            .field("filtered", &self.filter.is_some())
            .finish()
    }
}

impl<T: Payload> Rule<T> {
    /// A rule for events matching `pattern`, at priority 0, named after the pattern.
    ///
    /// Fails with [`Error::InvalidPattern`](crate::Error::InvalidPattern) when the pattern
    /// is not valid.
    #[track_caller]
    pub fn new<Args, H>(pattern: &str, handler: H) -> Result<Self>
    where
        H: Handler<(), Args, Message = Envelope<T>>,
    {
        Ok(Self::with_pattern(Pattern::parse(pattern)?, handler))
    }

    /// A rule for an already compiled pattern.
    #[track_caller]
    pub fn with_pattern<Args, H>(pattern: Pattern, handler: H) -> Self
    where
        H: Handler<(), Args, Message = Envelope<T>>,
    {
        Rule {
            name: pattern.as_str().to_owned(),
            pattern,
            priority: 0,
            filter: None,
            handler: erase(handler),
            _payload: PhantomData,
        }
    }

    /// Rules of higher priority run first; equal priorities run in registration order.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Only events for which `filter` returns true are routed by this rule. Filters should be
    /// cheap and pure: the router may evaluate them more than once per event.
    pub fn filter(mut self, filter: impl Fn(&Envelope<T>) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Names the rule in logs, errors and [`Dispatch`](crate::Dispatch) (default: the
    /// pattern).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// Anything the router can register: a [`Rule`], or what `#[route]` generates.
///
/// `#[route]` implements it for the unit struct it turns the function into; implement it by
/// hand to register a rule built elsewhere.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a routing rule",
    note = "build one with `Rule::new(pattern, handler)`, or add `#[eventbus_core::route(\"Pattern.*\")]` to an async fn"
)]
pub trait IntoRule {
    /// The rule, or [`Error::InvalidPattern`](crate::Error::InvalidPattern).
    fn into_rule(self) -> Result<CompiledRule>;
}

impl<T: Payload> IntoRule for Rule<T> {
    fn into_rule(self) -> Result<CompiledRule> {
        let filter = self.filter;
        let accepts: Accepts = Arc::new(move |raw: &Envelope<Value>| {
            if !T::accepts(&raw.event_type) {
                return false;
            }
            match &filter {
                None => true,
                // Data that doesn't decode passes, so the handler reports the decode failure
                // (a permanent one: dead-lettered on Streams) instead of losing the event.
                Some(filter) => T::decode(raw).map_or(true, |event| filter(&event)),
            }
        });
        Ok(CompiledRule {
            name: self.name,
            pattern: self.pattern,
            priority: self.priority,
            accepts,
            handler: self.handler,
        })
    }
}

impl<T: Payload> IntoRule for Result<Rule<T>> {
    fn into_rule(self) -> Result<CompiledRule> {
        self?.into_rule()
    }
}

impl IntoRule for CompiledRule {
    fn into_rule(self) -> Result<CompiledRule> {
        Ok(self)
    }
}

type Accepts = Arc<dyn Fn(&Envelope<Value>) -> bool + Send + Sync>;

/// A rule ready to run: pattern compiled, payload type and filter erased.
#[derive(Clone)]
pub struct CompiledRule {
    pub(crate) name: String,
    pub(crate) pattern: Pattern,
    pub(crate) priority: i32,
    accepts: Accepts,
    pub(crate) handler: RawHandler,
}

impl fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRule")
            .field("name", &self.name)
            .field("pattern", &self.pattern.as_str())
            .field("priority", &self.priority)
            .finish()
    }
}

impl CompiledRule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Its priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// Whether it routes this event: the pattern matches, the payload type fits, the filter
    /// passes.
    pub fn matches(&self, event: &Envelope<Value>) -> bool {
        self.pattern.matches(&event.event_type) && (self.accepts)(event)
    }
}
