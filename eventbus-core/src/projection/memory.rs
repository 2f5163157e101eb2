//! [`MemoryReadModels`]: read models in process memory, with the Redis store's semantics.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, Result, TransportError, TransportErrorKind};
use crate::memory::models::Value;
use crate::memory::{id_le, MemoryServer};
use crate::projection::{
    Commit, CommitTarget, Committed, ListEnd, ReadModelOp, ReadModelStore, RebuildStep,
};
use crate::transport::Topic;

/// Read models in memory, sharing a
/// [`MemoryTransport`](crate::transport::memory::MemoryTransport)'s groups: a commit
/// acknowledges the entry under the same lock that applies the writes. Made by
/// [`MemoryTransport::read_models`](crate::transport::memory::MemoryTransport::read_models);
/// clones and every handle of one transport share the same read models.
///
/// Writes follow Redis semantics (`HINCRBY` on a non-integer fails, `WRONGTYPE` on a key of
/// another type), and a commit that fails writes nothing.
#[derive(Debug, Clone)]
pub struct MemoryReadModels {
    server: Arc<MemoryServer>,
    prefix: String,
}

fn shadow(projection: &str, key: &str) -> String {
    format!("\u{0}rebuild:{projection}:{key}")
}

fn failure(operation: &str, message: String) -> crate::Error {
    TransportError::new(TransportErrorKind::Other, "memory", operation, message).into()
}

