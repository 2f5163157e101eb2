//! [`MemoryReadModels`]: read models in process memory, with the Redis store's semantics.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use async_trait::async_trait;

use crate::error::{Result, TransportError, TransportErrorKind};
use crate::projection::{Commit, CommitTarget, Committed, ReadModelStore, RebuildStep};
use crate::transport::memory::models::id_le;
use crate::transport::memory::MemoryTransport;
use crate::transport::Topic;

/// A stored value, as Redis types it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Hash(BTreeMap<String, String>),
    List(VecDeque<String>),
    Set(BTreeSet<String>),
    Str(String),
}

/// What the store keeps about one projection.
#[derive(Debug, Default)]
struct Meta {
    checkpoint: HashMap<Topic, String>,
    rebuild_checkpoint: HashMap<Topic, String>,
    keys: BTreeSet<String>,
    rebuild_keys: BTreeSet<String>,
    rebuilt_upto: HashMap<Topic, String>,
}

/// The read models of one [`MemoryTransport`].
#[derive(Debug, Default)]
pub(crate) struct ModelState {
    values: HashMap<String, Value>,
    meta: HashMap<String, Meta>,
}

/// Read models in memory, sharing a [`MemoryTransport`]'s groups: a commit acknowledges the
/// entry under the same lock that applies the writes. Made by
/// [`MemoryTransport::read_models`]; clones and every handle of one transport share the
/// same read models.
///
/// Writes follow Redis semantics (`HINCRBY` on a non-integer fails, `WRONGTYPE` on a key of
/// another type), and a commit that fails writes nothing.
#[derive(Debug, Clone)]
pub struct MemoryReadModels {
    transport: MemoryTransport,
    prefix: String,
}

fn shadow(projection: &str, key: &str) -> String {
    format!("\u{0}rebuild:{projection}:{key}")
}

fn failure(operation: &str, message: String) -> crate::Error {
    TransportError::new(TransportErrorKind::Other, "memory", operation, message).into()
}

impl MemoryReadModels {
    pub(crate) fn new(transport: MemoryTransport) -> Self {
        MemoryReadModels {
            transport,
            prefix: String::new(),
        }
    }

