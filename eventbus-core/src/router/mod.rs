//! The event router: rules of a pattern over event types, an optional content filter and a
//! priority, each with its handler.
//!
//! Every rule whose pattern matches an event's type (see [`Pattern`] for the syntax) and
//! whose filter accepts the event handles it, higher priorities first, equal priorities in
//! registration order. An event no rule takes is *unrouted*: it is counted and goes to the
//! fallback handler, if one is set.
//!
//! A router runs in three places:
//!
//! - in process: [`Router::dispatch`] routes one envelope and says what happened;
//! - on a Streams subscription: [`SubscriptionBuilder::route`](crate::SubscriptionBuilder::route)
//!   reads the global stream and keeps the Streams guarantees (an entry is acknowledged only
//!   when every matching rule succeeded; a failing rule leads to retry and dead letter);
//! - on a Pub/Sub subscription:
//!   [`PubSubSubscriptionBuilder::route`](crate::PubSubSubscriptionBuilder::route)
//!   (at-most-once, like everything on Pub/Sub).
//!
//! ```
//! use eventbus_core::{Envelope, HandlerError, Router, Rule};
//! use serde_json::{json, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), eventbus_core::Error> {
//! async fn on_order(event: Envelope<Value>) -> Result<(), HandlerError> {
//!     println!("order event: {}", event.event_type);
//!     Ok(())
//! }
//!
//! let mut router = Router::new();
//! router.add(Rule::new("Order.*", on_order)?)?;
//! router.add(Rule::new("Payment.Failed", |e: Envelope<Value>| async move {
//!     println!("payment failed: {}", e.data);
//!     Ok(())
//! })?.priority(5))?;
//!
//! let created = Envelope::new("Order.Created", 1, "shop", json!({"total": 1500}));
//! assert!(router.dispatch(&created).await.is_routed());
//! let other = Envelope::new("Stock.Reserved", 1, "shop", json!({}));
//! assert!(!router.dispatch(&other).await.is_routed());
//! assert_eq!(router.stats().unrouted(), 1);
//! # Ok(())
//! # }
//! ```

mod mount;
mod rule;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::dispatch::{call_isolated, erase, RawHandler};
use crate::envelope::Envelope;
use crate::error::{HandlerError, Result};
use crate::event::Event;
use crate::handler::Handler;
use crate::pattern::Pattern;

pub use rule::{CompiledRule, IntoRule, Rule};

/// Routes events to the rules that match them.
///
/// Cheap to clone; clones share their [`RouterStats`] (so keep a clone to read the counters
/// of a router you mounted).
///
/// ```
/// use eventbus_core::{Envelope, Router, Rule};
/// use serde_json::{json, Value};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventbus_core::Error> {
/// let mut router = Router::new();
/// router.add(Rule::new("Order.*", |_: Envelope<Value>| async { Ok(()) })?.name("orders"))?;
/// router.add(
///     Rule::new("Order.Created", |_: Envelope<Value>| async { Ok(()) })?
///         .name("high value")
///         .priority(10)
///         .filter(|e| e.data["total"].as_f64().unwrap_or(0.0) > 1000.0),
/// )?;
///
/// // Higher priorities first; a filter that says no skips its rule.
/// let big = Envelope::new("Order.Created", 1, "shop", json!({"total": 1500}));
/// assert_eq!(router.dispatch(&big).await.matched(), ["high value", "orders"]);
/// let small = Envelope::new("Order.Created", 1, "shop", json!({"total": 50}));
/// assert_eq!(router.dispatch(&small).await.matched(), ["orders"]);
/// assert_eq!(router.stats().routed(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Router {
    rules: Vec<CompiledRule>,
    fallback: Option<RawHandler>,
    stats: Arc<RouterStats>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("rules", &self.rules)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

/// Counters of a router, shared by its clones.
#[derive(Debug, Default)]
pub struct RouterStats {
    routed: AtomicU64,
    unrouted: AtomicU64,
    rule_failures: AtomicU64,
}

impl RouterStats {
    /// Events at least one rule took.
    pub fn routed(&self) -> u64 {
        self.routed.load(Ordering::Relaxed)
    }

