//! Mounting a router on a Streams subscription.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::bus::handler::ErasedHandler;
use crate::bus::{Context, SubscriptionBuilder};
use crate::dispatch::call_isolated;
use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::router::{Router, RouterStats};
use crate::transport::Topic;

impl Router {
    /// Mounts this router on a Streams subscription; the same as
    /// [`SubscriptionBuilder::route`].
    pub fn mount(&self, subscription: SubscriptionBuilder) -> SubscriptionBuilder {
        subscription.route(self)
    }

    /// One Streams handler per rule, in priority order, then one that counts the event as
    /// routed or not and runs the fallback.
    fn stream_handlers(&self) -> Vec<ErasedHandler> {
        let mut handlers: Vec<ErasedHandler> = Vec::with_capacity(self.rules.len() + 1);
        for rule in &self.rules {
            let rule = rule.clone();
            let stats = self.stats.clone();
            handlers.push(Arc::new(
                move |event: Arc<Envelope<Value>>, _ctx: Context| -> BoxFuture<'static, _> {
                    if !rule.matches(&event) {
                        return Box::pin(std::future::ready(Ok(())));
                    }
                    let handler = rule.handler.clone();
                    let name = rule.name.clone();
                    let stats = stats.clone();
                    Box::pin(async move {
                        call_isolated(&handler, event).await.map_err(|e| {
                            RouterStats::count(&stats.rule_failures);
                            name_failure(&name, e)
                        })
                    })
                },
            ));
        }
        let router = self.clone();
        handlers.push(Arc::new(
            move |event: Arc<Envelope<Value>>, _ctx: Context| {
                let router = router.clone();
                Box::pin(async move {
                    if router.is_routed(&event) {
                        RouterStats::count(&router.stats.routed);
                        Ok(())
                    } else {
                        router
                            .unrouted(event)
                            .await
                            .map_err(|e| name_failure("fallback", e))
                    }
                })
            },
        ));
        handlers
    }
}

/// Names the rule in the failure the consumer loop logs and dead-letters.
fn name_failure(rule: &str, error: HandlerError) -> HandlerError {
    let message = format!("rule `{rule}`: {}", error.message());
    if error.is_abandon() {
        HandlerError::abandon(message)
    } else if error.is_permanent() {
        HandlerError::permanent(message)
    } else {
        HandlerError::retryable(message)
    }
}

impl SubscriptionBuilder {
    /// Routes every event of the global stream through `router`.
    ///
    /// Each rule runs as a handler of the subscription, in priority order, so the Streams
    /// guarantees hold per rule: the entry is acknowledged only when every matching rule
    /// succeeded; when one fails, the entry is retried with backoff and, past
    /// `max_deliveries` (or at once for a permanent failure), dead-lettered with the rule's
    /// name in the error. On a retry by the same consumer, rules that already succeeded for
    /// the entry are not run again; after a crash or a reclaim by another consumer they are,
    /// so rule handlers must be idempotent (as every Streams handler must).
    ///
    /// Rules read the global stream (`Topic::All`) because patterns can match event types no
    /// one knows yet; an entry no rule takes is counted as unrouted, handed to the fallback
    /// handler, and acknowledged.
    pub fn route(self, router: &Router) -> SubscriptionBuilder {
        router
            .stream_handlers()
            .into_iter()
            .fold(self, |builder, handler| builder.add(Topic::All, handler))
    }
}
