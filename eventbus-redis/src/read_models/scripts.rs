//! The Lua scripts of read models: commits, the projection lease, fenced reads, rebuilds.

use std::sync::LazyLock;

use redis::Script;

/// Lua: `le(a, b)` compares two stream ids numerically.
pub(super) const ID_LE: &str = r#"
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

/// Lua: `check(cmds)` — whether one commit's writes would all succeed, and `write(cmds,
/// registry, written, first)`, which applies them and keeps the key registry `registry`
/// listing exactly the keys that exist (a write that empties a key, or `DEL`, takes it
/// out). `cmds` is the decoded JSON array of `[name, index of its key in KEYS, args…]`; the
/// keys written are `KEYS[first ..]`, `written[i]` naming `KEYS[first + i - 1]` in the
/// registry. `check` returns `nil`, or `{4, key, reason}` for a write Redis would refuse (a
/// key of another type, `HINCRBY` on a field that is not an integer, an overflow): Redis
/// does not roll back a script's writes on an error, so every precondition is checked,
/// simulating the commit's own earlier writes, before the first write. (A command emptying
/// a key — `HDEL` of its last field, say — is assumed to leave its type in place: a commit
/// that then writes another type to the same key is refused, never half-applied.)
const WRITES: &str = r#"
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
local function check(cmds)
  local bad
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
  return nil
end
local function write(cmds, registry, written, first)
  for _, c in ipairs(cmds) do redis.call(unpack(c)) end
  for i, own in ipairs(written) do
    if redis.call('EXISTS', KEYS[first + i - 1]) == 1 then
      redis.call('SADD', registry, own)
    else
      redis.call('SREM', registry, own)
    end
  end
end
"#;

/// Lua: `fenced(key, epoch)` — whether the fence at `key` (the highest epoch of the
/// projection's lease that wrote next to it) is past `epoch`; and `advance(key, epoch)`.
pub(super) const FENCE: &str = r#"
local function fenced(key, epoch)
  if epoch == '' then return false end
  local f = redis.call('GET', key)
  return f ~= false and tonumber(f) > tonumber(epoch)
end
local function advance(key, epoch)
  if epoch ~= '' then redis.call('SET', key, epoch) end
end
"#;

/// Commits a projection's writes for one entry with its checkpoint and its ack, all or
/// nothing.
///
/// `KEYS[1]` stream, `KEYS[2]` checkpoint, `KEYS[3]` rebuilt-upto hash, `KEYS[4]` key
/// registry, `KEYS[5]` the projection's lease (or, with an epoch, the fence of the stream's
/// slot), `KEYS[6..]` the read-model keys written; `ARGV` group, consumer, id, checkpoint
/// field, `1` to skip entries a rebuild covered, the lease token (`''`: no lease), the
/// commands (JSON array of `[name, index of its key in KEYS, args…]`), the read-model keys
/// written (JSON, for the registry), the lease's epoch (`''`: check the lease itself), `1`
/// to only check (writing nothing; a superseded entry is acknowledged all the same).
///
/// Returns 0 (not pending for the consumer: nothing written), 1 (applied, or checking: would
/// apply), 2 (superseded by a
/// rebuild: acked only), 3 (the lease is not held with this token, or a later holder's
/// epoch wrote here: nothing written), or `{4, key, reason}` when a write would fail:
/// nothing written (see [`WRITES`]).
pub(crate) static PROJECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ID_LE}{WRITES}{FENCE}{}",
        r#"
if ARGV[6] ~= '' and ARGV[9] == '' and redis.call('GET', KEYS[5]) ~= ARGV[6] then return 3 end
if fenced(KEYS[5], ARGV[9]) then return 3 end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[5] == '1' then
  local upto = redis.call('HGET', KEYS[3], ARGV[4])
  if upto and le(ARGV[3], upto) then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
    return 2
  end
end
local cmds = cjson.decode(ARGV[7])
local bad = need(KEYS[2], 'hash') or need(KEYS[4], 'set') or check(cmds)
if bad then return bad end
if ARGV[10] == '1' then return 1 end
write(cmds, KEYS[4], cjson.decode(ARGV[8]), 6)
advance(KEYS[5], ARGV[9])
local cp = redis.call('HGET', KEYS[2], ARGV[4])
if not cp or not le(ARGV[3], cp) then redis.call('HSET', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
"#
    ))
});

/// On a cluster, applies the writes of one entry to the read-model keys of one slot (other
/// than its stream's), once: a marker of the entry, in the same slot, commits with them.
///
/// `KEYS[1]` the slot's markers (sorted set: member `{stream}@{id}`, score: when applied, in
/// ms), `KEYS[2]` the slot's key registry, `KEYS[3]` the slot's fence, `KEYS[4..]` the
/// read-model keys written; `ARGV` the entry's marker, the lease's epoch (`''`: unfenced),
/// now (ms), how long markers are kept (ms), the commands and the keys written (JSON, as
/// for [`PROJECT`]), `1` to only check that the writes would succeed.
///
/// Returns 0 (applied before: nothing written), 1 (applied; or, checking, would apply), 3
/// (a later lease holder's epoch wrote in this slot: nothing written), or `{4, key,
/// reason}` when a write would fail: nothing written.
pub(crate) static PROJECT_SLOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WRITES}{FENCE}{}",
        r#"
if fenced(KEYS[3], ARGV[2]) then return 3 end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local cmds = cjson.decode(ARGV[5])
local bad = need(KEYS[1], 'zset') or need(KEYS[2], 'set') or check(cmds)
if bad then return bad end
if ARGV[7] == '1' then return 1 end
write(cmds, KEYS[2], cjson.decode(ARGV[6]), 4)
advance(KEYS[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (tonumber(ARGV[3]) - tonumber(ARGV[4])))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"#
    ))
});

/// Raises the fence of a slot to an epoch (never lowers it).
///
/// `KEYS[1]` fence; `ARGV[1]` epoch.
pub(crate) static RAISE_FENCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE}{}",
        r#"
if not fenced(KEYS[1], ARGV[1]) then advance(KEYS[1], ARGV[1]) end
return 1
"#
    ))
});

/// Takes or renews a projection's lease: sets `KEYS[1]` to the token for `ARGV[2]` ms if it
/// is free or already ours.
///
/// `KEYS[1]` lease, `KEYS[2]` the projection's unfinished switch-over record (see
/// [`crate::read_models::rebuild_scripts`]); `ARGV` token, time to live (ms). Returns 0 when
/// another holder has it, else a sum of flags: 1 (held), 2 (taken now rather than renewed),
/// 4 (a rebuild's switch-over is unfinished: the holder completes it before applying
/// anything).
pub(crate) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local flags = 1
if not holder then flags = flags + 2 end
if redis.call('EXISTS', KEYS[2]) == 1 then flags = flags + 4 end
return flags
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
