//! Every Redis key and naming convention of the backend, in one place.
//!
//! The default layout is the one of the reference article's `StreamEventBus`, so Rust and
//! Python services can share one bus:
//!
//! | what | key (namespace `eventbus`) |
//! |---|---|
//! | per-type stream | `eventbus:stream:{event_type}` |
//! | global stream | `eventbus:stream:all` |
//! | dead letters of a group | `eventbus:dlq:{group}` |
//! | consumer group of a service | `{service}-consumers` |
//! | consumer group of a projection | `{service}-projection-{name}` |
//! | projection checkpoint, key registry | `eventbus:projection:{name}:checkpoint`, `…:keys` |
//! | aggregate event stream (entry id `0-{version}`) | `eventbus:aggregate:{type}:{id}` |
//! | aggregate version | `eventbus:aggregate-version:{type}:{id}` |
//! | aggregate snapshot (hash) | `eventbus:snapshot:{type}:{id}` |
//! | rebuild state and shadow keys | `eventbus:projection:{name}:rebuild:…`, `…:shadow:{key}`, `…:rebuilt` |
//! | saga state (JSON) | `saga:{saga_id}` (not namespaced, as in the article; the prefix is configurable) |
//! | sagas by status, saga deadlines | `eventbus:saga:index:{state}` (set), `eventbus:saga:deadlines` (sorted set); on a cluster one shard per slot, `…:{tag}` |
//! | participant idempotency records | `eventbus:saga:step:{participant}:{saga_id}:{event_type}` (on a cluster `eventbus:saga:step:{tag}:…`) |
//! | Pub/Sub channel of an event type | `events:{event_type}` (not namespaced, as in the article; the prefix is configurable) |
//!
//! On a Redis Cluster, event-type topics are partitioned (see [`Keys::partition_stream`]) and
//! a named stream carries its name as its hash tag: `eventbus:stream:cmd:billing:{cmd:billing}`,
//! its dead letters `eventbus:dlq:{group}:{cmd:billing}`.
//! An aggregate's keys carry the hash tag `{t_i}` of its partition there, right after the
//! key kind: `eventbus:aggregate:{t_i}:{type}:{id}` ([`Keys::aggregate_stream_tagged`]).
//! A projection over partitioned topics keeps its checkpoint and rebuilt-upto hashes per
//! partition (`…:checkpoint:{t_i}`, [`Keys::in_slot_of`]); on a cluster its key registry,
//! markers of applied entries and fence per slot written (`…:keys:{t_s}`,
//! `…:applied:{t_s}`, `…:fence:{t_s}`), with `…:epoch`, `…:slots`, `…:swap:{t}` and shadow
//! keys in their key's slot (`…:shadow:{t_s}:{key}`).
//!
//! Read-model keys themselves (`orders:summary:{order_id}`) are *not* namespaced: they are
//! exactly the projection's key templates (plus an optional prefix), so that other services
//! read them where the reference article puts them.
//!
//! Call sites never format keys themselves, so a partitioned layout for Redis Cluster (keys
//! written by one atomic step sharing a hash tag) can be added here alone.

use eventbus_core::pattern::{Pattern, Segment};
use eventbus_core::saga::{SagaStatus, StepKey};
use eventbus_core::transport::Topic;

use crate::partition::slot;

/// The default key namespace.
pub const DEFAULT_NAMESPACE: &str = "eventbus";

/// The default prefix of Pub/Sub channels (`events:{event_type}`), as in the reference article.
pub const DEFAULT_CHANNEL_PREFIX: &str = "events:";

/// The name of the global stream's last key segment (`{ns}:stream:all`).
const ALL: &str = "all";

/// The prefixes of the named streams the runtime keeps (remote commands' `cmd:{service}`
/// and `reply:{instance}`), which no event type may start with: a stream key is read back
/// as a named topic by these.
const NAMED: [&str; 2] = ["cmd:", "reply:"];

/// Whether `name` is a named stream's (remote commands' `cmd:{service}`, `reply:{instance}`):
/// on a cluster such a stream carries its name as its hash tag, which is no partition's.
pub(crate) fn is_named(name: &str) -> bool {
    NAMED.iter().any(|prefix| name.starts_with(prefix))
}