    /// Puts `prefix` in front of every read-model key (none by default).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Applies Redis commands (as built by `ReadModelOp::to_commands`) to `values`.
fn apply(values: &mut HashMap<String, Value>, cmd: &[String]) -> Result<()> {
    let [name, key, args @ ..] = cmd else {
        return Ok(());
    };
    let wrong = || failure(name, format!("WRONGTYPE {key} holds another kind of value"));
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| failure(name, format!("value of {key} is not an integer")))
    };
    match name.as_str() {
        "DEL" => {
            values.remove(key);
        }
        "HSET" | "HINCRBY" | "HINCRBYFLOAT" | "HDEL" => {
            let entry = values
                .entry(key.clone())
                .or_insert_with(|| Value::Hash(BTreeMap::new()));
            let Value::Hash(h) = entry else {
                return Err(wrong());
            };
            match (name.as_str(), args) {
                ("HSET", pairs) => {
                    for pair in pairs.chunks(2) {
                        if let [f, v] = pair {
                            h.insert(f.clone(), v.clone());
                        }
                    }
                }
                ("HINCRBY", [f, by]) => {
                    let now = int(h.get(f).map_or("0", String::as_str))? + int(by)?;
                    h.insert(f.clone(), now.to_string());
                }
                ("HINCRBYFLOAT", [f, by]) => {
                    let num = |s: &str| {
                        s.parse::<f64>()
                            .map_err(|_| failure(name, format!("value of {key} is not a float")))
                    };
                    let now = num(h.get(f).map_or("0", String::as_str))? + num(by)?;
                    h.insert(f.clone(), redis_float(now));
                }
                ("HDEL", fields) => {
                    for f in fields {
                        h.remove(f);
                    }
                }
                _ => return Err(failure(name, "wrong number of arguments".into())),
            }
            if h.is_empty() {
                values.remove(key);
            }
        }
        "LPUSH" | "RPUSH" | "LTRIM" | "LREM" => {
            let entry = values
                .entry(key.clone())
                .or_insert_with(|| Value::List(VecDeque::new()));
            let Value::List(l) = entry else {
                return Err(wrong());
            };
            match (name.as_str(), args) {
                ("LPUSH", vals) => vals.iter().for_each(|v| l.push_front(v.clone())),
                ("RPUSH", vals) => vals.iter().for_each(|v| l.push_back(v.clone())),
                ("LTRIM", [start, stop]) => {
                    let (start, stop) = (int(start)?, int(stop)?);
                    let len = l.len() as i64;
                    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
                    let (s, e) = (norm(start), norm(stop).min(len - 1));
                    if s > e {
                        l.clear();
                    } else {
                        l.truncate(e as usize + 1);
                        l.drain(..s as usize);
                    }
                }
                ("LREM", [_, value]) => l.retain(|v| v != value),
                _ => return Err(failure(name, "wrong number of arguments".into())),
            }
            if l.is_empty() {
                values.remove(key);
            }
        }
        "SADD" | "SREM" => {
            let entry = values
                .entry(key.clone())
                .or_insert_with(|| Value::Set(BTreeSet::new()));
            let Value::Set(s) = entry else {
                return Err(wrong());
            };
            for m in args {
                if name == "SADD" {
                    s.insert(m.clone());
                } else {
                    s.remove(m);
                }
            }
            if s.is_empty() {
                values.remove(key);
            }
        }
        "INCRBY" => {
            let [by] = args else {
                return Err(failure(name, "wrong number of arguments".into()));
            };
            let now = match values.get(key) {
                None => 0,
                Some(Value::Str(s)) => int(s)?,
                Some(_) => return Err(wrong()),
            } + int(by)?;
            values.insert(key.clone(), Value::Str(now.to_string()));
        }
        other => return Err(failure(other, "unsupported command".into())),
    }
    Ok(())
}

/// Formats a float as `HINCRBYFLOAT` replies: no exponent, no trailing zeros.
fn redis_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e17 {
        format!("{v:.0}")
    } else {
        v.to_string()
    }
}

#[async_trait]
impl ReadModelStore for MemoryReadModels {
    async fn commit(&self, commit: Commit) -> Result<Committed> {
        let mut models = self.transport.models();
        let models = &mut *models;
        let meta = models.meta.entry(commit.projection.clone()).or_default();
        let live = commit.target == CommitTarget::Live;
        let superseded = live
            && meta
                .rebuilt_upto
                .get(&commit.topic)
                .is_some_and(|upto| id_le(&commit.entry_id, upto));
        // Apply to copies of the touched keys first (`None`: deleted): a failing write then
        // changes nothing.
        let mut touched: HashMap<String, Option<Value>> = HashMap::new();
        let mut written = Vec::new();
        if !superseded {
            for op in &commit.ops {
                let own = self.key(op.key());
                let target = if live {
                    own.clone()
                } else {
                    shadow(&commit.projection, &own)
                };
                for mut cmd in op.to_commands() {
                    if cmd.len() > 1 {
                        cmd[1] = target.clone();
                    }
                    let current = match touched.get(&target) {
                        Some(v) => v.clone(),
                        None => models.values.get(&target).cloned(),
                    };
                    let mut scratch: HashMap<String, Value> =
                        current.map(|v| (target.clone(), v)).into_iter().collect();
                    apply(&mut scratch, &cmd)?;
                    touched.insert(target.clone(), scratch.remove(&target));
                }
                written.push(own);
            }
        }
        if !self.transport.ack_if_pending(
            &commit.topic,
            &commit.group,
            &commit.consumer,
            &commit.entry_id,
        )? {
            return Ok(Committed::NotPending);
        }
        if superseded {
            return Ok(Committed::Superseded);
        }
        for (key, value) in touched {
            match value {
                Some(v) => models.values.insert(key, v),
                None => models.values.remove(&key),
            };
        }
        let (checkpoint, keys) = if live {
            (&mut meta.checkpoint, &mut meta.keys)
        } else {
            (&mut meta.rebuild_checkpoint, &mut meta.rebuild_keys)
        };
        keys.extend(written);
        let cp = checkpoint.entry(commit.topic.clone()).or_default();
        if !id_le(&commit.entry_id, cp) {
            *cp = commit.entry_id.clone();
        }
        Ok(Committed::Applied)
    }

