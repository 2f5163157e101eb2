//! Rebuilding a projection that reads partitioned topics (every topic on a cluster): the
//! switch-over to the rebuilt model in steps of bounded work.
//!
//! The rebuild itself writes shadow keys as any commit writes (module `commit`), each shadow
//! in its read-model key's slot (see [`Keys::projection_shadow`]). Switching readers over
//! can't be one script there — the keys lie in many slots, and a model of a million keys
//! would stall a shard — so it goes in steps, each one script doing the work of one
//! partition or of at most [`BATCH`] keys of one slot:
//!
//! 1. The finisher takes the projection's lease over (script `TAKE_OVER`): the live instance
//!    stops applying (its next commit finds the lease lost; on a cluster the finisher's new
//!    epoch raises the fence of every slot the projection writes in, so that no write of
//!    the old holder lands after that).
//! 2. It checks, per partition, that the rebuild has read everything and the live
//!    projection applied nothing past it (else `Behind`: the rebuild catches up while the
//!    live projection stays paused, at most [`SWITCH_LEASE`] without a renewal).
//! 3. It records the switch-over next to the lease (the record's group, and where its
//!    partitions are); from here on whoever holds the lease completes it before applying
//!    anything, so a finisher that dies halfway leaves no mixed model behind for long.
//! 4. Per partition, it marks what the rebuild covered (the live projection will only
//!    acknowledge those entries); per slot, it deletes the live keys the new model lacks,
//!    then renames each shadow over its key; then it deletes the rebuild's state and ends
//!    the record, releasing the lease. Every step is idempotent, so a completion can start
//!    over from the top.
//!
//! Each step checks the lease first (on a cluster: its slot's fence), so a finisher that
//! lost the lease while paused changes nothing more.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use eventbus_core::projection::RebuildStep;
use eventbus_core::transport::Topic;
use eventbus_core::Result as CoreResult;
use futures_util::{StreamExt, TryStreamExt};

use super::{field_of, rebuild_scripts as scripts, RedisReadModels};
use crate::keys::Keys;
use crate::partition::{slot, Directory};
use crate::reply;

/// Read-model keys one switch-over script handles at most.
const BATCH: usize = 256;

/// Slots switched (or cleared) at once.
const SLOTS_AT_ONCE: usize = 16;

/// How long the lease a rebuild's switch-over holds lasts without a renewal (the live
/// projection stays paused at most this long after a finisher died before step 3).
pub(super) const SWITCH_LEASE: Duration = Duration::from_secs(10);

/// One partition stream a switch-over marks and cleans up.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct SwitchPart {
    /// The checkpoint field (the topic).
    field: String,
    /// The partition stream.
    pub(super) stream: String,
    /// The partition's hash tag, if any.
    tag: Option<String>,
}

/// Who runs a switch-over, with what right.
struct Holder<'a> {
    projection: &'a str,
    token: &'a str,
    /// The lease's epoch on a cluster.
    epoch: Option<u64>,
    /// When the lease was last renewed (asked for).
    renewed: std::sync::Mutex<Instant>,
}