/// Builds the keys of one namespace.
///
/// ```
/// use eventbus_core::Topic;
/// use eventbus_redis::Keys;
///
/// let keys = Keys::default();
/// assert_eq!(keys.stream(&Topic::of_type("OrderCreated")), "eventbus:stream:OrderCreated");
/// assert_eq!(keys.stream(&Topic::All), "eventbus:stream:all");
/// assert_eq!(keys.dead_letters("billing-consumers"), "eventbus:dlq:billing-consumers");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
    stream_prefix: String,
    channel_prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_NAMESPACE)
    }
}

impl Keys {
    /// Keys under `namespace` (the article uses `eventbus`).
    pub fn new(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let stream_prefix = format!("{namespace}:stream:");
        Keys {
            namespace,
            stream_prefix,
            channel_prefix: DEFAULT_CHANNEL_PREFIX.to_owned(),
        }
    }

    /// Uses another Pub/Sub channel prefix (default `events:`). Channels are not namespaced
    /// by default, so that services written per the article hear ours; give tests or tenants
    /// sharing a server their own prefix.
    pub fn with_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = prefix.into();
        self
    }

    /// The Pub/Sub channel prefix.
    pub fn channel_prefix(&self) -> &str {
        &self.channel_prefix
    }

    /// The Pub/Sub channel of an event type: `events:{event_type}`.
    ///
    /// ```
    /// let keys = eventbus_redis::Keys::default();
    /// assert_eq!(keys.channel("PaymentCompleted"), "events:PaymentCompleted");
    /// ```
    pub fn channel(&self, event_type: &str) -> String {
        format!("{}{event_type}", self.channel_prefix)
    }

    /// The event type of a channel of this prefix, or `None` for any other channel.
    pub fn event_type_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(&self.channel_prefix)
            .filter(|t| !t.is_empty())
    }

    /// The `PSUBSCRIBE` glob covering a routing pattern.
    ///
    /// Redis globs have no notion of segments (`*` also matches `.`), so the glob is a
    /// superset of the pattern: subscribers check each message against the pattern itself.
    /// `**` segments absorb their neighbouring dots, so that `Order.**` (which matches
    /// `Order`) becomes `events:Order*`. Glob metacharacters in literals are escaped.
    ///
    /// ```
    /// use eventbus_core::Pattern;
    /// let keys = eventbus_redis::Keys::default();
    /// let glob = |p: &str| keys.channel_glob(&Pattern::parse(p).unwrap());
    /// assert_eq!(glob("Order.*"), "events:Order.*");
    /// assert_eq!(glob("Order.**"), "events:Order*");
    /// assert_eq!(glob("**.Failed"), "events:*Failed");
    /// assert_eq!(glob("a.**.b"), "events:a*b");
    /// assert_eq!(glob("Payment.Failed"), "events:Payment.Failed");
    /// ```
    pub fn channel_glob(&self, pattern: &Pattern) -> String {
        let mut glob = escape_glob(&self.channel_prefix);
        let mut previous_any = true; // no dot before the first segment
        for segment in pattern.segments() {
            let any = matches!(segment, Segment::Any);
            if !previous_any && !any {
                glob.push('.');
            }
            match segment {
                Segment::Literal(lit) => glob.push_str(&escape_glob(lit)),
                Segment::One | Segment::Any => {
                    if !glob.ends_with('*') || glob.ends_with("\\*") {
                        glob.push('*');
                    }
                }
            }
            previous_any = any;
        }
        glob
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The stream of a topic: `{ns}:stream:{event_type}`, or `{ns}:stream:all`.
    ///
    /// An event type literally named `all` would share the global stream; don't name one so.
    pub fn stream(&self, topic: &Topic) -> String {
        match topic {
            Topic::Type(event_type) => format!("{}{event_type}", self.stream_prefix),
            Topic::All => format!("{}{ALL}", self.stream_prefix),
            // Event type names can't contain ':', so a name never meets a type stream.
            Topic::Named(name) => format!("{}{name}", self.stream_prefix),
            other => format!("{}{other}", self.stream_prefix),
        }
    }

    /// The stream of an event type: `{ns}:stream:{event_type}`.
    pub fn type_stream(&self, event_type: &str) -> String {
        format!("{}{event_type}", self.stream_prefix)
    }

    /// The dead-letter stream of a consumer group: `{ns}:dlq:{group}`.
    pub fn dead_letters(&self, group: &str) -> String {
        format!("{}:dlq:{group}", self.namespace)
    }

    /// The `SCAN MATCH` pattern of every stream of the namespace: `{ns}:stream:*`.
    ///
    /// Glob metacharacters in the namespace are escaped.
    pub fn stream_pattern(&self) -> String {
        let mut pattern = escape_glob(&self.stream_prefix);
        pattern.push('*');
        pattern
    }

    /// The topic of a stream key of this namespace, or `None` for any other key.
    pub fn topic_of(&self, key: &str) -> Option<Topic> {
        let rest = key.strip_prefix(&self.stream_prefix)?;
        if is_named(rest) {
            return Some(Topic::Named(rest.to_string()));
        }
        match rest {
            "" => None,
            ALL => Some(Topic::All),
            event_type => Some(Topic::of_type(event_type)),
        }
    }
}

