//! What a subscription counts while it runs ([`SubscriptionStats`]) and what its shutdown
//! left undone ([`ShutdownReport`]).

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Counters of a running subscription.
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    pub(crate) handled: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) claimed: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
    pub(crate) renewed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) poison: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

macro_rules! stat_getters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        impl SubscriptionStats {
            $(
                #[doc = $doc]
                pub fn $name(&self) -> u64 {
                    self.$name.load(AtomicOrdering::Relaxed)
                }
            )*
        }
    };
}

stat_getters! {
    handled: "Entries every handler handled.",
    failed_attempts: "Handler attempts that failed (each retry counts).",
    dead_lettered: "Entries moved to the dead-letter stream.",
    skipped: "Entries no handler of this subscription takes (acknowledged).",
    claimed: "Entries reclaimed from idle consumers or recovered from an earlier run.",
    acked: "Entries acknowledged.",
    transport_errors: "Transport errors the consumer loop survived.",
    renewed: "Holds renewed: entries read and not yet settled, kept from other consumers.",
    lost: "Entries another consumer took before this one started or acknowledged them \
           (neither was done here).",
    poison: "Entries dead-lettered before any handler ran because earlier deliveries never \
             ended (their consumer crashed, was killed or hung).",
    abandoned: "Handlers cancelled at shutdown after `shutdown_timeout` (their entries stay \
                pending).",
}

impl SubscriptionStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, AtomicOrdering::Relaxed);
    }
}

/// What a subscription's shutdown left undone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Handlers still running at `shutdown_timeout`, cancelled; their entries stay pending.
    pub abandoned: u64,
    /// Entries read and not settled (never started, cancelled, or their acknowledgement
    /// could not be sent): pending, delivered again later.
    pub left_pending: u64,
}
