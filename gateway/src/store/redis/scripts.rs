//! The Lua scripts of the Redis store: every update that touches more than one key, or
//! reads before it writes, runs as one script, so it is atomic on the server (Redis runs a
//! script to its end before anything else). Nothing here reads, decides in the gateway,
//! then writes.
//!
//! Keys a script computes from a base passed in `ARGV` (a token's hash from the tokens'
//! tag) share that base's hash tag, so in a Cluster they are in the slot the script runs
//! on, which Redis allows for keys a script does not declare.

use std::sync::LazyLock;

use ::redis::Script;

/// Stores a new token. KEYS: token hash, id index, sequence. ARGV: id, then field/value
/// pairs. 0 when the id exists.
pub(super) static INSERT_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'seq', seq, unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], seq, ARGV[1])
return 1
",
    )
});

/// Every token, in insertion order, as `{fields, ...}`. KEYS: id index. ARGV: tokens base.
pub(super) static ALL_TOKENS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', ARGV[1] .. ':tok:' .. id)
  if #fields > 0 then table.insert(out, fields) end
end
return out
",
    )
});

/// Marks a live refresh token rotated. KEYS: token hash. ARGV: at. 1 when this call did.
pub(super) static MARK_ROTATED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'rotated_at') == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rotated_at', ARGV[1])
return 1
",
    )
});

/// Adds a usage batch once. KEYS: id index (routes the script to the tokens' slot). ARGV:
/// tokens base, the batch's marker and how long it lives (a marker already set: the batch
/// was applied, nothing changes), then per token: id, count, first, last, last ip, n, n
/// addresses. Unknown tokens are skipped.
pub(super) static RECORD_USAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local base = ARGV[1]
if not redis.call('SET', base .. ':' .. ARGV[2], '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
local i = 4
while i <= #ARGV do
  local id, first, last, n = ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 5])
  local tok = base .. ':tok:' .. id
  if redis.call('EXISTS', tok) == 1 then
    redis.call('HINCRBY', tok, 'count', ARGV[i + 1])
    local held_first = redis.call('HGET', tok, 'first_used_at')
    if (not held_first) or tonumber(held_first) > first then
      redis.call('HSET', tok, 'first_used_at', ARGV[i + 2])
    end
    local held_last = redis.call('HGET', tok, 'last_used_at')
    if (not held_last) or tonumber(held_last) <= last then
      redis.call('HSET', tok, 'last_used_at', ARGV[i + 3], 'last_ip', ARGV[i + 4])
    end
    if n > 0 then
      local ips = base .. ':ips:' .. id
      redis.call('SADD', ips, unpack(ARGV, i + 6, i + 5 + n))
      redis.call('HSET', tok, 'distinct_ips', redis.call('SCARD', ips))
    end
  end
  i = i + 6 + n
end
return 1
",
    )
});

/// Flags a token unless it is flagged already. KEYS: token hash. ARGV: reason.
pub(super) static FLAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSETNX', KEYS[1], 'flagged', ARGV[1]) end
return 1
",
    )
});

/// Revokes every unrevoked token passing a filter and advances the epoch, in one step.
/// KEYS: id index, epoch. ARGV: tokens base, at, by, reason, has reason (1/0), now,
/// status ('' any), flagged ('' any, '1', '0'), then field/value pairs that must equal.
/// Returns `{epoch, {ids}}`.
pub(super) static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local base, at, by, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local has_reason, now, status, flagged = ARGV[5] == '1', tonumber(ARGV[6]), ARGV[7], ARGV[8]
local revoked = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tok = base .. ':tok:' .. id
  if redis.call('HEXISTS', tok, 'revoked_at') == 0 then
    local ok = true
    for j = 9, #ARGV, 2 do
      if redis.call('HGET', tok, ARGV[j]) ~= ARGV[j + 1] then ok = false break end
    end
    if ok and status ~= '' then
      local now_status = 'active'
      if redis.call('HEXISTS', tok, 'rotated_at') == 1 then now_status = 'rotated'
      elseif now >= tonumber(redis.call('HGET', tok, 'expires_at')) then now_status = 'expired' end
      ok = now_status == status
    end
    if ok and flagged ~= '' then
      ok = (redis.call('HEXISTS', tok, 'flagged') == 1) == (flagged == '1')
    end
    if ok then
      redis.call('HSET', tok, 'revoked_at', at, 'revoked_by', by)
      if has_reason then redis.call('HSET', tok, 'revoke_reason', reason)
      else redis.call('HDEL', tok, 'revoke_reason') end
      table.insert(revoked, id)
    end
  end
end
return {redis.call('INCR', KEYS[2]), revoked}
",
    )
});

/// Deletes tokens that expired before a time. KEYS: id index. ARGV: tokens base, before.
pub(super) static PURGE_TOKENS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local base, before, gone = ARGV[1], tonumber(ARGV[2]), 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tok = base .. ':tok:' .. id
  local expires_at = redis.call('HGET', tok, 'expires_at')
  if (not expires_at) or tonumber(expires_at) < before then
    redis.call('DEL', tok, base .. ':ips:' .. id)
    redis.call('ZREM', KEYS[1], id)
    if expires_at then gone = gone + 1 end
  end
end
return gone
",
    )
});