impl Keys {
    /// The stream of one partition of a partitioned topic: the topic's stream key followed
    /// by the partition's hash tag, `{ns}:stream:{event_type}:{tag}` (`{ns}:stream:all:{tag}`
    /// for the global stream's share), so that a partition's type stream, its share of the
    /// global stream and its dead letters share a cluster slot.
    ///
    /// ```
    /// use eventbus_core::Topic;
    /// let keys = eventbus_redis::Keys::default();
    /// assert_eq!(keys.partition_stream(&Topic::of_type("OrderCreated"), "p3.41"), "eventbus:stream:OrderCreated:{p3.41}");
    /// assert_eq!(keys.partition_stream(&Topic::All, "p3.41"), "eventbus:stream:all:{p3.41}");
    /// ```
    pub fn partition_stream(&self, topic: &Topic, tag: &str) -> String {
        format!("{}:{{{tag}}}", self.stream(topic))
    }

    /// The dead-letter stream of a group for the entries of one partition (hash tag `tag`):
    /// `{ns}:dlq:{group}:{tag}`; `None`: the unpartitioned `{ns}:dlq:{group}`.
    pub fn partition_dead_letters(&self, group: &str, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{}:{{{tag}}}", self.dead_letters(group)),
            None => self.dead_letters(group),
        }
    }

    /// The `SCAN MATCH` pattern of every dead-letter stream of a group, partitioned or not.
    pub fn dead_letters_pattern(&self, group: &str) -> String {
        let mut pattern = escape_glob(&self.dead_letters(group));
        pattern.push('*');
        pattern
    }

    /// The metadata of an event type's topic (a hash; field `partitions`):
    /// `{ns}:topic:{event_type}`.
    pub fn topic_meta(&self, event_type: &str) -> String {
        format!("{}:topic:{event_type}", self.namespace)
    }

    /// The `SCAN MATCH` pattern of every topic's metadata: `{ns}:topic:*`.
    pub fn topic_meta_pattern(&self) -> String {
        format!("{}:topic:*", escape_glob(&self.namespace))
    }

    /// The namespace's settings, which every client of it follows (a hash; field
    /// `global_stream`: `on` or `off`): `{ns}:settings`.
    pub fn settings(&self) -> String {
        format!("{}:settings", self.namespace)
    }

    /// The hash tags of the namespace's partitions, partition `i` at index `i` (a list):
    /// `{ns}:partitions`.
    pub fn partition_tags(&self) -> String {
        format!("{}:partitions", self.namespace)
    }

    /// The live consumers of a group that share partitions (a sorted set; member: consumer
    /// name, score: when its membership expires, in ms): `{ns}:members:{group}`.
    pub fn members(&self, group: &str) -> String {
        format!("{}:members:{group}", self.namespace)
    }

    /// The lease on one partition of a topic for a group: whoever holds it is the one
    /// consumer of the group reading the partition (`{ns}:lease:{group}:{topic}:{index}`, a
    /// string holding the consumer's name, with a time to live).
    pub fn lease(&self, group: &str, topic: &Topic, index: u32) -> String {
        format!("{}:lease:{group}:{topic}:{index}", self.namespace)
    }

    /// The topic of a stream key of this namespace and the partition hash tag it carries
    /// (`None` for an unpartitioned stream), or `None` for any other key.
    pub fn parse_stream(&self, key: &str) -> Option<(Topic, Option<String>)> {
        if let Some(open) = key.rfind(":{") {
            if key.ends_with('}') {
                let tag = &key[open + 2..key.len() - 1];
                if !tag.is_empty() && !tag.contains(['{', '}']) {
                    let topic = self.topic_of(&key[..open])?;
                    return Some((topic, Some(tag.to_owned())));
                }
            }
        }
        self.topic_of(key).map(|t| (t, None))
    }
}