    async fn hash(&self, key: &str) -> Result<Option<BTreeMap<String, String>>> {
        match self.transport.models().values.get(&self.key(key)) {
            None => Ok(None),
            Some(Value::Hash(h)) => Ok(Some(h.clone())),
            Some(_) => Err(failure("HGETALL", format!("WRONGTYPE {key} is not a hash"))),
        }
    }

    async fn list(&self, key: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        match self.transport.models().values.get(&self.key(key)) {
            None => Ok(Vec::new()),
            Some(Value::List(l)) => {
                let len = l.len() as i64;
                let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
                let (s, e) = (norm(start), norm(stop).min(len - 1));
                Ok(if s > e {
                    Vec::new()
                } else {
                    l.range(s as usize..=e as usize).cloned().collect()
                })
            }
            Some(_) => Err(failure("LRANGE", format!("WRONGTYPE {key} is not a list"))),
        }
    }

    async fn members(&self, key: &str) -> Result<BTreeSet<String>> {
        match self.transport.models().values.get(&self.key(key)) {
            None => Ok(BTreeSet::new()),
            Some(Value::Set(s)) => Ok(s.clone()),
            Some(_) => Err(failure("SMEMBERS", format!("WRONGTYPE {key} is not a set"))),
        }
    }

    async fn counter(&self, key: &str) -> Result<Option<i64>> {
        match self.transport.models().values.get(&self.key(key)) {
            None => Ok(None),
            Some(Value::Str(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| failure("GET", format!("{key} is not an integer"))),
            Some(_) => Err(failure("GET", format!("WRONGTYPE {key} is not a counter"))),
        }
    }

    async fn begin_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> Result<()> {
        for topic in topics {
            self.transport.destroy_group(topic, rebuild_group);
        }
        let mut models = self.transport.models();
        let prefix = shadow(projection, "");
        models.values.retain(|k, _| !k.starts_with(&prefix));
        let meta = models.meta.entry(projection.to_owned()).or_default();
        meta.rebuild_keys.clear();
        meta.rebuild_checkpoint.clear();
        Ok(())
    }

    async fn finish_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> Result<RebuildStep> {
        let mut models = self.transport.models();
        let models = &mut *models;
        let meta = models.meta.entry(projection.to_owned()).or_default();
        for topic in topics {
            if self.transport.pending_count(topic, rebuild_group) > 0 {
                return Ok(RebuildStep::Behind);
            }
            let rebuilt = meta
                .rebuild_checkpoint
                .get(topic)
                .map_or("0-0", String::as_str);
            let live = meta.checkpoint.get(topic).map_or("0-0", String::as_str);
            if !id_le(live, rebuilt) {
                return Ok(RebuildStep::Behind);
            }
        }
        for key in meta.keys.difference(&meta.rebuild_keys) {
            models.values.remove(key);
        }
        for key in &meta.rebuild_keys {
            match models.values.remove(&shadow(projection, key)) {
                Some(v) => models.values.insert(key.clone(), v),
                None => models.values.remove(key),
            };
        }
        meta.keys = std::mem::take(&mut meta.rebuild_keys);
        for topic in topics {
            let rebuilt = meta.rebuild_checkpoint.remove(topic).unwrap_or_default();
            meta.rebuilt_upto.insert(topic.clone(), rebuilt.clone());
            let live = meta.checkpoint.entry(topic.clone()).or_default();
            if id_le(live, &rebuilt) {
                *live = rebuilt;
            }
            self.transport.destroy_group(topic, rebuild_group);
        }
        Ok(RebuildStep::Swapped)
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
