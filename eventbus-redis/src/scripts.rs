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

/// Lua: `le(a, b)` compares two stream ids numerically.
const ID_LE: &str = r#"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if ms then return tonumber(ms), tonumber(seq) end
  return tonumber(id) or 0, 0
end
local function le(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as <= bs)
end
"#;

/// Commits a projection's writes for one entry with its checkpoint and its ack, all or
/// nothing.
///
/// `KEYS[1]` stream, `KEYS[2]` checkpoint, `KEYS[3]` rebuilt-upto hash, `KEYS[4]` key
/// registry, `KEYS[5]` the group's lease, `KEYS[6..]` the read-model keys written; `ARGV`
/// group, consumer, id, checkpoint field, `1` to skip entries a rebuild covered, the lease
/// token (`''`: no lease), the commands (JSON array of `[name, index of its key in KEYS,
/// args…]`), the read-model keys written (JSON, for the registry).
///
/// Returns 0 (not pending for the consumer: nothing written), 1 (applied), 2 (superseded by a
/// rebuild: acked only), 3 (the lease is not held with this token: nothing written), or
/// `{4, key, reason}` when a write would fail (a key of another type, `HINCRBY` on a field
/// that is not an integer, an overflow): nothing written. Every such precondition is checked,
/// simulating the commit's own earlier writes, before the first write, because Redis does
/// not roll back a script's writes on an error. (A command emptying a key — `HDEL` of its
/// last field, say — is assumed to leave its type in place: a commit that then writes
/// another type to the same key is refused, never half-applied.)
pub(crate) static PROJECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ID_LE}{}",
        r#"
if ARGV[6] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[6] then return 3 end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[5] == '1' then
  local upto = redis.call('HGET', KEYS[3], ARGV[4])
  if upto and le(ARGV[3], upto) then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
    return 2
  end
end
-- Redis does not roll back a script's writes on an error: check that no write can fail
-- before the first one, simulating the commit's effect on the types and values it reads.
local cmds = cjson.decode(ARGV[7])
local types, hvals, svals, cleared = {}, {}, {}, {}
local function ktype(k)
  if types[k] == nil then types[k] = redis.call('TYPE', k)['ok'] end
  return types[k]
end
local function is_int(s)
  if s == '0' then return true end
  local digits = string.match(s, '^%-?([1-9]%d*)$')
  if not digits then return false end
  if #digits ~= 19 then return #digits < 19 end
  if string.sub(s, 1, 1) == '-' then return digits <= '9223372036854775808' end
  return digits <= '9223372036854775807'
end
local function is_float(s)
  if string.match(s, '^%s') or string.match(s, '%s$') then return false end
  local x = tonumber(s)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end
local function hget(k, f)
  if hvals[k] == nil then hvals[k] = {} end
  if hvals[k][f] == nil then
    if cleared[k] then hvals[k][f] = false else hvals[k][f] = redis.call('HGET', k, f) or false end
  end
  return hvals[k][f]
end
local function sget(k)
  if svals[k] == nil then
    if cleared[k] then svals[k] = false else svals[k] = redis.call('GET', k) or false end
  end
  return svals[k]
end
local function need(k, want)
  local t = ktype(k)
  if t ~= want and t ~= 'none' then
    return {4, k, 'WRONGTYPE the key holds a ' .. t .. ', not a ' .. want}
  end
  return nil