impl Keys {
    /// The checkpoint of a projection (last entry id applied, per event type):
    /// `{ns}:projection:{name}:checkpoint`; `…:rebuild:checkpoint` for a rebuild's.
    pub fn projection_checkpoint(&self, name: &str, rebuild: bool) -> String {
        let part = if rebuild {
            "rebuild:checkpoint"
        } else {
            "checkpoint"
        };
        format!("{}:projection:{name}:{part}", self.namespace)
    }

    /// Every read-model key a projection wrote: `{ns}:projection:{name}:keys`;
    /// `…:rebuild:keys` for a rebuild's.
    pub fn projection_registry(&self, name: &str, rebuild: bool) -> String {
        let part = if rebuild { "rebuild:keys" } else { "keys" };
        format!("{}:projection:{name}:{part}", self.namespace)
    }

    /// What the last rebuild of a projection covered, per event type:
    /// `{ns}:projection:{name}:rebuilt`.
    pub fn projection_rebuilt(&self, name: &str) -> String {
        format!("{}:projection:{name}:rebuilt", self.namespace)
    }

    /// An operator's request to rebuild a projection (a string: when it was asked, in
    /// seconds since the Unix epoch, with a time to live), taken by the projection's active
    /// instance: `{ns}:projection:{name}:rebuild-request`.
    pub fn projection_rebuild_request(&self, name: &str) -> String {
        format!("{}:projection:{name}:rebuild-request", self.namespace)
    }

    /// The lease of a projection's live group: whoever holds it is the one instance that
    /// applies the projection's events (`{ns}:projection:{name}:lease`, a string holding the
    /// holder's token, with a time to live).
    pub fn projection_lease(&self, name: &str) -> String {
        format!("{}:projection:{name}:lease", self.namespace)
    }

    /// The prefix of a rebuild's shadow keys: `{ns}:projection:{name}:shadow:`, followed by
    /// the read-model key.
    pub fn projection_shadow_prefix(&self, name: &str) -> String {
        format!("{}:projection:{name}:shadow:", self.namespace)
    }

    /// `key` in the cluster slot of hash tag `tag`: `{key}:{tag}`; `key` itself for `None`
    /// (the unpartitioned layout). A projection's checkpoint and rebuilt-upto hash exist
    /// once per partition tag of the streams it reads, so that the script committing an
    /// entry of partition `i` finds them in the partition's slot
    /// (`eventbus:projection:OrderSummary:checkpoint:{p3.41}`).
    pub fn in_slot_of(key: String, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{key}:{{{tag}}}"),
            None => key,
        }
    }

    /// On a cluster, the markers of the entries a projection applied to the read-model keys
    /// of one slot, until they are acknowledged (a sorted set, member `{stream}@{id}`):
    /// `{ns}:projection:{name}:applied:{tag}` (`…:rebuild:applied:{tag}` for a rebuild's),
    /// `tag` being the slot's [short tag](crate::Keys::projection_slot_tag).
    pub fn projection_markers(&self, name: &str, rebuild: bool, tag: &str) -> String {
        let part = if rebuild {
            "rebuild:applied"
        } else {
            "applied"
        };
        Keys::in_slot_of(
            format!("{}:projection:{name}:{part}", self.namespace),
            Some(tag),
        )
    }

    /// On a cluster, the highest epoch of a projection's lease that wrote in one slot
    /// (a string): `{ns}:projection:{name}:fence:{tag}`. A commit of an earlier epoch (an
    /// instance paused past its lease) writes nothing there.
    pub fn projection_fence(&self, name: &str, tag: &str) -> String {
        Keys::in_slot_of(
            format!("{}:projection:{name}:fence", self.namespace),
            Some(tag),
        )
    }

    /// The counter of a projection's lease epochs (each new holder on a cluster takes the
    /// next): `{ns}:projection:{name}:epoch`.
    pub fn projection_epoch(&self, name: &str) -> String {
        format!("{}:projection:{name}:epoch", self.namespace)
    }

    /// On a cluster, the short tags of the slots a projection has written read-model keys
    /// in (a set): where a rebuild finds the slots' key registries, markers and fences
    /// (`{ns}:projection:{name}:slots`).
    pub fn projection_slots(&self, name: &str) -> String {
        format!("{}:projection:{name}:slots", self.namespace)
    }

    /// The record of a rebuild's unfinished switch-over (holding the rebuild group's name),
    /// in the slot of the projection's lease, so that the lease script sees it:
    /// `{ns}:projection:{name}:swap:{tag}`.
    pub fn projection_swap(&self, name: &str) -> String {
        Keys::in_slot_of(
            format!("{}:projection:{name}:swap", self.namespace),
            Some(Keys::projection_slot_tag(&self.projection_lease(name))),
        )
    }

    /// The shadow key a rebuild writes read-model key `key` to: `…:shadow:{key}` on a single
    /// node; on a cluster `…:shadow:{tag}:{key}`, `tag` being the short tag of `key`'s own
    /// slot, so that the switch-over renames it to `key` within the slot.
    pub fn projection_shadow(&self, name: &str, key: &str, cluster: bool) -> String {
        let prefix = self.projection_shadow_prefix(name);
        if cluster {
            format!("{prefix}{{{}}}:{key}", Keys::projection_slot_tag(key))
        } else {
            format!("{prefix}{key}")
        }
    }

    /// The short hash tag of the cluster slot of `key` (a read-model key): the tag of that
    /// slot's markers, fence and key registry.
    pub fn projection_slot_tag(key: &str) -> &'static str {
        slot::slot_tag(slot::slot_of(key))
    }
}

