//! The consumer's atomic steps: each checks that an entry is pending for the calling
//! consumer and takes it in the same script, so no other consumer can slip in between.

use std::sync::LazyLock;

use redis::Script;

/// Takes back a page of the calling consumer's own pending entries, in stream order,
/// without counting a delivery (`XCLAIM … JUSTID`).
///
/// `KEYS[1]` stream; `ARGV` group, consumer, cursor (`0-0`: from the start; otherwise the
/// page starts after it), count. Returns `{next cursor or '0-0', {{id, delivery count,
/// fields}…}, {deleted ids…}}`; deleted entries are acknowledged.
pub(super) static RECOVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local start = '-'
if ARGV[3] ~= '0-0' then start = '(' .. ARGV[3] end
local count = tonumber(ARGV[4])
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', count, ARGV[2])
local next = '0-0'
if #rows == count then next = rows[#rows][1] end
if #rows == 0 then return {next, {}, {}} end
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for _, r in ipairs(rows) do args[#args + 1] = r[1] end
args[#args + 1] = 'JUSTID'
local kept = {}
for _, id in ipairs(redis.call(unpack(args))) do kept[id] = true end
local out, deleted = {}, {}
for _, r in ipairs(rows) do
  local e = {}
  if kept[r[1]] then e = redis.call('XRANGE', KEYS[1], r[1], r[1]) end
  if #e > 0 then
    out[#out + 1] = {r[1], r[4], e[1][2]}
  else
    deleted[#deleted + 1] = r[1]
  end
end
if #deleted > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(deleted)) end
return {next, out, deleted}
"#,
    )
});

/// Lua: `claim(stream, group, consumer, min_idle, cursor, count)` claims entries of any
/// consumer idle for at least `min_idle` ms, without counting a delivery (`XAUTOCLAIM …
/// JUSTID`), with each entry's own delivery count; deleted entries are acknowledged. Returns
/// `{next cursor, {{id, delivery count, fields}…}, {deleted ids…}}`.
pub(crate) const CLAIM_FN: &str = r#"
local function claim(stream, group, consumer, min_idle, cursor, count)
  local r = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, cursor,
    'COUNT', count, 'JUSTID')
  local out, deleted = {}, {}
  for _, id in ipairs(r[3] or {}) do deleted[#deleted + 1] = id end
  for _, id in ipairs(r[2]) do
    local e = redis.call('XRANGE', stream, id, id)
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    if #e > 0 and #p > 0 then
      out[#out + 1] = {id, p[1][4], e[1][2]}
    else
      deleted[#deleted + 1] = id
      redis.call('XACK', stream, group, id)
    end
  end
  return {r[1], out, deleted}
end
"#;

/// Claims idle entries (see [`CLAIM_FN`]).
///
/// `KEYS[1]` stream; `ARGV` group, consumer, min idle (ms), cursor, count.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLAIM_FN}return claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])"
    ))
});

/// Renews the calling consumer's hold on entries: resets their idle time without counting
/// a delivery (`XCLAIM … JUSTID`), for those still pending for it only.
///
/// `KEYS[1]` stream; `ARGV` group, consumer, ids…. Returns the ids it no longer holds.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    args[#args + 1] = ARGV[i]
    n = n + 1
  end
end
local held = {}
if n > 0 then
  args[#args + 1] = 'JUSTID'
  for _, id in ipairs(redis.call(unpack(args))) do held[id] = true end
end
local lost = {}
for i = 3, #ARGV do
  if not held[ARGV[i]] then lost[#lost + 1] = ARGV[i] end
end
return lost
"#,
    )
});

/// Gives entries back: sets their delivery counts and idle times (`XCLAIM … IDLE …
/// RETRYCOUNT … JUSTID`), for those still pending for the calling consumer only.
///
/// `KEYS[1]` stream; `ARGV` group, consumer, idle (ms), then id, delivery count pairs.
pub(super) static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 4, #ARGV, 2 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3],
      'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
  end
end
return 0
"#,
    )
});