/// Uses a one-time marker. KEYS: marker, its bucket's expiry index. ARGV: marker name,
/// expires_at, now, ttl in ms (0: already expired). 1 when this call used it.
///
/// Not a bare `SET NX PX`: whether a held marker has expired is judged by the caller's
/// `now` against the expiry stored in it, so the answer does not depend on the server's
/// clock; the key's own TTL only makes Redis drop it when it is no longer needed.
pub(super) static USE_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) > tonumber(ARGV[3]) then return 0 end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', 1)
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
",
    )
});

/// Deletes the entries of one bucket that expired before a time. KEYS: the bucket's
/// expiry index. ARGV: the bucket's key base, before. Returns how many went (entries
/// Redis already dropped by their TTL included: they expired too).
pub(super) static PURGE_BUCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
for _, name in ipairs(gone) do redis.call('DEL', ARGV[1] .. name) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
return #gone
",
    )
});

/// Stores an entry and its expiry in its bucket's index. KEYS: entry, index. ARGV: name,
/// value, expires_at, ttl in ms (0: no TTL; the purge drops it).
pub(super) static PUT_EXPIRING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
",
    )
});

/// Moves the idle deadline of identities of one bucket on. KEYS: the bucket's expiry index,
/// then one entry per touch. ARGV: now, then per touch its name, user and when it was seen.
/// An entry moves only while it is that user's and was live when seen; its new expiry is
/// the idle deadline from then, capped by the session's end. The JSON is not re-encoded
/// (cjson would turn `[]` into `{}`): the one `expires_at` number is replaced where the
/// record's fixed field order puts it, just before `session_ends_at` at the very end, so a
/// user name that spells `"expires_at":` cannot be mistaken for it. Returns how many moved.
pub(super) static TOUCH_IDENTITIES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local moved = 0
for i = 2, #KEYS do
  local at = (i - 2) * 3 + 1
  local name, user, seen = ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  local value = redis.call('GET', KEYS[i])
  if value then
    local entry = cjson.decode(value)
    local idle = entry.idle_timeout_secs
    local ends = entry.session_ends_at
    if entry.username == user and entry.expires_at > seen and type(idle) == 'number'
        and type(ends) == 'number' then
      local target = math.min(seen + idle, ends)
      if target > entry.expires_at then
        local updated, n = string.gsub(value,
          '"expires_at":%-?%d+(,"session_ends_at":%-?%d+})$',
          '"expires_at":' .. string.format('%d', target) .. '%1')
        if n == 1 then
          local ttl = (target - now) * 1000
          if ttl > 0 then redis.call('SET', KEYS[i], updated, 'PX', ttl)
          else redis.call('SET', KEYS[i], updated) end
          redis.call('ZADD', KEYS[1], target, name)
          moved = moved + 1
        end
      end
    end
  end
end
return moved
"#,
    )
});

/// Removes an entry and its index member. KEYS: entry, index. ARGV: name. 1 if it was there.
pub(super) static REMOVE_EXPIRING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
",
    )
});

/// The values of one bucket's entries expiring after a time. KEYS: index. ARGV: key
/// base, now.
pub(super) static LIVE_IN_BUCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')) do
  local value = redis.call('GET', ARGV[1] .. name)
  if value then table.insert(out, value) end
end
return out
",
    )
});

/// Charges a counter unless that passes its limit. KEYS: counter hash, its bucket's expiry
/// index. ARGV: name, by, limit, window end (for a new window), now, TTL of a new window in
/// ms. Returns `{allowed, count, resets_at}`. A window that ended at or before `now` (or
/// none) starts afresh at zero; a refused charge changes nothing, and a first charge that
/// is refused creates nothing. A running count grows with `HINCRBY` (exact integers).
pub(super) static CHARGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held = redis.call('HMGET', KEYS[1], 'count', 'resets_at')
local running = held[2] and tonumber(held[2]) > tonumber(ARGV[5])
local count, resets_at = '0', ARGV[4]
if running then count, resets_at = held[1], held[2] end
if tonumber(count) + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  return {0, count, resets_at}
end
if running then
  redis.call('HINCRBY', KEYS[1], 'count', ARGV[2])
  -- Read back as text: a Lua number would print large counts as 1.2e+14.
  count = redis.call('HGET', KEYS[1], 'count')
else
  redis.call('HSET', KEYS[1], 'count', ARGV[2], 'resets_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  count = ARGV[2]
end
return {1, count, resets_at}
",
    )
});

/// Ends a counter's window: deletes it and its index member. KEYS: counter hash, index.
/// ARGV: name, now. 1 when it had a running window.
pub(super) static RESET_COUNTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local resets_at = redis.call('HGET', KEYS[1], 'resets_at')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if resets_at and tonumber(resets_at) > tonumber(ARGV[2]) then return 1 end
return 0
",
    )
});

/// The running counters of one bucket whose names start with a prefix (plain text, not a
/// pattern). KEYS: the bucket's index. ARGV: key base, now, prefix, most to return.
/// Returns `{{name, count, resets_at}, ...}`.
pub(super) static COUNTERS_IN_BUCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out, prefix, most = {}, ARGV[3], tonumber(ARGV[4])
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')) do
  if #out >= most then break end
  if string.sub(name, 1, #prefix) == prefix then
    local held = redis.call('HMGET', ARGV[1] .. name, 'count', 'resets_at')
    if held[1] and held[2] then table.insert(out, {name, held[1], held[2]}) end
  end
end
return out
",
    )
});