impl Keys {
    /// The event stream of one aggregate instance: `{ns}:aggregate:{type}:{id}`. Entry ids
    /// are `0-{version}`, so that loading after a version is one `XRANGE`.
    pub fn aggregate_stream(&self, aggregate_type: &str, id: &str) -> String {
        format!("{}:aggregate:{aggregate_type}:{id}", self.namespace)
    }

    /// The version of one aggregate instance, stored explicitly (never derived from the
    /// stream's length): `{ns}:aggregate-version:{type}:{id}`.
    pub fn aggregate_version(&self, aggregate_type: &str, id: &str) -> String {
        format!("{}:aggregate-version:{aggregate_type}:{id}", self.namespace)
    }

    /// The latest snapshot of one aggregate instance (a hash):
    /// `{ns}:snapshot:{type}:{id}`.
    pub fn aggregate_snapshot(&self, aggregate_type: &str, id: &str) -> String {
        format!("{}:snapshot:{aggregate_type}:{id}", self.namespace)
    }

    /// [`Keys::aggregate_stream`] on a Redis Cluster, in the partition of hash tag `tag`:
    /// `{ns}:aggregate:{tag}:{type}:{id}`. The tag comes before the type and id, so that
    /// braces in them can't make another hash tag.
    pub fn aggregate_stream_tagged(&self, tag: &str, aggregate_type: &str, id: &str) -> String {
        format!(
            "{}:aggregate:{{{tag}}}:{aggregate_type}:{id}",
            self.namespace
        )
    }

    /// [`Keys::aggregate_version`] on a Redis Cluster, in the partition of hash tag `tag`:
    /// `{ns}:aggregate-version:{tag}:{type}:{id}`.
    pub fn aggregate_version_tagged(&self, tag: &str, aggregate_type: &str, id: &str) -> String {
        format!(
            "{}:aggregate-version:{{{tag}}}:{aggregate_type}:{id}",
            self.namespace
        )
    }

    /// [`Keys::aggregate_snapshot`] on a Redis Cluster, in the partition of hash tag `tag`:
    /// `{ns}:snapshot:{tag}:{type}:{id}`.
    pub fn aggregate_snapshot_tagged(&self, tag: &str, aggregate_type: &str, id: &str) -> String {
        format!(
            "{}:snapshot:{{{tag}}}:{aggregate_type}:{id}",
            self.namespace
        )
    }

    /// The metadata of an aggregate type (a hash; field `partitions`, the partition count
    /// its aggregates are placed by on a Redis Cluster, set by its first append):
    /// `{ns}:aggregate-type:{type}`.
    pub fn aggregate_type_meta(&self, aggregate_type: &str) -> String {
        format!("{}:aggregate-type:{aggregate_type}", self.namespace)
    }
}

/// The default prefix of saga state keys (`saga:{saga_id}`), as in the reference article.
pub const DEFAULT_SAGA_PREFIX: &str = "saga:";

