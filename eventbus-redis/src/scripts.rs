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

/// Moves one dead letter back to its origin stream.
///
/// `KEYS[1]` dead-letter stream, `KEYS[2]` origin stream; `ARGV` dead-letter id, MAXLEN of
/// the origin (0: none), then the original field/value pairs. Returns the new entry id, or
/// nil when the dead letter is gone already.
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local args = {KEYS[2]}
if tonumber(ARGV[2]) > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[2]
end
args[#args + 1] = '*'
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
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
