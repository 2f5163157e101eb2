//! The read-model half of the in-memory server: values as Redis types them, and each
//! projection's checkpoints, key registries and lease.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use tokio::time::Instant;

use crate::transport::Topic;

/// A stored value, as Redis types it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Hash(BTreeMap<String, String>),
    List(VecDeque<String>),
    Set(BTreeSet<String>),
    Str(String),
}

/// What the store keeps about one projection.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub(crate) checkpoint: HashMap<Topic, String>,
    pub(crate) rebuild_checkpoint: HashMap<Topic, String>,
    pub(crate) keys: BTreeSet<String>,
    pub(crate) rebuild_keys: BTreeSet<String>,
    pub(crate) rebuilt_upto: HashMap<Topic, String>,
    /// The lease: its holder's token and when it lapses.
    pub(crate) lease: Option<(String, Instant)>,
}

impl Meta {
    /// Whether `token` holds the lease now.
    pub(crate) fn leased_to(&self, token: &str) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|(t, until)| t == token && Instant::now() < *until)
    }
}

/// The read models of one [`MemoryServer`](super::MemoryServer): stored values by key, and
/// what the store keeps about each projection.
#[derive(Debug, Default)]
pub(crate) struct ModelState {
    pub(crate) values: HashMap<String, Value>,
    pub(crate) meta: HashMap<String, Meta>,
}