end
-- Exact decimal arithmetic on integer strings (Lua numbers are doubles).
local function digits_add(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry + (i > 0 and tonumber(string.sub(a, i, i)) or 0)
      + (j > 0 and tonumber(string.sub(b, j, j)) or 0)
    out[#out + 1] = tostring(d % 10)
    carry = math.floor(d / 10)
    i, j = i - 1, j - 1
  end
  return string.reverse(table.concat(out))
end
local function digits_le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end
local function digits_sub(a, b) -- a >= b
  local out, borrow, i, j = {}, 0, #a, #b
  while i > 0 do
    local d = tonumber(string.sub(a, i, i)) - borrow - (j > 0 and tonumber(string.sub(b, j, j)) or 0)
    if d < 0 then d, borrow = d + 10, 1 else borrow = 0 end
    out[#out + 1] = tostring(d)
    i, j = i - 1, j - 1
  end
  local r = string.gsub(string.reverse(table.concat(out)), '^0+', '')
  if r == '' then return '0' end
  return r
end
local function sum(cur, by, k)
  local cneg, bneg = string.sub(cur, 1, 1) == '-', string.sub(by, 1, 1) == '-'
  local c, b = cneg and string.sub(cur, 2) or cur, bneg and string.sub(by, 2) or by
  local neg, r
  if cneg == bneg then
    neg, r = cneg, digits_add(c, b)
  elseif digits_le(b, c) then
    neg, r = cneg, digits_sub(c, b)
  else
    neg, r = bneg, digits_sub(b, c)
  end
  if r == '0' then neg = false end
  if neg then r = '-' .. r end
  if not is_int(r) then return nil, {4, k, 'increment or decrement would overflow'} end
  return r, nil
end
local kinds = {HSET = 'hash', HINCRBY = 'hash', HINCRBYFLOAT = 'hash', HDEL = 'hash',
  LPUSH = 'list', RPUSH = 'list', LTRIM = 'list', LREM = 'list', SADD = 'set', SREM = 'set',
  INCRBY = 'string'}
local bad = need(KEYS[2], 'hash') or need(KEYS[4], 'set')
if bad then return bad end
for _, c in ipairs(cmds) do
  local name, k = c[1], KEYS[tonumber(c[2])]
  c[2] = k
  if name == 'DEL' then
    types[k], hvals[k], svals[k], cleared[k] = 'none', {}, false, true
  else
    local kind = kinds[name]
    if not kind then return {4, k, 'unsupported command ' .. tostring(name)} end
    bad = need(k, kind)
    if bad then return bad end
    if name == 'HSET' or name == 'HDEL' then
      if hvals[k] == nil then hvals[k] = {} end
      for i = 3, #c, name == 'HSET' and 2 or 1 do
        if name == 'HSET' then hvals[k][c[i]] = c[i + 1] else hvals[k][c[i]] = false end
      end
    elseif name == 'HINCRBY' then
      local cur = hget(k, c[3]) or '0'
      if not is_int(cur) then return {4, k, 'field `' .. c[3] .. '` is not an integer'} end
      local v
      v, bad = sum(cur, c[4], k)
      if bad then return bad end
      hvals[k][c[3]] = v
    elseif name == 'HINCRBYFLOAT' then
      local cur = hget(k, c[3]) or '0'
      if not is_float(cur) then return {4, k, 'field `' .. c[3] .. '` is not a number'} end
      local n = tonumber(cur) + tonumber(c[4])
      if n ~= n or n == math.huge or n == -math.huge then
        return {4, k, 'increment would produce NaN or Infinity'}
      end
      hvals[k][c[3]] = string.format('%.17g', n)
    elseif name == 'INCRBY' then
      local cur = sget(k) or '0'
      if not is_int(cur) then return {4, k, 'the value is not an integer'} end
      local v
      v, bad = sum(cur, c[3], k)
      if bad then return bad end
      svals[k] = v
    end
    if name ~= 'LTRIM' and name ~= 'LREM' and name ~= 'SREM' and name ~= 'HDEL' then
      types[k] = kind
    end
  end
end
for _, c in ipairs(cmds) do redis.call(unpack(c)) end
local written = cjson.decode(ARGV[8])
if #written > 0 then redis.call('SADD', KEYS[4], unpack(written)) end
local cp = redis.call('HGET', KEYS[2], ARGV[4])
if not cp or not le(ARGV[3], cp) then redis.call('HSET', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
"#
    ))
});

/// Takes or renews a lease: sets `KEYS[1]` to the token for `ARGV[2]` ms if it is free or
/// already ours.
///
/// `KEYS[1]` lease; `ARGV` token, time to live (ms). Returns 1 when held, 0 when another
/// holder has it.
pub(crate) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#,
    )
});

/// A projection lease holder's read: `XREADGROUP … >` (not blocking) only while the lease
/// holds the token.
///
/// `KEYS[1]` lease, `KEYS[2..]` streams; `ARGV` token, group, consumer, count. Returns 0 when
/// the lease is not held with the token (nothing read), else `{XREADGROUP reply or [], the
/// last id of each stream ('0-0' when empty)}`.
pub(crate) static FENCED_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local args = {'XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS'}
for i = 2, #KEYS do args[#args + 1] = KEYS[i] end
for i = 2, #KEYS do args[#args + 1] = '>' end
local read = redis.call(unpack(args))
local last = {}
for i = 2, #KEYS do
  local e = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  last[#last + 1] = (e[1] and e[1][1]) or '0-0'
end
return {read or {}, last}
"#,
    )
});

/// A projection lease holder's claim of idle entries, only while the lease holds the token:
/// the consumer loop's claim (`XAUTOCLAIM … JUSTID`, no delivery counted, each entry with
/// its own delivery count) behind a lease check.
///
/// `KEYS[1]` lease, `KEYS[2]` stream; `ARGV` token, group, consumer, min idle (ms), cursor,
/// count. Returns 0 when the lease is not held with the token (nothing claimed), else `{next
/// cursor, {{id, delivery count, fields}…}, {deleted ids…}}`; deleted entries are
/// acknowledged.
pub(crate) static FENCED_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        crate::consumer::steps::CLAIM_FN,
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return claim(KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
"#
    ))
});

