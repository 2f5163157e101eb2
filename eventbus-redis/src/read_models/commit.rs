//! Committing one entry's read-model writes with its acknowledgement.
//!
//! On a single node one script, [`scripts::PROJECT`], checks that the entry is pending for
//! the committing consumer and the projection's lease is held, applies the writes, advances
//! the checkpoint, keeps the key registry, and acknowledges the entry: all or nothing.
//!
//! On a Redis Cluster the read-model keys keep the names the article gives them
//! (`orders:summary:ord_1`), so they lie in slots of their own, not in the entry's stream's.
//! The writes are grouped by slot. Each group commits in its slot together with a *marker*
//! of the entry (member `{stream}@{id}` of the slot's marker set), in one script,
//! [`scripts::PROJECT_SLOT`], which writes nothing when the marker is there already. Then
//! the stream's script acknowledges the entry, with the writes that fall in the stream's own
//! slot; the markers are removed after the acknowledgement. A commit interrupted between
//! the two (a crash, a failover) leaves the entry pending; when it is applied again, the
//! slots it reached skip it: every write is applied once. When more than one slot is
//! written, every slot first checks its writes would succeed (types, integer fields), so a
//! refused write changes nothing anywhere.
//!
//! Fencing on a cluster: the lease lives in one slot, the writes in others, so a script
//! can't check the lease next to the writes. Each new holder of a projection's lease takes
//! the next *epoch* of the projection; every slot keeps the highest epoch that wrote there
//! (its fence), and a commit of an earlier epoch (an instance paused past its lease) writes
//! nothing in a slot a later holder wrote in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventbus_core::projection::{Commit, CommitTarget, Committed, ReadModelOp};
use eventbus_core::{Error as CoreError, Result as CoreResult};
use futures_util::future::try_join_all;

use super::{encode, field_of, json, scripts, RedisReadModels};
use crate::keys::Keys;
use crate::partition::{slot, Directory};
use crate::reply;

/// How long a marker is kept at most: markers are removed once their entry is
/// acknowledged; one left by a crash between the acknowledgement and the removal goes
/// after this (an entry pending longer than this, unacknowledged, would be applied again).
pub(super) const MARKER_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The keys `PROJECT` takes before the read-model keys.
const PROJECT_FIXED_KEYS: usize = 5;

/// The keys `PROJECT_SLOT` takes before the read-model keys.
const SLOT_FIXED_KEYS: usize = 3;

/// One commit's writes to the keys of one slot.
#[derive(Debug, Default)]
struct SlotWrites {
    /// The slot; `None` on a single node (one group for everything).
    slot: Option<u16>,
    /// The keys written (a rebuild's shadow keys), in the order commands name them.
    targets: Vec<String>,
    /// The read model's own name of each target, for the key registry.
    written: Vec<String>,
    /// `[name, index of its key in targets, args…]`.
    commands: Vec<Vec<String>>,
}

impl SlotWrites {
    /// The commands as a script argument, each key named by its index in `KEYS` (the
    /// targets come after `fixed` keys).
    fn commands_json(&self, fixed: usize) -> String {
        let commands: Vec<Vec<String>> = self
            .commands
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if let Some(index) = c.get(1).and_then(|i| i.parse::<usize>().ok()) {
                    c[1] = (fixed + 1 + index).to_string();
                }
                c
            })
            .collect();
        json(&commands)
    }
}

/// The entry a commit is for, and where its stream is.
struct Entry<'a> {
    commit: &'a Commit,
    rebuild: bool,
    /// The partition stream holding it.
    stream: &'a str,
    /// The partition's hash tag (`None`: the unpartitioned layout).
    stream_tag: Option<&'a str>,
    /// On a cluster, the short tag of the stream's slot.
    slot_tag: Option<&'static str>,
    /// Its id in the stream.
    id: &'a str,
    /// The lease's epoch (cluster, with a lease).
    epoch: Option<u64>,
}