impl RedisReadModels {
    /// Drops what an earlier rebuild left (completing its switch-over first, if one is
    /// unfinished): the shadow keys, registries and markers in every slot, the rebuild
    /// checkpoints and groups.
    pub(super) async fn begin_in_steps(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> CoreResult<()> {
        self.settle_switch(projection).await?;
        let keys = &self.inner.keys;
        let slots = self.model_slots(projection).await?;
        let steps = slots
            .iter()
            .map(|tag| self.clear_slot(projection, tag.as_deref()))
            .collect();
        self.each_slot(steps).await?;
        for part in self.switch_parts(topics).await? {
            let checkpoint = Keys::in_slot_of(
                keys.projection_checkpoint(projection, true),
                part.tag.as_deref(),
            );
            self.query::<i64>(redis::cmd("HDEL").arg(checkpoint).arg(&part.field), "HDEL")
                .await?;
            let exists: bool = self
                .query(redis::cmd("EXISTS").arg(&part.stream), "EXISTS")
                .await?;
            if exists {
                self.query::<i64>(
                    redis::cmd("XGROUP")
                        .arg("DESTROY")
                        .arg(&part.stream)
                        .arg(rebuild_group),
                    "XGROUP DESTROY",
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Switches readers to the rebuilt model in steps (see the module documentation).
    pub(super) async fn finish_in_steps(
        &self,
        projection: &str,
        rebuild_group: &str,
        topics: &[Topic],
    ) -> CoreResult<RebuildStep> {
        let token = format!("rebuild:{}", uuid::Uuid::new_v4());
        let keys = &self.inner.keys;
        let taken: i64 = scripts::TAKE_OVER
            .key(keys.projection_lease(projection))
            .key(keys.projection_swap(projection))
            .arg(&token)
            .arg(SWITCH_LEASE.as_millis() as u64)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (take over)", None))?;
        match taken {
            0 => return Ok(RebuildStep::Behind),
            5 => self.complete_recorded(projection, &token, false).await?,
            _ => {}
        }
        let parts = self.switch_parts(topics).await?;
        let holder = self.holder(projection, &token, &parts).await?;
        for part in &parts {
            let ready: i64 = scripts::SWITCH_READY
                .key(&part.stream)
                .key(Keys::in_slot_of(
                    keys.projection_checkpoint(projection, false),
                    part.tag.as_deref(),
                ))
                .key(Keys::in_slot_of(
                    keys.projection_checkpoint(projection, true),
                    part.tag.as_deref(),
                ))
                .arg(rebuild_group)
                .arg(&part.field)
                .invoke_async(&mut self.inner.conn.clone())
                .await
                .map_err(|e| self.inner.server.error(&e, "EVALSHA (switch ready)", None))?;
            if ready == 0 {
                // The live projection stays paused until the lease lapses or the rebuild,
                // caught up, takes it over again.
                return Ok(RebuildStep::Behind);
            }
        }
        let recorded: i64 = scripts::SWITCH_BEGIN
            .key(keys.projection_lease(projection))
            .key(keys.projection_swap(projection))
            .arg(&token)
            .arg(rebuild_group)
            .arg(serde_json::to_string(&parts).unwrap_or_default())
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (switch begin)", None))?;
        if recorded == 0 {
            return Ok(RebuildStep::Behind);
        }
        self.complete(&holder, rebuild_group, &parts, true).await?;
        tracing::info!(projection, "rebuild switched over in steps");
        Ok(RebuildStep::Swapped)
    }

    /// Completes the recorded switch-over of `projection`, whose lease is held with `token`
    /// (keeping it when `release` is false).
    pub(super) async fn complete_recorded(
        &self,
        projection: &str,
        token: &str,
        release: bool,
    ) -> CoreResult<()> {
        let record: std::collections::HashMap<String, String> = self
            .query(
                redis::cmd("HGETALL").arg(self.inner.keys.projection_swap(projection)),
                "HGETALL",
            )
            .await?;
        let (Some(group), Some(parts)) = (record.get("group"), record.get("topics")) else {
            return Ok(());
        };
        let parts: Vec<SwitchPart> = serde_json::from_str(parts).map_err(|e| {
            self.inner
                .server
                .protocol("rebuild switch-over record", e.to_string())
        })?;
        tracing::warn!(projection, "completing a rebuild's unfinished switch-over");
        let holder = self.holder(projection, token, &parts).await?;
        self.complete(&holder, group, &parts, release).await
    }

    /// Completes an unfinished switch-over of `projection` if there is one (taking the lease
    /// for it), waiting while another holder completes it.
    async fn settle_switch(&self, projection: &str) -> CoreResult<()> {
        let keys = &self.inner.keys;
        let token = format!("rebuild:{}", uuid::Uuid::new_v4());
        let deadline = Instant::now() + 3 * SWITCH_LEASE;
        loop {
            let unfinished: bool = self
                .query(
                    redis::cmd("EXISTS").arg(keys.projection_swap(projection)),
                    "EXISTS",
                )
                .await?;
            if !unfinished {
                return Ok(());
            }
            let flags = self.take_lease(projection, &token, SWITCH_LEASE).await?;
            if flags & 1 == 1 {
                return self.complete_recorded(projection, &token, true).await;
            }
            if Instant::now() > deadline {
                return Err(self.inner.server.protocol(
                    "begin rebuild",
                    "another instance holds the projection's lease and has not completed the \
                     last rebuild's switch-over",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The right to run a switch-over: on a cluster, the lease's epoch, with the fence of
    /// every slot the projection writes in (its partitions' and its read models') raised to
    /// it.
    async fn holder<'a>(
        &self,
        projection: &'a str,
        token: &'a str,
        parts: &[SwitchPart],
    ) -> CoreResult<Holder<'a>> {
        let mut holder = Holder {
            projection,
            token,
            epoch: None,
            renewed: std::sync::Mutex::new(Instant::now()),
        };
        if self.inner.config.is_cluster() {
            let Some(epoch) = self.epoch_of(projection, token).await? else {
                return Err(self.lease_lost());
            };
            holder.epoch = Some(epoch);
            let mut tags: BTreeSet<String> = parts
                .iter()
                .map(|p| slot::slot_tag(slot::slot_of(&p.stream)).to_owned())
                .collect();
            tags.extend(self.model_slots(projection).await?.into_iter().flatten());
            self.raise_fence_tags(projection, epoch, &tags).await?;
        }
        Ok(holder)
    }

    /// Steps 4 of the module documentation.
    async fn complete(
        &self,
        holder: &Holder<'_>,
        rebuild_group: &str,
        parts: &[SwitchPart],
        release: bool,
    ) -> CoreResult<()> {
        let keys = &self.inner.keys;
        let projection = holder.projection;
        for part in parts {
            let tag = part.tag.as_deref();
            let mut invocation = scripts::SWITCH_MARK.prepare_invoke();
            invocation
                .key(self.guard(holder, &part.stream))
                .key(Keys::in_slot_of(
                    keys.projection_checkpoint(projection, false),
                    tag,
                ))
                .key(Keys::in_slot_of(
                    keys.projection_checkpoint(projection, true),
                    tag,
                ))
                .key(Keys::in_slot_of(keys.projection_rebuilt(projection), tag))
                .arg(holder.token)
                .arg(epoch_arg(holder))
                .arg(&part.field);
            self.guarded(&invocation, "EVALSHA (switch mark)").await?;
        }
        let slots = self.model_slots(projection).await?;
        let steps = slots
            .iter()
            .map(|tag| self.switch_slot(holder, tag.as_deref()))
            .collect();
        self.each_slot(steps).await?;
        for part in parts {
            let mut invocation = scripts::SWITCH_CLEAN_PART.prepare_invoke();
            invocation
                .key(self.guard(holder, &part.stream))
                .key(&part.stream)
                .key(Keys::in_slot_of(
                    keys.projection_checkpoint(projection, true),
                    part.tag.as_deref(),
                ))
                .arg(holder.token)
                .arg(epoch_arg(holder))
                .arg(rebuild_group)
                .arg(&part.field);
            self.guarded(&invocation, "EVALSHA (switch clean)").await?;
        }
        let ended: i64 = scripts::SWITCH_END
            .key(keys.projection_lease(projection))
            .key(keys.projection_swap(projection))
            .arg(holder.token)
            .arg(if release { "1" } else { "0" })
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, "EVALSHA (switch end)", None))?;
        if ended == 0 {
            return Err(self.lease_lost());
        }
        if release {
            self.epochs_map()
                .remove(&super::epoch_key(projection, holder.token));
        }
        Ok(())
    }

    /// Runs `steps` (one per slot), [`SLOTS_AT_ONCE`] at a time.
    async fn each_slot(
        &self,
        steps: Vec<impl std::future::Future<Output = CoreResult<()>>>,
    ) -> CoreResult<()> {
        futures_util::stream::iter(steps)
            .buffer_unordered(SLOTS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Deletes an unfinished rebuild's shadow keys, registry and markers in one slot.
    async fn clear_slot(&self, projection: &str, tag: Option<&str>) -> CoreResult<()> {
        let keys = &self.inner.keys;
        let cluster = self.inner.config.is_cluster();
        let registry = Keys::in_slot_of(keys.projection_registry(projection, true), tag);
        let registry_ref = &registry;
        self.scan_set(&registry, |members| async move {
            let mut invocation = scripts::CLEAR_SHADOWS.prepare_invoke();
            invocation.key(registry_ref);
            for m in &members {
                invocation.key(keys.projection_shadow(projection, m, cluster));
                invocation.arg(m);
            }
            self.run(&invocation, "EVALSHA (clear shadows)").await?;
            Ok(())
        })
        .await?;
        let mut del = redis::cmd("DEL");
        del.arg(&registry);
        let _: i64 = self.query(&del, "DEL").await?;
        if let Some(tag) = tag {
            let markers = keys.projection_markers(projection, true, tag);
            let _: i64 = self.query(redis::cmd("DEL").arg(markers), "DEL").await?;
        }
        Ok(())
    }

    /// Switches one slot: deletes the live keys the new model lacks, renames the shadows
    /// over their keys, then deletes the slot's rebuild registry and markers.
    async fn switch_slot(&self, holder: &Holder<'_>, tag: Option<&str>) -> CoreResult<()> {
        let keys = &self.inner.keys;
        let projection = holder.projection;
        let cluster = self.inner.config.is_cluster();
        let live = Keys::in_slot_of(keys.projection_registry(projection, false), tag);
        let rebuilt = Keys::in_slot_of(keys.projection_registry(projection, true), tag);
        let guard = self.guard_of_slot(holder, tag);
        let (live_ref, rebuilt_ref, guard_ref) = (&live, &rebuilt, &guard);
        self.scan_set(&live, |members| async move {
            let mut invocation = scripts::SWITCH_DROP.prepare_invoke();
            invocation.key(guard_ref).key(live_ref).key(rebuilt_ref);
            for m in &members {
                invocation.key(m);
            }
            invocation.arg(holder.token).arg(epoch_arg(holder));
            self.guarded(&invocation, "EVALSHA (switch drop)").await?;
            self.renew(holder).await
        })
        .await?;
        self.scan_set(&rebuilt, |members| async move {
            let mut invocation = scripts::SWITCH_MOVE.prepare_invoke();
            invocation.key(guard_ref).key(live_ref);
            for m in &members {
                invocation
                    .key(m)
                    .key(keys.projection_shadow(projection, m, cluster));
            }
            invocation.arg(holder.token).arg(epoch_arg(holder));
            self.guarded(&invocation, "EVALSHA (switch move)").await?;
            self.renew(holder).await
        })
        .await?;
        let mut invocation = scripts::SWITCH_CLEAN_SLOT.prepare_invoke();
        invocation.key(&guard).key(&rebuilt);
        if let Some(tag) = tag {
            invocation
                .key(keys.projection_markers(projection, false, tag))
                .key(keys.projection_markers(projection, true, tag));
        }
        invocation.arg(holder.token).arg(epoch_arg(holder));
        self.guarded(&invocation, "EVALSHA (switch clean)").await?;
        self.renew(holder).await
    }

    /// Runs one guarded step; an error when the guard failed (the lease was lost).
    async fn guarded(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        operation: &str,
    ) -> CoreResult<()> {
        match self.run(invocation, operation).await? {
            3 => Err(self.lease_lost()),
            _ => Ok(()),
        }
    }

    /// Renews the switch-over's lease when a third of it has passed.
    async fn renew(&self, holder: &Holder<'_>) -> CoreResult<()> {
        let last = *holder.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < SWITCH_LEASE / 3 {
            return Ok(());
        }
        let asked = Instant::now();
        let flags = self
            .take_lease(holder.projection, holder.token, SWITCH_LEASE)
            .await?;
        if flags & 1 == 0 {
            return Err(self.lease_lost());
        }
        *holder.renewed.lock().unwrap_or_else(|e| e.into_inner()) = asked;
        Ok(())
    }

    /// The key guarding a step on the partition stream `stream`.
    fn guard(&self, holder: &Holder<'_>, stream: &str) -> String {
        self.guard_of_slot(holder, Some(slot::slot_tag(slot::slot_of(stream))))
    }

    /// The key guarding a step in the slot of `tag`: its fence on a cluster, else the lease.
    fn guard_of_slot(&self, holder: &Holder<'_>, tag: Option<&str>) -> String {
        match (holder.epoch, tag) {
            (Some(_), Some(tag)) => self.inner.keys.projection_fence(holder.projection, tag),
            _ => self.inner.keys.projection_lease(holder.projection),
        }
    }

    fn lease_lost(&self) -> eventbus_core::Error {
        self.inner.server.protocol(
            "rebuild switch-over",
            "the projection's lease was lost during the switch-over (paused longer than the \
             lease lasts?); its new holder completes the switch-over",
        )
    }

    /// The partition streams of `topics`.
    pub(super) async fn switch_parts(&self, topics: &[Topic]) -> CoreResult<Vec<SwitchPart>> {
        let mut parts = Vec::new();
        for topic in topics {
            let count = Directory::topic_count(&self.inner, topic).await?;
            for part in Directory::parts(&self.inner, topic, count).await? {
                parts.push(SwitchPart {
                    field: field_of(topic),
                    stream: part.key,
                    tag: part.tag,
                });
            }
        }
        Ok(parts)
    }

    /// The slots holding the projection's read-model state: on a cluster the short tags of
    /// the slots it wrote in; on a single node one place (`None`).
    async fn model_slots(&self, projection: &str) -> CoreResult<Vec<Option<String>>> {
        if !self.inner.config.is_cluster() {
            return Ok(vec![None]);
        }
        let tags: Vec<String> = self
            .query(
                redis::cmd("SMEMBERS").arg(self.inner.keys.projection_slots(projection)),
                "SMEMBERS",
            )
            .await?;
        Ok(tags.into_iter().map(Some).collect())
    }

    /// Calls `each` with the members of the set `key`, [`BATCH`] at a time (`SSCAN`; a
    /// member present throughout is seen at least once, even while `each` removes some).
    async fn scan_set<F, Fut>(&self, key: &str, mut each: F) -> CoreResult<()>
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = CoreResult<()>>,
    {
        let mut cursor = "0".to_owned();
        loop {
            let (next, members): (String, Vec<String>) = self
                .query(
                    redis::cmd("SSCAN")
                        .arg(key)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(BATCH),
                    "SSCAN",
                )
                .await?;
            for chunk in members.chunks(BATCH) {
                each(chunk.to_vec()).await?;
            }
            if next == "0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Runs a script that answers an integer.
    async fn run(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        operation: &str,
    ) -> CoreResult<i64> {
        let value: redis::Value = invocation
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| self.inner.server.error(&e, operation, None))?;
        reply::int(&value).ok_or_else(|| self.inner.server.protocol(operation, "unexpected reply"))
    }
}

/// The epoch argument of a guarded step (`''`: check the lease itself).
fn epoch_arg(holder: &Holder<'_>) -> String {
    holder.epoch.map(|e| e.to_string()).unwrap_or_default()
}