impl MemoryReadModels {
    /// The read models of `server`.
    pub(crate) fn new(server: Arc<MemoryServer>) -> Self {
        MemoryReadModels {
            server,
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

/// Applies one write to `values`, with the Redis store's semantics: a write to a key of
/// another kind fails (`WRONGTYPE`), an increment of a value that is not an integer fails,
/// an emptied hash, list or set disappears, and a write with nothing to write does nothing.
fn apply(values: &mut HashMap<String, Value>, op: &ReadModelOp) -> Result<()> {
    let key = op.key();
    let wrong = |what: &str| failure(what, format!("WRONGTYPE {key} holds another kind of value"));
    let int = |what: &str, s: &str| {
        redis_int(s).ok_or_else(|| failure(what, format!("value of {key} is not an integer")))
    };
    let add = |what: &str, a: i64, b: i64| {
        a.checked_add(b)
            .ok_or_else(|| failure(what, "increment or decrement would overflow".into()))
    };
    match op {
        ReadModelOp::HashSet { fields, .. } if fields.is_empty() => {}
        ReadModelOp::HashDel { fields, .. } if fields.is_empty() => {}
        ReadModelOp::ListPush { values: pushed, .. } if pushed.is_empty() => {}
        ReadModelOp::SetAdd { members, .. } | ReadModelOp::SetRemove { members, .. }
            if members.is_empty() => {}
        ReadModelOp::Delete { .. } => {
            values.remove(key);
        }
        ReadModelOp::HashSet { .. }
        | ReadModelOp::HashIncr { .. }
        | ReadModelOp::HashIncrFloat { .. }
        | ReadModelOp::HashDel { .. } => {
            let what = "hash write";
            let entry = values
                .entry(key.to_owned())
                .or_insert_with(|| Value::Hash(BTreeMap::new()));
            let Value::Hash(h) = entry else {
                return Err(wrong(what));
            };
            match op {
                ReadModelOp::HashSet { fields, .. } => {
                    for (f, v) in fields {
                        h.insert(f.clone(), v.clone());
                    }
                }
                ReadModelOp::HashIncr { field, by, .. } => {
                    let current = int(what, h.get(field).map_or("0", String::as_str))?;
                    let now = add(what, current, *by)?;
                    h.insert(field.clone(), now.to_string());
                }
                ReadModelOp::HashIncrFloat { field, by, .. } => {
                    let current = h.get(field).map_or("0", String::as_str);
                    let current = current
                        .parse::<f64>()
                        .map_err(|_| failure(what, format!("value of {key} is not a float")))?;
                    let now = current + by;
                    if !now.is_finite() {
                        return Err(failure(
                            what,
                            "increment would produce NaN or Infinity".into(),
                        ));
                    }
                    h.insert(field.clone(), redis_float(now));
                }
                ReadModelOp::HashDel { fields, .. } => {
                    for f in fields {
                        h.remove(f);
                    }
                }
                _ => {}
            }
            if h.is_empty() {
                values.remove(key);
            }
        }
        ReadModelOp::ListPush { .. } | ReadModelOp::ListRemove { .. } => {
            let entry = values
                .entry(key.to_owned())
                .or_insert_with(|| Value::List(VecDeque::new()));
            let Value::List(l) = entry else {
                return Err(wrong("list write"));
            };
            match op {
                ReadModelOp::ListPush {
                    values: pushed,
                    end,
                    max_len,
                    ..
                } => {
                    match end {
                        ListEnd::Front => pushed.iter().for_each(|v| l.push_front(v.clone())),
                        ListEnd::Back => pushed.iter().for_each(|v| l.push_back(v.clone())),
                    }
                    if let Some(max) = max_len {
                        // Keep the `max` values nearest the end pushed to (`LTRIM`).
                        let (start, stop) = match end {
                            ListEnd::Front => (0, *max as i64 - 1),
                            ListEnd::Back => (-(*max as i64), -1),
                        };
                        trim(l, start, stop);
                    }
                }
                ReadModelOp::ListRemove { value, .. } => l.retain(|v| v != value),
                _ => {}
            }
            if l.is_empty() {
                values.remove(key);
            }
        }
        ReadModelOp::SetAdd { members, .. } | ReadModelOp::SetRemove { members, .. } => {
            let entry = values
                .entry(key.to_owned())
                .or_insert_with(|| Value::Set(BTreeSet::new()));
            let Value::Set(s) = entry else {
                return Err(wrong("set write"));
            };
            for m in members {
                if matches!(op, ReadModelOp::SetAdd { .. }) {
                    s.insert(m.clone());
                } else {
                    s.remove(m);
                }
            }
            if s.is_empty() {
                values.remove(key);
            }
        }
        ReadModelOp::Incr { by, .. } => {
            let what = "counter increment";
            let current = match values.get(key) {
                None => 0,
                Some(Value::Str(s)) => int(what, s)?,
                Some(_) => return Err(wrong(what)),
            };
            let now = add(what, current, *by)?;
            values.insert(key.to_owned(), Value::Str(now.to_string()));
        }
    }
    Ok(())
}

/// Keeps the values from `start` to `stop` (inclusive; negative counts from the end), the
/// way `LTRIM` does.
fn trim(l: &mut VecDeque<String>, start: i64, stop: i64) {
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

/// Parses an integer the way Redis does (`string2ll`): no sign `+`, no leading zeros, no
/// spaces, within 64 bits.
fn redis_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = s == "0"
        || (digits.starts_with(|c: char| ('1'..='9').contains(&c))
            && digits.bytes().all(|b| b.is_ascii_digit()));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
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
        let mut models = self.server.models();
        let models = &mut *models;
        let meta = models.meta.entry(commit.projection.clone()).or_default();
        if let Some(token) = &commit.lease {
            if !meta.leased_to(token) {
                return Ok(Committed::LeaseLost);
            }
        }
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
                let current = match touched.get(&target) {
                    Some(v) => v.clone(),
                    None => models.values.get(&target).cloned(),
                };
                let mut scratch: HashMap<String, Value> =
                    current.map(|v| (target.clone(), v)).into_iter().collect();
                let op = op.clone().with_key(target.clone());
                apply(&mut scratch, &op).map_err(|e| Error::ReadModelWrite {
                    key: own.clone(),
                    reason: e.to_string(),
                })?;
                touched.insert(target.clone(), scratch.remove(&target));
                written.push(own);
            }
        }
        if !self.server.ack_if_pending(
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

    async fn lease(&self, projection: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut models = self.server.models();
        let meta = models.meta.entry(projection.to_owned()).or_default();
        let now = Instant::now();
        let free = match &meta.lease {
            None => true,
            Some((holder, until)) => holder == token || *until <= now,
        };
        if free {
            meta.lease = Some((token.to_owned(), now + ttl));
        }
        Ok(free)
    }

    async fn release_lease(&self, projection: &str, token: &str) -> Result<()> {
        let mut models = self.server.models();
        if let Some(meta) = models.meta.get_mut(projection) {
            if meta
                .lease
                .as_ref()
                .is_some_and(|(holder, _)| holder == token)
            {
                meta.lease = None;
            }
        }
        Ok(())
    }

    async fn adopt_pending(&self, group: &str, consumer: &str, topics: &[Topic]) -> Result<u64> {
        Ok(topics
            .iter()
            .map(|topic| self.server.adopt_pending(topic, group, consumer))
            .sum())
    }

    async fn hash(&self, key: &str) -> Result<Option<BTreeMap<String, String>>> {
        match self.server.models().values.get(&self.key(key)) {
            None => Ok(None),
            Some(Value::Hash(h)) => Ok(Some(h.clone())),
            Some(_) => Err(failure(
                "hash read",
                format!("WRONGTYPE {key} is not a hash"),
            )),
        }
    }

    async fn list(&self, key: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        match self.server.models().values.get(&self.key(key)) {
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
            Some(_) => Err(failure(
                "list read",
                format!("WRONGTYPE {key} is not a list"),
            )),
        }
    }

    async fn members(&self, key: &str) -> Result<BTreeSet<String>> {
        match self.server.models().values.get(&self.key(key)) {
            None => Ok(BTreeSet::new()),
            Some(Value::Set(s)) => Ok(s.clone()),
            Some(_) => Err(failure("set read", format!("WRONGTYPE {key} is not a set"))),
        }
    }

    async fn counter(&self, key: &str) -> Result<Option<i64>> {
        match self.server.models().values.get(&self.key(key)) {
            None => Ok(None),
            Some(Value::Str(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| failure("counter read", format!("{key} is not an integer"))),
            Some(_) => Err(failure(
                "counter read",
                format!("WRONGTYPE {key} is not a counter"),
            )),
        }
    }

    async fn begin_rebuild(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> Result<()> {
        for topic in topics {
            self.server.destroy_group(topic, rebuild_group);
        }
        let mut models = self.server.models();
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
        let mut models = self.server.models();
        let models = &mut *models;
        let meta = models.meta.entry(projection.to_owned()).or_default();
        for topic in topics {
            if self.server.pending_count(topic, rebuild_group) > 0 {
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
            self.server.destroy_group(topic, rebuild_group);
        }
        Ok(RebuildStep::Swapped)
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::transport::memory::MemoryTransport;
    use crate::transport::{ConsumerSpec, StartFrom, StreamTransport};
    use crate::Envelope;

    #[tokio::test]
    async fn commits_once_while_pending_and_all_or_nothing() {
        let transport = MemoryTransport::new();
        let store = transport.read_models();
        let topic = Topic::of_type("T");
        transport
            .ensure_group(&topic, "g", StartFrom::Beginning)
            .await
            .unwrap();
        let event = Envelope::new("T", 1, "s", serde_json::json!({}));
        transport.publish(&[event]).await.unwrap();
        let spec = ConsumerSpec {
            group: "g".into(),
            consumer: "c".into(),
            topics: vec![topic.clone()],
        };
        let consumer = transport.consumer(spec).await.unwrap();
        let id = consumer
            .read(1, Duration::ZERO)
            .await
            .unwrap()
            .remove(0)
            .entry_id;
        let commit = |ops: Vec<ReadModelOp>| Commit {
            projection: "p".into(),
            group: "g".into(),
            consumer: "c".into(),
            topic: topic.clone(),
            entry_id: id.clone(),
            ops,
            target: CommitTarget::Live,
            lease: None,
        };
        let incr = ReadModelOp::HashIncr {
            key: "h".into(),
            field: "n".into(),
            by: 1,
        };
        let text = ReadModelOp::HashSet {
            key: "h".into(),
            fields: vec![("t".into(), "x".into())],
        };
        let bad = ReadModelOp::HashIncr {
            key: "h".into(),
            field: "t".into(),
            by: 1,
        };

        // A failing write leaves nothing behind, and the entry pending.
        let failing = store
            .commit(commit(vec![text.clone(), incr.clone(), bad]))
            .await;
        assert!(failing.is_err());
        assert_eq!(store.hash("h").await.unwrap(), None);
        assert_eq!(store.server.pending_count(&topic, "g"), 1);
        // Applied once; the same entry committed again writes nothing.
        let applied = store
            .commit(commit(vec![text.clone(), incr.clone()]))
            .await
            .unwrap();
        assert_eq!(applied, Committed::Applied);
        assert_eq!(
            store.commit(commit(vec![incr])).await.unwrap(),
            Committed::NotPending
        );
        let h = store.hash("h").await.unwrap().unwrap();
        assert_eq!(h.get("n").map(String::as_str), Some("1"));
        assert_eq!(store.server.pending_count(&topic, "g"), 0);
    }

    #[test]
    fn trims_and_floats_like_redis() {
        let mut values = HashMap::new();
        for v in ["a", "b", "c", "d"] {
            let push = ReadModelOp::ListPush {
                key: "l".into(),
                values: vec![v.into()],
                end: ListEnd::Front,
                max_len: Some(2),
            };
            apply(&mut values, &push).unwrap();
        }
        assert_eq!(
            values.get("l"),
            Some(&Value::List(["d", "c"].map(String::from).into()))
        );
        for by in [1.5, 0.5] {
            let incr = ReadModelOp::HashIncrFloat {
                key: "h".into(),
                field: "f".into(),
                by,
            };
            apply(&mut values, &incr).unwrap();
        }
        let Some(Value::Hash(h)) = values.get("h") else {
            panic!("not a hash")
        };
        assert_eq!(h.get("f").map(String::as_str), Some("2"));
        let add = ReadModelOp::SetAdd {
            key: "h".into(),
            members: vec!["x".into()],
        };
        assert!(apply(&mut values, &add).is_err());
    }
}
