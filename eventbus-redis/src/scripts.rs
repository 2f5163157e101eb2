//! The Lua scripts of the backend: each one is a step that must be atomic.
//!
//! Every script calls a command that fails with `NOGROUP` *before* its first write, because
//! Redis does not roll back the writes a script made before an error.

use std::sync::LazyLock;

use redis::Script;

/// Redelivers a pending entry to its owner, counting the delivery.
///
/// `KEYS[1]` stream; `ARGV` group, consumer, id. Returns nil when the entry is not pending
/// for this consumer (acked, or owned by another consumer) or was deleted; otherwise
/// `{delivery_count, entry}`.
pub(crate) static REDELIVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return false end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3])
local e = claimed[1]
if not e or not e[2] then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return false
end
local after = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
local count = p[1][4] + 1
if #after > 0 then count = after[1][4] end
return {count, e}
"#,
    )
});

/// Copies an entry to the dead-letter stream with the reason, and acks it.
///
/// `KEYS[1]` stream, `KEYS[2]` dead-letter stream; `ARGV` group, id, consumer, error,
/// delivery count, dead-lettered-at, origin stream key, dead-letter MAXLEN (0: none), the
/// calling consumer. Returns the dead letter's id, or nil (nothing written) when the entry is
/// not pending for the calling consumer.
pub(crate) static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
-- Only the consumer holding the entry may dead-letter it: if it was acknowledged or
-- reclaimed (and maybe handled) elsewhere meanwhile, writing a dead letter would be wrong.
if #p == 0 or p[1][2] ~= ARGV[9] then return false end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local entry = '[]'
if #found > 0 and found[1][2] then
  local f = found[1][2]
  local pairs = {}
  for i = 1, #f, 2 do pairs[#pairs + 1] = {f[i], f[i + 1]} end
  if #pairs > 0 then entry = cjson.encode(pairs) end
end
local args = {KEYS[2]}
if tonumber(ARGV[8]) > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[8]
end
local rest = {'*', 'origin_stream', ARGV[7], 'origin_id', ARGV[2], 'group', ARGV[1],
  'consumer', ARGV[3], 'error', ARGV[4], 'delivery_count', ARGV[5],
  'dead_lettered_at', ARGV[6], 'entry', entry}
for _, v in ipairs(rest) do args[#args + 1] = v end
local id = redis.call('XADD', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
"#,
    )
});

/// Moves one dead letter back to its origin stream, byte for byte.
///
/// The original fields never leave Redis: the script reads the dead letter, decodes its
/// `entry` field (the `cjson` array [`DEAD_LETTER`] wrote; `cjson` passes bytes that are not
/// UTF-8 through unchanged both ways) and appends the pairs as they were.
///
/// `KEYS[1]` dead-letter stream, `KEYS[2]` origin stream, which must be the dead letter's
/// `origin_stream`; `ARGV` dead-letter id, MAXLEN of the origin (0: none). Returns the new
/// entry id; nil when the dead letter is gone already; `0` (nothing written, the dead letter
/// kept) when it holds no original fields (the entry was trimmed before it was
/// dead-lettered); an `ERR` when `KEYS[2]` is not its origin stream.
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 or not found[1][2] then return false end
local letter = found[1][2]
local origin, entry
for i = 1, #letter, 2 do
  if letter[i] == 'origin_stream' then origin = letter[i + 1]
  elseif letter[i] == 'entry' then entry = letter[i + 1] end
end
if origin ~= KEYS[2] then
  return redis.error_reply('ERR dead letter ' .. ARGV[1] .. ' does not come from ' .. KEYS[2])
end
local ok, original = pcall(cjson.decode, entry or '[]')
if not ok or type(original) ~= 'table' or #original == 0 then return 0 end
local args = {KEYS[2]}
if tonumber(ARGV[2]) > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[2]
end
args[#args + 1] = '*'
for _, pair in ipairs(original) do
  if type(pair) ~= 'table' or type(pair[1]) ~= 'string' or type(pair[2]) ~= 'string' then
    return 0
  end
  args[#args + 1] = pair[1]
  args[#args + 1] = pair[2]
end
local id = redis.call('XADD', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"#,
    )
});

/// Deletes a consumer only if it holds no pending entry (`XGROUP DELCONSUMER` would delete
/// them with it).
///
/// `KEYS[1]` stream; `ARGV` group, consumer. Returns 1 when deleted, 0 when kept.
pub(crate) static REMOVE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// Appends events to an aggregate's stream with an expected version, and publishes them to
/// their per-type streams and the global stream: the event store's one atomic step.
///
/// `KEYS[1]` aggregate stream, `KEYS[2]` version key, then per event `i` (from 1) its
/// per-type stream `KEYS[1 + 2i]` and global stream `KEYS[2 + 2i]` (its partition's, on a
/// partitioned topic). `ARGV` expected version, global MAXLEN (0: none), event count, then
/// per event: its per-type MAXLEN, its field count `n`, and `n` field/value pairs. Returns `{0, current_version}` on a version mismatch (nothing written), else
/// `{1, new_version, per-type id 1, …}`.
///
/// Every check comes before the first write (the version, the type of every key), and the
/// first write (`XADD` with the explicit id `0-{version}`) is the one that fails if the
/// stream disagrees with the version key, so an error never leaves a partial append.
pub(crate) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local expected = tonumber(ARGV[1])
if current ~= expected then return {0, current} end
-- Redis does not roll back a script's writes on an error: make sure none can fail.
for i = 1, #KEYS do
  if i ~= 2 then
    local t = redis.call('TYPE', KEYS[i])['ok']
    if t ~= 'stream' and t ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. t .. ', not a stream')
    end
  end