    /// Events no rule took (sent to the fallback handler when there is one).
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Rule (and fallback) handler calls that failed or panicked.
    pub fn rule_failures(&self) -> u64 {
        self.rule_failures.load(Ordering::Relaxed)
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What [`Router::dispatch`] did with one event.
#[derive(Debug, Default)]
pub struct Dispatch {
    matched: Vec<String>,
    failures: Vec<RuleFailure>,
}

/// A rule whose handler failed (or panicked) during a dispatch.
#[derive(Debug)]
pub struct RuleFailure {
    /// The rule's name (`fallback` for the fallback handler).
    pub rule: String,
    /// Why it failed.
    pub error: HandlerError,
}

impl Dispatch {
    /// Whether at least one rule took the event (whether or not its handler succeeded).
    pub fn is_routed(&self) -> bool {
        !self.matched.is_empty()
    }

    /// Whether every rule that took the event handled it.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The names of the rules that took the event, in the order they ran.
    pub fn matched(&self) -> &[String] {
        &self.matched
    }

    /// The rules whose handler failed.
    pub fn failures(&self) -> &[RuleFailure] {
        &self.failures
    }
}

impl Router {
    /// A router without rules.
    pub fn new() -> Self {
        Router::default()
    }

    /// Registers a rule: a [`Rule`], or a function annotated with `#[route]`.
    ///
    /// Fails with [`Error::InvalidPattern`](crate::Error::InvalidPattern) when the rule's
    /// pattern is invalid; patterns are compiled here, once, never at dispatch.
    pub fn add(&mut self, rule: impl IntoRule) -> Result<&mut Self> {
        let rule = rule.into_rule()?;
        // After every rule of a priority at least as high: equal priorities keep their
        // registration order.
        let at = self.rules.partition_point(|r| r.priority >= rule.priority);
        self.rules.insert(at, rule);
        Ok(self)
    }

    /// Registers `handler` for events matching `pattern`, at priority 0 without a filter.
    #[track_caller]
    pub fn route<T, Args, H>(&mut self, pattern: &str, handler: H) -> Result<&mut Self>
    where
        T: crate::dispatch::Payload,
        H: Handler<(), Args, Message = Envelope<T>>,
    {
        self.add(Rule::new(pattern, handler)?)
    }

    /// Sets the handler of unrouted events (as JSON).
    #[track_caller]
    pub fn fallback<Args, H>(&mut self, handler: H) -> &mut Self
    where
        H: Handler<(), Args, Message = Envelope<Value>>,
    {
        self.fallback = Some(erase(handler));
        self
    }

    /// The rules, in the order they run.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The patterns of the rules (deduplicated), for subscribing to what the router needs.
    pub fn patterns(&self) -> Vec<Pattern> {
        let mut out: Vec<Pattern> = Vec::new();
        for rule in &self.rules {
            if !out.contains(&rule.pattern) {
                out.push(rule.pattern.clone());
            }
        }
        out
    }

    /// The counters.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Whether any rule takes this event.
    pub fn is_routed(&self, event: &Envelope<Value>) -> bool {
        self.rules.iter().any(|r| r.matches(event))
    }

    /// Routes one event in process: runs every matching rule's handler, in priority order,
    /// each isolated (one rule's error or panic doesn't keep the others from running), and
    /// the fallback handler when no rule matched.
    pub async fn dispatch(&self, event: &Envelope<Value>) -> Dispatch {
        let event = Arc::new(event.clone());
        let mut out = Dispatch::default();
        for rule in &self.rules {
            if !rule.matches(&event) {
                continue;
            }
            out.matched.push(rule.name.clone());
            if let Err(error) = call_isolated(&rule.handler, event.clone()).await {
                self.record_failure(&rule.name, &event, &error);
                out.failures.push(RuleFailure {
                    rule: rule.name.clone(),
                    error,
                });
            }
        }
        if out.is_routed() {
            RouterStats::count(&self.stats.routed);
        } else if let Err(error) = self.unrouted(event.clone()).await {
            out.failures.push(RuleFailure {
                rule: "fallback".to_owned(),
                error,
            });
        }
        out
    }

    /// Routes a typed event in process; see [`dispatch`](Self::dispatch).
    pub async fn dispatch_event<E: Event>(&self, event: &Envelope<E>) -> Result<Dispatch> {
        Ok(self.dispatch(&event.to_raw()?).await)
    }

    /// Counts an unrouted event and hands it to the fallback handler, if any.
    pub(crate) async fn unrouted(&self, event: Arc<Envelope<Value>>) -> Result<(), HandlerError> {
        RouterStats::count(&self.stats.unrouted);
        tracing::debug!(event_type = %event.event_type, event_id = %event.event_id, "unrouted event");
        let Some(fallback) = &self.fallback else {
            return Ok(());
        };
        let result = call_isolated(fallback, event.clone()).await;
        if let Err(error) = &result {
            self.record_failure("fallback", &event, error);
        }
        result
    }

    fn record_failure(&self, rule: &str, event: &Envelope<Value>, error: &HandlerError) {
        RouterStats::count(&self.stats.rule_failures);
        tracing::warn!(rule, event_type = %event.event_type, event_id = %event.event_id, error = %error, "routing rule failed");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
