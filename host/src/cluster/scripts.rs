//! The Lua scripts Redis runs for each check: one script, one key, one
//! round trip (EVALSHA; the script body is sent once per connection when
//! Redis answers NOSCRIPT). Each is the in-memory algorithm of
//! `policy::host::counters` written again, so a limit means the same in
//! one process and across many: the same integer arithmetic for the
//! sliding window, the same IEEE doubles (Lua's numbers) in the same order
//! for the token bucket, and the state stored with 17 significant digits
//! so that a refill computed from it is exact.
//!
//! Time is Redis's own clock (`TIME`) unless a test passes one, so the
//! gateways' clocks need not agree. A limit's key expires a minute after
//! it would be back to full anyway (it is only collected, never needed). A script touches only `KEYS[1]`, so in
//! Redis Cluster every check lands on one slot.

/// Sliding window (the previous window weighted by how much of it still
/// overlaps): `KEYS[1]` a hash {w, s, p, c}; ARGV limit, window ms, cost,
/// now ms (empty: Redis's clock). Returns {allowed, remaining, reset ms,
/// retry-after ms}.
pub const SLIDING_WINDOW: &str = r#"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local h = redis.call('HMGET', KEYS[1], 'w', 's', 'p', 'c')
local aligned = now - now % window
local start, prev, curr = aligned, 0, 0
if tonumber(h[1]) == window then
  start = tonumber(h[2]); prev = tonumber(h[3]); curr = tonumber(h[4])
end
if aligned > start then
  if aligned == start + window then prev = curr else prev = 0 end
  curr = 0
  start = aligned
end
-- A clock that stepped back stays in the window it had reached.
local elapsed = math.max(now - start, 0)
local function weighted(count, left)
  return math.floor((count * left + window - 1) / window)
end
local function first_fit(p, room, from)
  if p == 0 then return from end
  local span = math.min(math.floor(room * window / p), window)
  return math.max(window - span, from)
end
local function until_empty(p, c)
  if c > 0 then return 2 * window - elapsed
  elseif p > 0 then return window - elapsed
  else return 0 end
end
local function until_room(p, c)
  if cost > limit then return math.max(until_empty(p, c), 1) end
  local room = limit - (c + cost)
  if room >= 0 then
    local at = first_fit(p, room, elapsed)
    if at < window then return math.max(at - elapsed, 1) end
  end
  return (window - elapsed) + first_fit(c, limit - cost, 0)
end
local estimate = weighted(prev, window - elapsed) + curr
local allowed, remaining, retry = 0, 0, 0
if estimate + cost <= limit then
  curr = curr + cost
  allowed = 1
  remaining = limit - estimate - cost
else
  remaining = math.max(limit - estimate, 0)
  retry = until_room(prev, curr)
end
local reset = until_empty(prev, curr)
local f = function(x) return string.format('%.17g', x) end
redis.call('HSET', KEYS[1], 'w', f(window), 's', f(start), 'p', f(prev), 'c', f(curr))
redis.call('PEXPIRE', KEYS[1], f(2 * window + 60000))
return {allowed, remaining, reset, retry}
"#;

/// Token bucket (refilled at limit per window, holding at most limit):
/// `KEYS[1]` a hash {w, t, l}; ARGV as [`SLIDING_WINDOW`]. Returns
/// {allowed, remaining, reset ms, retry-after ms}.
pub const TOKEN_BUCKET: &str = r#"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local h = redis.call('HMGET', KEYS[1], 'w', 't', 'l')
local tokens, last = limit, now
if tonumber(h[1]) == window then
  tokens = tonumber(h[2]); last = tonumber(h[3])
end
local rate = limit / window
if now > last then
  tokens = math.min(tokens + (now - last) * rate, limit)
  last = now
end
local slack = 1e-9
local allowed, remaining, reset, retry = 0, 0, 0, 0
if tokens + slack >= cost then
  tokens = math.max(tokens - cost, 0)
  if rate > 0 then reset = math.ceil((limit - tokens) / rate) end
  allowed = 1
  remaining = math.floor(tokens)
else
  local wait = window
  if rate > 0 and cost <= limit then
    wait = math.ceil((cost - tokens) / rate)
    while tokens + wait * rate + slack < cost do wait = wait + 1 end
    while wait > 1 and tokens + (wait - 1) * rate + slack >= cost do wait = wait - 1 end
  end
  remaining = math.floor(tokens)
  reset = math.ceil((limit - tokens) / math.max(rate, 2.2250738585072014e-308))
  retry = math.max(wait, 1)
end
local f = function(x) return string.format('%.17g', x) end
redis.call('HSET', KEYS[1], 'w', f(window), 't', f(tokens), 'l', f(last))
redis.call('PEXPIRE', KEYS[1], f(window + 60000))
return {allowed, remaining, reset, retry}
"#;

/// A calendar quota's period: `KEYS[1]` the period's count; ARGV limit,
/// cost, the Unix ms at which the key may go (after the period's end).
/// Returns {allowed, the count after the call}.
pub const QUOTA: &str = r#"
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local raw = redis.call('GET', KEYS[1])
local current = 0
if raw then
  current = tonumber(raw)
  if not current then return redis.error_reply('quota count is not a number') end
end
if current + cost > limit then return {0, current} end
local n = redis.call('INCRBY', KEYS[1], cost)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return {1, n}
"#;

/// Give `ARGV[1]` back to a period's count `KEYS[1]`, never below zero; a
/// count that is not there stays so. Returns the count after.
pub const QUOTA_REFUND: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local current = tonumber(raw)
if not current then return redis.error_reply('quota count is not a number') end
local cost = tonumber(ARGV[1])
if current == 0 or cost == 0 then return current end
local left = math.max(current - cost, 0)
redis.call('SET', KEYS[1], left, 'KEEPTTL')
return left
"#;

/// A response kept in Redis, and its remaining time to live: `KEYS[1]`.
/// Returns {value, pttl} or nil.
pub const CACHE_GET: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return nil end
return {v, redis.call('PTTL', KEYS[1])}
"#;
