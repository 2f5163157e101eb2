//! The Lua scripts of a rebuild's switch-over in steps (see [`super::rebuild`]): each does
//! the work of one partition or of a bounded batch of one slot's keys, and each is guarded
//! — it changes nothing unless its caller still holds the projection's lease (`GUARD`).

use std::sync::LazyLock;

use redis::Script;

use super::scripts::{FENCE, ID_LE};

/// Lua: `held(key, token, epoch)` — whether the switch-over may go on: with no epoch (a
/// single node) `key` is the projection's lease, held with `token`; with an epoch (a
/// cluster) `key` is the fence of the script's slot, not past `epoch`.
const GUARD: &str = r#"
local function held(key, token, epoch)
  if epoch == '' then return redis.call('GET', key) == token end
  return not fenced(key, epoch)
end
"#;

/// Takes a projection's lease over for a rebuild's switch-over, whoever holds it, unless
/// another holder is completing an unfinished switch-over.
///
/// `KEYS[1]` lease, `KEYS[2]` switch-over record; `ARGV` token, time to live (ms). Returns 0
/// (another holder is completing a switch-over), 1 (taken), 5 (taken, and a switch-over is
/// unfinished: complete it first).
pub(crate) static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
local unfinished = redis.call('EXISTS', KEYS[2]) == 1
if unfinished and holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if unfinished then return 5 end
return 1
"#,
    )
});

/// Whether a rebuild has caught up on one partition stream: its group has been delivered
/// the stream's last entry and has nothing pending, and the live projection applied nothing
/// past the rebuild. Changes nothing.
///
/// `KEYS[1]` stream, `KEYS[2]` checkpoint, `KEYS[3]` rebuild checkpoint (both of the
/// partition); `ARGV` rebuild group, checkpoint field. Returns 1 when caught up, else 0.
pub(crate) static SWITCH_READY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ID_LE}{}",
        r#"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  local delivered
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
  if type(groups) ~= 'table' or groups.err then return 0 end
  for _, g in ipairs(groups) do
    local name, id
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then id = g[i + 1] end
    end
    if name == ARGV[1] then delivered = id end
  end
  if not delivered or not le(last[1][1], delivered) then return 0 end
  if redis.call('XPENDING', KEYS[1], ARGV[1])[1] > 0 then return 0 end
end
local live = redis.call('HGET', KEYS[2], ARGV[2]) or '0-0'
local rebuilt = redis.call('HGET', KEYS[3], ARGV[2]) or '0-0'
if le(live, rebuilt) then return 1 end
return 0
"#
    ))
});

/// Starts a switch-over: records it (with the rebuild group and the topics, for whoever
/// completes it) while the lease is held with the token.
///
/// `KEYS[1]` lease, `KEYS[2]` switch-over record; `ARGV` token, rebuild group, topics
/// (JSON). Returns 1 when recorded, 0 when the lease is not held with the token.
pub(crate) static SWITCH_BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'group', ARGV[2], 'topics', ARGV[3])
return 1
"#,
    )
});

/// Marks what a rebuild covered on one partition: the live projection only acknowledges
/// the entries up to the rebuild's checkpoint from now on, and its checkpoint moves there.
///
/// `KEYS[1]` guard (lease or the partition slot's fence), `KEYS[2]` checkpoint, `KEYS[3]`
/// rebuild checkpoint, `KEYS[4]` rebuilt-upto hash; `ARGV` token, epoch, checkpoint field.
/// Returns 1, or 3 when the guard fails (nothing done).
pub(crate) static SWITCH_MARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ID_LE}{FENCE}{GUARD}{}",
        r#"
if not held(KEYS[1], ARGV[1], ARGV[2]) then return 3 end
local r = redis.call('HGET', KEYS[3], ARGV[3])
if r then
  redis.call('HSET', KEYS[4], ARGV[3], r)
  local live = redis.call('HGET', KEYS[2], ARGV[3]) or '0-0'
  if le(live, r) then redis.call('HSET', KEYS[2], ARGV[3], r) end
end
return 1
"#
    ))
});

/// Deletes, of a batch of live read-model keys of one slot, those the rebuilt model does not
/// have.
///
/// `KEYS[1]` guard, `KEYS[2]` the slot's key registry, `KEYS[3]` its rebuild registry,
/// `KEYS[4..]` live keys (as the registry lists them); `ARGV` token, epoch. Returns 1, or 3
/// when the guard fails.
pub(crate) static SWITCH_DROP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE}{GUARD}{}",
        r#"
if not held(KEYS[1], ARGV[1], ARGV[2]) then return 3 end
for i = 4, #KEYS do
  if redis.call('SISMEMBER', KEYS[3], KEYS[i]) == 0 then
    redis.call('DEL', KEYS[i])
    redis.call('SREM', KEYS[2], KEYS[i])
  end
end
return 1
"#
    ))
});

/// Replaces a batch of live read-model keys of one slot with their rebuilt shadows. A key
/// whose shadow is gone was moved already (a registry lists only keys that exist).
///
/// `KEYS[1]` guard, `KEYS[2]` the slot's key registry, then pairs of (key, its shadow);
/// `ARGV` token, epoch. Returns 1, or 3 when the guard fails.
pub(crate) static SWITCH_MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE}{GUARD}{}",
        r#"
if not held(KEYS[1], ARGV[1], ARGV[2]) then return 3 end
for i = 3, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    redis.call('RENAME', KEYS[i + 1], KEYS[i])
    redis.call('SADD', KEYS[2], KEYS[i])
  end
end
return 1
"#
    ))
});

/// Deletes what a switch-over no longer needs in one slot: its rebuild registry and
/// markers.
///
/// `KEYS[1]` guard, `KEYS[2..]` keys to delete; `ARGV` token, epoch. Returns 1, or 3 when the
/// guard fails.
pub(crate) static SWITCH_CLEAN_SLOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE}{GUARD}{}",
        r#"
if not held(KEYS[1], ARGV[1], ARGV[2]) then return 3 end
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"#
    ))
});

/// Deletes what a switch-over no longer needs on one partition: the rebuild group and the
/// rebuild checkpoint's field.
///
/// `KEYS[1]` guard, `KEYS[2]` stream, `KEYS[3]` rebuild checkpoint; `ARGV` token, epoch,
/// rebuild group, checkpoint field. Returns 1, or 3 when the guard fails.
pub(crate) static SWITCH_CLEAN_PART: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE}{GUARD}{}",
        r#"
if not held(KEYS[1], ARGV[1], ARGV[2]) then return 3 end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.pcall('XGROUP', 'DESTROY', KEYS[2], ARGV[3]) end
redis.call('HDEL', KEYS[3], ARGV[4])
return 1
"#
    ))
});

/// Ends a switch-over: deletes its record and, with `ARGV[2]` = `1`, releases the lease —
/// while the lease is held with the token.
///
/// `KEYS[1]` lease, `KEYS[2]` switch-over record; `ARGV` token, `1` to release. Returns 1,
/// or 0 when the lease is not held with the token.
pub(crate) static SWITCH_END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
return 1
"#,
    )
});

/// Deletes a batch of an unfinished rebuild's shadow keys and takes their keys out of its
/// registry (before a rebuild starts over).
///
/// `KEYS[1]` the slot's rebuild registry, `KEYS[2..]` shadow keys; `ARGV` the registry's
/// member (the read-model key) of each shadow key. Returns 1.
pub(crate) static CLEAR_SHADOWS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[1], ARGV[i - 1])
end
return 1
"#,
    )
});