/// The keys of sagas: state at `{prefix}{saga_id}` (prefix `saga:` by default, not
/// namespaced, so services written per the article find it), everything else under the
/// namespace.
///
/// On a single node the status indexes and the deadline schedule are one key each. On a
/// Redis Cluster ([`SagaKeys::sharded`], set by `RedisSagaStore` when the configuration
/// is a cluster's) they are sharded by the slot of the state key: the saga whose state key
/// is in slot `s` is indexed in `{ns}:saga:index:{state}:{t}` and scheduled in
/// `{ns}:saga:deadlines:{t}`, where `t` is a short hash tag that lands in slot `s`
/// ([`SagaKeys::shard`]); its participants' records carry the same tag. So a transition's
/// keys share one slot and it stays one script.
///
/// ```
/// use eventbus_core::saga::SagaStatus;
/// let keys = eventbus_redis::Keys::default().sagas();
/// assert_eq!(keys.state("s1"), "saga:s1");
/// assert_eq!(keys.index(SagaStatus::Failed), "eventbus:saga:index:failed");
/// assert_eq!(keys.deadlines(), "eventbus:saga:deadlines");
/// assert_eq!(keys.index_of(SagaStatus::Failed, "s1"), "eventbus:saga:index:failed");
///
/// let sharded = eventbus_redis::Keys::default().sagas().sharded(true);
/// let tag = sharded.shard("s1").unwrap();
/// assert_eq!(sharded.state("s1"), "saga:s1");
/// assert_eq!(sharded.index_of(SagaStatus::Failed, "s1"), format!("eventbus:saga:index:failed:{{{tag}}}"));
/// assert_eq!(sharded.deadlines_of("s1"), format!("eventbus:saga:deadlines:{{{tag}}}"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaKeys {
    namespace: String,
    state_prefix: String,
    sharded: bool,
}

impl Keys {
    /// The saga keys of this namespace, with the default state prefix `saga:`, unsharded.
    pub fn sagas(&self) -> SagaKeys {
        SagaKeys {
            namespace: self.namespace.clone(),
            state_prefix: DEFAULT_SAGA_PREFIX.to_owned(),
            sharded: false,
        }
    }
}

impl SagaKeys {
    /// Uses another prefix for state keys (e.g. `{namespace}:saga:` to keep tests or
    /// tenants sharing a server apart).
    pub fn with_state_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.state_prefix = prefix.into();
        self
    }

    /// Shards the indexes, the deadline schedule and participants' records by the slot of
    /// each saga's state key (the Redis Cluster layout), or not (the single-node layout).
    pub fn sharded(mut self, sharded: bool) -> Self {
        self.sharded = sharded;
        self
    }

    /// Whether the layout is sharded by slot (Redis Cluster).
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// The state key prefix.
    pub fn state_prefix(&self) -> &str {
        &self.state_prefix
    }

    /// A saga's state: `saga:{saga_id}`.
    pub fn state(&self, saga_id: &str) -> String {
        format!("{}{saga_id}", self.state_prefix)
    }

    /// The hash tag of a saga's shard when sharded: a short tag in the slot of its state
    /// key. `None` on a single node.
    pub fn shard(&self, saga_id: &str) -> Option<&'static str> {
        self.sharded
            .then(|| slot::slot_tag(slot::slot_of(&self.state(saga_id))))
    }

    /// The set of saga ids in a status (single node): `{ns}:saga:index:{state}`.
    pub fn index(&self, status: SagaStatus) -> String {
        format!("{}:saga:index:{}", self.namespace, status.as_str())
    }

    /// The status index holding `saga_id`: [`SagaKeys::index`] on a single node, its shard
    /// `{ns}:saga:index:{state}:{tag}` when sharded.
    pub fn index_of(&self, status: SagaStatus, saga_id: &str) -> String {
        match self.shard(saga_id) {
            Some(tag) => self.index_shard(status, tag),
            None => self.index(status),
        }
    }

    /// One shard of a status index: `{ns}:saga:index:{state}:{tag}`.
    pub fn index_shard(&self, status: SagaStatus, tag: &str) -> String {
        format!("{}:{{{tag}}}", self.index(status))
    }

    /// The sorted set of saga deadlines (member: saga id, score: seconds since the epoch),
    /// single node: `{ns}:saga:deadlines`.
    pub fn deadlines(&self) -> String {
        format!("{}:saga:deadlines", self.namespace)
    }

    /// The deadline schedule holding `saga_id`: [`SagaKeys::deadlines`] on a single node,
    /// its shard `{ns}:saga:deadlines:{tag}` when sharded.
    pub fn deadlines_of(&self, saga_id: &str) -> String {
        match self.shard(saga_id) {
            Some(tag) => self.deadlines_shard(tag),
            None => self.deadlines(),
        }
    }

    /// One shard of the deadline schedule: `{ns}:saga:deadlines:{tag}`.
    pub fn deadlines_shard(&self, tag: &str) -> String {
        format!("{}:{{{tag}}}", self.deadlines())
    }

    /// The `SCAN` pattern of a status index's shards.
    pub fn index_shards_pattern(&self, status: SagaStatus) -> String {
        format!("{}:{{*}}", escape_glob(&self.index(status)))
    }

    /// The `SCAN` pattern of the deadline schedule's shards.
    pub fn deadlines_shards_pattern(&self) -> String {
        format!("{}:{{*}}", escape_glob(&self.deadlines()))
    }

    /// The tag of a shard key of this layout (`…:{tag}`), or `None`.
    pub fn parse_shard(key: &str) -> Option<&str> {
        let open = key.rfind(":{")?;
        let tag = key[open + 2..].strip_suffix('}')?;
        (!tag.is_empty() && !tag.contains(['{', '}'])).then_some(tag)
    }

    /// A participant's idempotency record: `{ns}:saga:step:{participant}:{saga_id}:{event_type}`
    /// on a single node, `{ns}:saga:step:{tag}:{participant}:{saga_id}:{event_type}` (the
    /// saga's shard tag) when sharded.
    pub fn step(&self, key: &StepKey) -> String {
        let shard = self
            .shard(&key.saga_id)
            .map(|tag| format!("{{{tag}}}:"))
            .unwrap_or_default();
        format!(
            "{}:saga:step:{shard}{}:{}:{}",
            self.namespace, key.participant, key.saga_id, key.event_type
        )
    }
}