end
local count = tonumber(ARGV[3])
local ids = {1, expected + count}
local a = 4
for i = 1, count do
  local maxlen = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1])
  local fields = {}
  for j = a + 2, a + 1 + 2 * n do fields[#fields + 1] = ARGV[j] end
  a = a + 2 + 2 * n
  local stream = KEYS[1 + 2 * i]
  redis.call('XADD', KEYS[1], '0-' .. (expected + i), unpack(fields))
  local args = {stream}
  if maxlen > 0 then
    args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = maxlen
  end
  args[#args + 1] = '*'
  for _, v in ipairs(fields) do args[#args + 1] = v end
  ids[#ids + 1] = redis.call('XADD', unpack(args))
  local global = {KEYS[2 + 2 * i]}
  if tonumber(ARGV[2]) > 0 then
    global[#global + 1] = 'MAXLEN'; global[#global + 1] = '~'; global[#global + 1] = ARGV[2]
  end
  global[#global + 1] = '*'
  for _, v in ipairs(fields) do global[#global + 1] = v end
  global[#global + 1] = 'original_stream'
  global[#global + 1] = stream
  redis.call('XADD', unpack(global))
end
redis.call('SET', KEYS[2], expected + count)
return ids
"#,
    )
});

/// Stores an aggregate snapshot unless the stored one has the same state version and is at
/// least as new.
///
/// `KEYS[1]` snapshot hash; `ARGV` version, state version, state JSON, taken-at. Returns 1
/// when stored, 0 when kept.
pub(crate) static SAVE_SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stored = redis.call('HMGET', KEYS[1], 'version', 'state_version')
if stored[1] and stored[2] == ARGV[2] and tonumber(stored[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'state_version', ARGV[2], 'state', ARGV[3],
  'taken_at', ARGV[4])
return 1
"#,
    )
});

/// Stores a new saga unless one with its id exists, indexes it and schedules its deadline.
///
/// `KEYS[1]` state, `KEYS[2]` status index, `KEYS[3]` deadlines; `ARGV` state JSON, saga id,
/// deadline (`''`: none). Returns 1 when stored, 0 when the saga exists.
pub(crate) static SAGA_CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2]) end
return 1
"#,
    )
});

/// A saga transition: compare-and-set on the stored version, moving the saga between status
/// indexes and (re)scheduling or clearing its deadline, all or nothing.
///
/// `KEYS[1]` state, `KEYS[2]` old status index, `KEYS[3]` new status index, `KEYS[4]`
/// deadlines; `ARGV` expected version, new state JSON, saga id, deadline (`''`: none).
/// Returns 1 when applied, 0 on a version mismatch or a missing saga (nothing written).
pub(crate) static SAGA_UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, decoded = pcall(cjson.decode, current)
if not ok or type(decoded) ~= 'table' or tonumber(decoded['version']) ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
if KEYS[2] ~= KEYS[3] then
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
else
  redis.call('ZREM', KEYS[4], ARGV[3])
end
return 1
"#,
    )
});

/// Claims due saga deadlines in one deadline key (the schedule on a single node, one of its
/// shards on a cluster): each due member is pushed to the end of its lease, so that exactly
/// one caller gets it until the lease runs out. Also tells when the key's next deadline is,
/// so a caller probes a shard again only then.
///
/// `KEYS[1]` deadlines; `ARGV` now, lease end, max. Returns `{next, claimed ids}`, `next`
/// the earliest score left (after the claims) or `''` when the key is empty.
pub(crate) static SAGA_CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {first[2] or '', due}
"#,
    )
});

/// Deletes a participant record only while it still says `in progress`.
///
/// `KEYS[1]` record; `ARGV[1]` the in-progress JSON. Returns 1 when deleted.
pub(crate) static SAGA_RELEASE_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});