impl RedisReadModels {
    /// Commits `commit` (see the module documentation).
    pub(super) async fn commit_entry(&self, commit: Commit) -> CoreResult<Committed> {
        let inner = &self.inner;
        let cluster = inner.config.is_cluster();
        let rebuild = commit.target == CommitTarget::Rebuild;
        let (part, id) = Directory::entry_part(inner, &commit.topic, &commit.entry_id).await?;
        let stream_slot = cluster.then(|| slot::slot_of(&part.key));
        let mut groups = self.group(&commit, rebuild, cluster)?;
        let here = match groups.iter().position(|g| g.slot == stream_slot) {
            Some(i) => groups.swap_remove(i),
            None => SlotWrites {
                slot: stream_slot,
                ..SlotWrites::default()
            },
        };
        let elsewhere = groups;
        let epoch = match (&commit.lease, cluster) {
            (Some(token), true) => match self.epoch_of(&commit.projection, token).await? {
                Some(epoch) => Some(epoch),
                None => return Ok(Committed::LeaseLost),
            },
            _ => None,
        };
        let entry = Entry {
            commit: &commit,
            rebuild,
            stream: &part.key,
            stream_tag: part.tag.as_deref(),
            slot_tag: stream_slot.map(slot::slot_tag),
            id,
            epoch,
        };
        let marker = format!("{}@{id}", part.key);
        // On a cluster nothing is written in another slot unless the entry is pending for
        // this consumer (and not superseded), the lease is held, and every write would
        // succeed; all of that is checked at once.
        let lease_held = async {
            match (&commit.lease, cluster) {
                (Some(token), true) => self.lease_held(&commit.projection, token).await,
                _ => Ok(true),
            }
        };
        let entry_ready = async {
            if elsewhere.is_empty() {
                Ok(Committed::Applied)
            } else {
                self.project(&entry, &here, true).await
            }
        };
        let slots_ready = async {
            if elsewhere.len() > 1 {
                let checks = elsewhere
                    .iter()
                    .map(|g| self.commit_slot(&entry, g, &marker, true));
                Ok(try_join_all(checks)
                    .await?
                    .into_iter()
                    .all(|fenced| !fenced))
            } else {
                Ok(true)
            }
        };
        let recorded = self.record_slots(&commit.projection, &here, &elsewhere);
        let (held, ready, slots_ok, ()) =
            tokio::try_join!(lease_held, entry_ready, slots_ready, recorded)?;
        if !held || !slots_ok {
            return Ok(Committed::LeaseLost);
        }
        if ready != Committed::Applied {
            return Ok(ready);
        }
        let writes = elsewhere
            .iter()
            .map(|g| self.commit_slot(&entry, g, &marker, false));
        if try_join_all(writes).await?.into_iter().any(|fenced| fenced) {
            return Ok(Committed::LeaseLost);
        }
        let committed = self.project(&entry, &here, false).await?;
        if matches!(committed, Committed::Applied | Committed::Superseded) && !elsewhere.is_empty()
        {
            self.forget_markers(&commit.projection, rebuild, &elsewhere, marker);
        }
        Ok(committed)
    }