/// Gives a lease up, if it is still ours.
///
/// `KEYS[1]` lease; `ARGV[1]` token. Returns 1 when released.
pub(crate) static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Lua: `same_members(set, first, count)` — whether the set `set` holds exactly the keys
/// `KEYS[first .. first + count - 1]` (what the caller read before the call).
const SAME_MEMBERS: &str = r#"
local function same_members(set, first, count)
  if redis.call('SCARD', set) ~= count then return false end
  for i = first, first + count - 1 do
    if redis.call('SISMEMBER', set, KEYS[i]) == 0 then return false end
  end
  return true
end
"#;

/// Drops what an unfinished rebuild left: shadow keys, registry, checkpoint, group.
///
/// `KEYS[1]` rebuild registry, `KEYS[2]` rebuild checkpoint, `KEYS[3 .. 2 + s]` the `s`
/// streams, then the `m` keys the rebuild registry lists, then their `m` shadow keys; `ARGV`
/// rebuild group, `s`, `m`. Returns 0 (nothing done) when the registry no longer lists exactly
/// those keys (the caller reads it again), 1 when done. Every key it touches is in `KEYS`.
pub(crate) static BEGIN_REBUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{SAME_MEMBERS}{}",
        r#"
local s, m = tonumber(ARGV[2]), tonumber(ARGV[3])
if not same_members(KEYS[1], 3 + s, m) then return 0 end
for i = 3 + s + m, 2 + s + 2 * m do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, 2 + s do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.pcall('XGROUP', 'DESTROY', KEYS[i], ARGV[1]) end
end
return 1
"#
    ))
});

/// Switches readers to a finished rebuild, if it caught up.
///
/// `KEYS[1]` checkpoint, `KEYS[2]` rebuild checkpoint, `KEYS[3]` registry, `KEYS[4]` rebuild
/// registry, `KEYS[5]` rebuilt-upto hash, `KEYS[6 .. 5 + n]` the `n` streams, then the `l`
/// keys the registry lists, the `r` keys the rebuild registry lists, and their `r` shadow
/// keys; `ARGV` rebuild group, `n`, `l`, `r`, then one checkpoint field per stream. Returns 1
/// when switched, 0 when the rebuild has entries pending, the live projection applied an
/// entry past it, or a registry no longer lists exactly the keys passed (the caller tries
/// again). Every key it touches is in `KEYS`.
pub(crate) static FINISH_REBUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ID_LE}{SAME_MEMBERS}{}",
        r#"
local n, l, r = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local live_first, new_first = 6 + n, 6 + n + l
local shadow_first = new_first + r
for i = 1, n do
  local s = redis.pcall('XPENDING', KEYS[5 + i], ARGV[1])
  if type(s) == 'table' and not s.err and s[1] > 0 then return 0 end
  local live = redis.call('HGET', KEYS[1], ARGV[4 + i]) or '0-0'
  local rebuilt = redis.call('HGET', KEYS[2], ARGV[4 + i]) or '0-0'
  if not le(live, rebuilt) then return 0 end
end
if not same_members(KEYS[3], live_first, l) or not same_members(KEYS[4], new_first, r) then
  return 0
end
local new = {}
for i = new_first, new_first + r - 1 do new[KEYS[i]] = true end
for i = live_first, live_first + l - 1 do
  if not new[KEYS[i]] then redis.call('DEL', KEYS[i]) end
end
for j = 0, r - 1 do
  local k, s = KEYS[new_first + j], KEYS[shadow_first + j]
  if redis.call('EXISTS', s) == 1 then redis.call('RENAME', s, k) else redis.call('DEL', k) end
end
redis.call('DEL', KEYS[3])
if r > 0 then redis.call('RENAME', KEYS[4], KEYS[3]) end
for i = 1, n do
  local f = ARGV[4 + i]
  local rebuilt = redis.call('HGET', KEYS[2], f) or '0-0'
  redis.call('HSET', KEYS[5], f, rebuilt)
  local live = redis.call('HGET', KEYS[1], f) or '0-0'
  if le(live, rebuilt) then redis.call('HSET', KEYS[1], f, rebuilt) end
  if redis.call('EXISTS', KEYS[5 + i]) == 1 then redis.pcall('XGROUP', 'DESTROY', KEYS[5 + i], ARGV[1]) end
end
redis.call('DEL', KEYS[2])
return 1
"#
    ))
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
