//! The atomic steps of partitioned topics: the namespace's tags, a topic's partition count,
//! partition leases, and the takeover of a partition's pending entries.

use std::sync::LazyLock;

use redis::Script;

/// Appends partition tags unless the list changed meanwhile.
///
/// `KEYS[1]` tag list; `ARGV[1]` the length the caller saw, then the tags to append.
/// Returns the whole list.
pub(crate) static EXTEND_TAGS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) then
  for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
end
return redis.call('LRANGE', KEYS[1], 0, -1)
"#,
    )
});

/// Raises a topic's partition count, never lowers it, and never changes it once an
/// aggregate type pinned it (field `pinned_by`).
///
/// `KEYS[1]` topic metadata hash; `ARGV[1]` count. Returns `{count now in force}`, or
/// `{count, pinned_by}` when refused for the pin.
pub(crate) static SET_PARTITIONS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(redis.call('HGET', KEYS[1], 'partitions') or '1')
local asked = tonumber(ARGV[1])
if asked > now then
  local pinned = redis.call('HGET', KEYS[1], 'pinned_by')
  if pinned then return {now, pinned} end
  redis.call('HSET', KEYS[1], 'partitions', asked)
  now = asked
end
return {now}
"#,
    )
});

/// Pins a topic's partition count for an aggregate type of the event store (the first
/// aggregate type to pin it is kept).
///
/// `KEYS[1]` topic metadata hash; `ARGV[1]` aggregate type. Returns the count, for good.
pub(crate) static PIN_TOPIC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HSETNX', KEYS[1], 'pinned_by', ARGV[1])
return tonumber(redis.call('HGET', KEYS[1], 'partitions') or '1')
"#,
    )
});

/// Stores the partition count an aggregate type's aggregates are placed by, unless one is.
///
/// `KEYS[1]` aggregate type metadata hash; `ARGV[1]` count. Returns the stored count.
pub(crate) static PLACE_AGGREGATES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HSETNX', KEYS[1], 'partitions', ARGV[1])
return tonumber(redis.call('HGET', KEYS[1], 'partitions'))
"#,
    )
});

/// Takes or keeps a lease.
///
/// `KEYS[1]` lease; `ARGV` holder, time to live (ms). Returns 1 when newly taken, 2 when
/// kept (already the holder's; its time to live renewed), 0 when someone else holds it.
pub(crate) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
return 0
"#,
    )
});

/// Gives a lease up, if still the holder's.
///
/// `KEYS[1]` lease; `ARGV[1]` holder. Returns 1 when released.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// Takes over a page of a partition's pending entries, in stream order, for the consumer
/// that just took the partition's lease: entries of other consumers that are gone (not
/// among the live members) or idle for at least `min_idle`. Each is claimed counting a
/// delivery (`XCLAIM`), since it is handed to the consumer at once. Entries of live members
/// that are still being worked on are left to them, and the consumer's own (left by an
/// earlier run of it) to its recovery.
///
/// `KEYS[1]` stream; `ARGV` group, consumer, cursor (`0-0`: from the start), count,
/// min idle (ms), then the live members. Returns `{next cursor or '0-0', {{id, delivery
/// count, fields}…}, {deleted ids…}}`; deleted entries are acknowledged.
pub(crate) static TAKEOVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local start = '-'
if ARGV[3] ~= '0-0' then start = '(' .. ARGV[3] end
local count = tonumber(ARGV[4])
local min_idle = tonumber(ARGV[5])
local live = {}
for i = 6, #ARGV do live[ARGV[i]] = true end
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', count)
local next = '0-0'
if #rows == count then next = rows[#rows][1] end
local out, deleted = {}, {}
for _, r in ipairs(rows) do
  local owner, idle = r[2], tonumber(r[3])
  if owner ~= ARGV[2] and (not live[owner] or idle >= min_idle) then
    local e = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, r[1])
    if #e > 0 and e[1] and e[1][2] then
      out[#out + 1] = {r[1], r[4] + 1, e[1][2]}
    else
      deleted[#deleted + 1] = r[1]
    end
  end
end
if #deleted > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(deleted)) end
return {next, out, deleted}
"#,
    )
});