    /// On a cluster, adds the slots a commit writes read-model keys in to the projection's
    /// slot index (where a rebuild finds them) before anything is written there; once per
    /// slot and store.
    async fn record_slots(
        &self,
        projection: &str,
        here: &SlotWrites,
        elsewhere: &[SlotWrites],
    ) -> CoreResult<()> {
        let written = std::iter::once(here)
            .chain(elsewhere)
            .filter(|g| !g.targets.is_empty());
        let mut new = Vec::new();
        {
            let known = self.slots_known.lock().unwrap_or_else(|e| e.into_inner());
            for group in written {
                if let Some(slot) = group.slot {
                    let tag = slot::slot_tag(slot);
                    if !known.contains(&format!("{projection}\n{tag}")) {
                        new.push(tag);
                    }
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("SADD");
        cmd.arg(self.inner.keys.projection_slots(projection));
        for tag in &new {
            cmd.arg(*tag);
        }
        let _: i64 = self.query(&cmd, "SADD").await?;
        let mut known = self.slots_known.lock().unwrap_or_else(|e| e.into_inner());
        for tag in new {
            known.insert(format!("{projection}\n{tag}"));
        }
        Ok(())
    }

    /// Runs `PROJECT` in the stream's slot: the writes of `here` with the checkpoint and the
    /// acknowledgement, or (`check_only`) just whether they would commit.
    async fn project(
        &self,
        entry: &Entry<'_>,
        here: &SlotWrites,
        check_only: bool,
    ) -> CoreResult<Committed> {
        let inner = &self.inner;
        let keys = &inner.keys;
        let commit = entry.commit;
        let mut invocation = scripts::PROJECT.prepare_invoke();
        invocation
            .key(entry.stream)
            .key(Keys::in_slot_of(
                keys.projection_checkpoint(&commit.projection, entry.rebuild),
                entry.stream_tag,
            ))
            .key(Keys::in_slot_of(
                keys.projection_rebuilt(&commit.projection),
                entry.stream_tag,
            ))
            .key(Keys::in_slot_of(
                keys.projection_registry(&commit.projection, entry.rebuild),
                entry.slot_tag,
            ))
            .key(match entry.slot_tag {
                Some(tag) => keys.projection_fence(&commit.projection, tag),
                None => keys.projection_lease(&commit.projection),
            });
        for target in &here.targets {
            invocation.key(target);
        }
        invocation
            .arg(&commit.group)
            .arg(&commit.consumer)
            .arg(entry.id)
            .arg(field_of(&commit.topic))
            .arg(if entry.rebuild { "0" } else { "1" })
            .arg(commit.lease.as_deref().unwrap_or(""))
            .arg(here.commands_json(PROJECT_FIXED_KEYS))
            .arg(json(&here.written))
            .arg(entry.epoch.map(|e| e.to_string()).unwrap_or_default())
            .arg(if check_only { "1" } else { "0" });
        let outcome: redis::Value = invocation
            .invoke_async(&mut inner.conn.clone())
            .await
            .map_err(|e| {
                inner.server.error(
                    &e,
                    "EVALSHA (projection commit)",
                    Some((&commit.topic.to_string(), &commit.group)),
                )
            })?;
        match outcome {
            redis::Value::Int(1) => Ok(Committed::Applied),
            redis::Value::Int(2) => Ok(Committed::Superseded),
            redis::Value::Int(3) => Ok(Committed::LeaseLost),
            redis::Value::Int(_) => Ok(Committed::NotPending),
            refused => Err(self.refused(&commit.projection, &refused)),
        }
    }

    /// Groups a commit's writes by the slot of the key written (one group on a single node).
    fn group(&self, commit: &Commit, rebuild: bool, cluster: bool) -> CoreResult<Vec<SlotWrites>> {
        let keys = &self.inner.keys;
        let mut groups: Vec<SlotWrites> = Vec::new();
        for op in &commit.ops {
            let own = self.key(op.key());
            let target = if rebuild {
                keys.projection_shadow(&commit.projection, &own, cluster)
            } else {
                own.clone()
            };
            let slot = cluster.then(|| slot::slot_of(&target));
            let group = match groups.iter().position(|g| g.slot == slot) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(SlotWrites {
                        slot,
                        ..SlotWrites::default()
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            let index = match group.targets.iter().position(|t| *t == target) {
                Some(i) => i,
                None => {
                    group.targets.push(target);
                    group.written.push(own);
                    group.targets.len() - 1
                }
            };
            for mut c in encoded(op)? {
                if c.len() > 1 {
                    c[1] = index.to_string();
                }
                group.commands.push(c);
            }
        }
        Ok(groups)
    }

    /// Runs one slot's script: checks (`check_only`) or applies its writes with the entry's
    /// marker. `true` when a later holder of the lease wrote in the slot (nothing done).
    async fn commit_slot(
        &self,
        entry: &Entry<'_>,
        group: &SlotWrites,
        marker: &str,
        check_only: bool,
    ) -> CoreResult<bool> {
        let (commit, rebuild, epoch) = (entry.commit, entry.rebuild, entry.epoch);
        let keys = &self.inner.keys;
        let tag = slot::slot_tag(group.slot.unwrap_or(0));
        let mut invocation = scripts::PROJECT_SLOT.prepare_invoke();
        invocation
            .key(keys.projection_markers(&commit.projection, rebuild, tag))
            .key(Keys::in_slot_of(
                keys.projection_registry(&commit.projection, rebuild),
                Some(tag),
            ))
            .key(keys.projection_fence(&commit.projection, tag));
        for target in &group.targets {
            invocation.key(target);
        }
        invocation
            .arg(marker)
            .arg(epoch.map(|e| e.to_string()).unwrap_or_default())
            .arg(now_ms())
            .arg(MARKER_RETENTION.as_millis() as u64)
            .arg(group.commands_json(SLOT_FIXED_KEYS))
            .arg(json(&group.written))
            .arg(if check_only { "1" } else { "0" });
        let outcome: redis::Value = invocation
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| {
                self.inner.server.error(
                    &e,
                    "EVALSHA (projection commit, one slot)",
                    Some((&commit.topic.to_string(), &commit.group)),
                )
            })?;
        match outcome {
            redis::Value::Int(3) => Ok(true),
            redis::Value::Int(_) => Ok(false),
            refused => Err(self.refused(&commit.projection, &refused)),
        }
    }

    /// Removes an acknowledged entry's markers, in the background (one left behind is
    /// dropped after [`MARKER_RETENTION`]).
    fn forget_markers(
        &self,
        projection: &str,
        rebuild: bool,
        groups: &[SlotWrites],
        marker: String,
    ) {
        let conn = self.inner.conn.clone();
        let sets: Vec<String> = groups
            .iter()
            .map(|g| {
                let tag = slot::slot_tag(g.slot.unwrap_or(0));
                self.inner.keys.projection_markers(projection, rebuild, tag)
            })
            .collect();
        tokio::spawn(async move {
            let removals = sets.iter().map(|set| {
                let mut conn = conn.clone();
                let marker = marker.clone();
                async move {
                    redis::cmd("ZREM")
                        .arg(set)
                        .arg(marker)
                        .query_async::<i64>(&mut conn)
                        .await
                }
            });
            if let Err(e) = try_join_all(removals).await {
                tracing::debug!(error = %e, "cannot remove a projection's markers (they expire)");
            }
        });
    }

    /// The error of a refused write (`{4, key, reason}`), naming the read model's own key.
    fn refused(&self, projection: &str, reply: &redis::Value) -> CoreError {
        let shadow = self.inner.keys.projection_shadow_prefix(projection);
        let parts = reply::items(reply).unwrap_or(&[]);
        let text = |i: usize| parts.get(i).and_then(reply::text).unwrap_or_default();
        let key = text(1);
        let key = match key.strip_prefix(shadow.as_str()) {
            // A shadow key on a cluster: `{tag}:` before the key.
            Some(rest) if rest.starts_with('{') => rest.split_once("}:").map_or(rest, |(_, k)| k),
            Some(rest) => rest,
            None => &key,
        };
        let key = key
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(key)
            .to_owned();
        CoreError::ReadModelWrite {
            key,
            reason: text(2),
        }
    }
}

/// One operation as Redis commands.
fn encoded(op: &ReadModelOp) -> CoreResult<Vec<Vec<String>>> {
    encode::commands(op).map_err(|reason| CoreError::ReadModelWrite {
        key: op.key().to_owned(),
        reason,
    })
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