/// `text` with Redis glob metacharacters escaped.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The consumer group of a service, by the article's convention: `{service}-consumers`.
///
/// ```
/// assert_eq!(eventbus_redis::group_for_service("billing"), "billing-consumers");
/// ```
pub fn group_for_service(service: &str) -> String {
    format!("{service}-consumers")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sagas_keys_share_the_slot_of_its_state_when_sharded() {
        let keys = Keys::new("ns").sagas();
        assert_eq!(keys.shard("s1"), None);
        assert_eq!(
            keys.step(&StepKey {
                participant: "p".into(),
                saga_id: "s1".into(),
                event_type: "E".into(),
            }),
            "ns:saga:step:p:s1:E"
        );
        let keys = keys.sharded(true);
        for id in ["s1", "0b0f3c2e-9d", "{x}y", "ord_42"] {
            let slot = slot::slot_of(&keys.state(id));
            let step = keys.step(&StepKey {
                participant: "inventory-{service}".into(),
                saga_id: id.into(),
                event_type: "ReserveInventory".into(),
            });
            for key in [
                keys.index_of(SagaStatus::Pending, id),
                keys.index_of(SagaStatus::Completed, id),
                keys.deadlines_of(id),
                step,
            ] {
                assert_eq!(slot::slot_of(&key), slot, "{key} and {}", keys.state(id));
            }
            let tag = keys.shard(id).unwrap();
            assert_eq!(SagaKeys::parse_shard(&keys.deadlines_of(id)), Some(tag));
        }
        assert_eq!(keys.state("s1"), "saga:s1");
        assert_eq!(keys.deadlines_shards_pattern(), "ns:saga:deadlines:{*}");
    }

    #[test]
    fn article_layout() {
        let keys = Keys::default();
        assert_eq!(keys.namespace(), "eventbus");
        assert_eq!(
            keys.stream(&Topic::of_type("OrderCreated")),
            "eventbus:stream:OrderCreated"
        );
        assert_eq!(
            keys.type_stream("OrderCreated"),
            "eventbus:stream:OrderCreated"
        );
        assert_eq!(keys.stream(&Topic::All), "eventbus:stream:all");
        assert_eq!(
            keys.dead_letters("billing-consumers"),
            "eventbus:dlq:billing-consumers"
        );
        assert_eq!(keys.stream_pattern(), "eventbus:stream:*");
        assert_eq!(
            group_for_service("order-service"),
            "order-service-consumers"
        );
    }

    #[test]
    fn aggregate_keys() {
        let keys = Keys::new("ns");
        assert_eq!(
            keys.aggregate_stream("Account", "a:1"),
            "ns:aggregate:Account:a:1"
        );
        assert_eq!(
            keys.aggregate_version("Account", "a:1"),
            "ns:aggregate-version:Account:a:1"
        );
        assert_eq!(
            keys.aggregate_snapshot("Account", "a1"),
            "ns:snapshot:Account:a1"
        );
        let tagged = [
            keys.aggregate_stream_tagged("p1", "Account", "a{1}"),
            keys.aggregate_version_tagged("p1", "Account", "a{1}"),
            keys.aggregate_snapshot_tagged("p1", "Account", "a{1}"),
        ];
        assert_eq!(tagged[0], "ns:aggregate:{p1}:Account:a{1}");
        use crate::partition::slot::slot_of;
        let slot = slot_of(&keys.partition_stream(&Topic::All, "p1"));
        for key in &tagged {
            assert_eq!(slot_of(key), slot, "{key}");
        }
        // Aggregate keys are not topics.
        assert_eq!(keys.topic_of(&keys.aggregate_stream("Account", "a1")), None);
    }

    #[test]
    fn keys_parse_back_to_topics() {
        let keys = Keys::new("test:ns");
        for topic in [
            Topic::of_type("Order.Created"),
            Topic::of_type("a:b"),
            Topic::All,
            Topic::Named("cmd:billing".into()),
            Topic::Named("reply:caller-1".into()),
        ] {
            assert_eq!(keys.topic_of(&keys.stream(&topic)), Some(topic));
        }
        assert_eq!(keys.topic_of("test:ns:dlq:g"), None);
        assert_eq!(keys.topic_of("test:ns:stream:"), None);
        assert_eq!(keys.topic_of("other:stream:X"), None);
    }

    #[test]
    fn partition_keys_share_their_tag() {
        let keys = Keys::new("ns");
        let t = Topic::of_type("Order.Created");
        let stream = keys.partition_stream(&t, "p2.7");
        assert_eq!(stream, "ns:stream:Order.Created:{p2.7}");
        assert_eq!(
            keys.partition_dead_letters("g", Some("p2.7")),
            "ns:dlq:g:{p2.7}"
        );
        assert_eq!(keys.partition_dead_letters("g", None), "ns:dlq:g");
        assert_eq!(
            keys.parse_stream(&stream),
            Some((t.clone(), Some("p2.7".into())))
        );
        assert_eq!(
            keys.parse_stream(&keys.partition_stream(&Topic::All, "p0")),
            Some((Topic::All, Some("p0".into())))
        );
        assert_eq!(
            keys.parse_stream("ns:stream:X"),
            Some((Topic::of_type("X"), None))
        );
        assert_eq!(keys.parse_stream("ns:dlq:g:{p1}"), None);
        use crate::partition::slot::slot_of;
        assert_eq!(
            slot_of(&stream),
            slot_of(&keys.partition_stream(&Topic::All, "p2.7"))
        );
        assert_eq!(
            slot_of(&stream),
            slot_of(&keys.partition_dead_letters("billing", Some("p2.7")))
        );
    }

    #[test]
    fn a_named_stream_and_its_dead_letters_share_its_tag() {
        let keys = Keys::new("ns");
        let topic = Topic::Named("cmd:billing".into());
        let stream = keys.partition_stream(&topic, "cmd:billing");
        assert_eq!(stream, "ns:stream:cmd:billing:{cmd:billing}");
        let dlq = keys.partition_dead_letters("billing-commands", Some("cmd:billing"));
        assert_eq!(dlq, "ns:dlq:billing-commands:{cmd:billing}");
        use crate::partition::slot::slot_of;
        assert_eq!(slot_of(&stream), slot_of(&dlq));
        assert_eq!(
            keys.parse_stream(&stream),
            Some((topic, Some("cmd:billing".into())))
        );
        assert!(is_named("cmd:billing") && is_named("reply:i-1"));
        assert!(!is_named("p3.41"));
    }

    #[test]
    fn channels() {
        let keys = Keys::new("ns");
        assert_eq!(keys.channel("Order.Created"), "events:Order.Created");
        assert_eq!(
            keys.event_type_of_channel("events:Order.Created"),
            Some("Order.Created")
        );
        assert_eq!(keys.event_type_of_channel("events:"), None);
        assert_eq!(keys.event_type_of_channel("other:X"), None);
        let keys = keys.with_channel_prefix("t[1]:");
        assert_eq!(keys.channel("X"), "t[1]:X");
        let glob = |p: &str| keys.channel_glob(&Pattern::parse(p).unwrap());
        assert_eq!(glob("*.Failed"), "t\\[1\\]:*.Failed");
        assert_eq!(glob("**"), "t\\[1\\]:*");
        assert_eq!(glob("*.**.*"), "t\\[1\\]:*");
        assert_eq!(glob("a?.*"), "t\\[1\\]:a\\?.*");
    }

    #[test]
    fn pattern_escapes_glob_characters() {
        assert_eq!(
            Keys::new("a*b[1]").stream_pattern(),
            "a\\*b\\[1\\]:stream:*"
        );
    }
}
