//! The Lua scripts Redis runs for each check (EVALSHA; the script body is
//! sent once per connection when Redis answers NOSCRIPT). The rate limits
//! are the in-memory algorithms of `policy::host::counters` written again,
//! so a limit means the same in one process and across many: the same
//! integer arithmetic for the sliding window, the same IEEE doubles (Lua's
//! numbers) in the same order for the token bucket, and the state stored
//! with 17 significant digits so that a refill computed from it is exact.
//!
//! Time is Redis's own clock (`TIME`) unless a test passes one, so the
//! gateways' clocks need not agree. A limit's key expires a minute after
//! it would be back to full anyway (it is only collected, never needed).
//! A quota or cache script touches only `KEYS[1]`; the rate script touches
//! the keys of one call's limits, which a Redis Cluster needs in one slot
//! (`Cluster::rate_check_all` groups them by slot).

/// Every rate limit of one call, all or nothing: `KEYS` the limits' keys
/// (a sliding window's a hash {w, s, p, c}, a token bucket's {w, t, l}, a
/// fixed period's a count, as [`QUOTA`]'s); ARGV cost, now ms (empty:
/// Redis's clock), commit (`1`: count the cost if every limit has room;
/// `0`: only check), then per key its algorithm (`sw`, `tb` or `q`), limit
/// and window ms (for `q`, the Unix ms at which the key may go). Returns
/// per key {allowed, remaining, reset ms, retry-after ms} (for `q` the
/// times are 0: the caller knows the period). A key given twice is checked
/// twice, the second time with the first's count.
pub const RATE_LIMITS: &str = r#"
local f = function(x) return string.format('%.17g', x) end

-- Sliding window (the previous window weighted by how much of it still
-- overlaps); st = {w, s, p, c} as stored.
local function sliding(st, limit, window, cost, now)
  local aligned = now - now % window
  local start, prev, curr = aligned, 0, 0
  if tonumber(st[1]) == window then
    start = tonumber(st[2]); prev = tonumber(st[3]); curr = tonumber(st[4])
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
  return {allowed, remaining, reset, retry}, {f(window), f(start), f(prev), f(curr)}
end

-- Token bucket (refilled at limit per window, holding at most limit);
-- st = {w, t, l} as stored.
local function bucket(st, limit, window, cost, now)
  local tokens, last = limit, now
  if tonumber(st[1]) == window then
    tokens = tonumber(st[2]); last = tonumber(st[3])
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
    -- A bucket fuller than a lowered limit: 0, as Rust's saturating cast.
    if rate > 0 then reset = math.max(math.ceil((limit - tokens) / rate), 0) end
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
    reset = math.max(math.ceil((limit - tokens) / math.max(rate, 2.2250738585072014e-308)), 0)
    retry = math.max(wait, 1)
  end
  return {allowed, remaining, reset, retry}, {f(window), f(tokens), f(last)}
end

local cost = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local commit = ARGV[3] == '1'
local states, writes, out, all = {}, {}, {}, true
for i, key in ipairs(KEYS) do
  local at = 3 + (i - 1) * 3
  local alg, limit, window = ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local st, d, ttl = states[key], nil, nil
  if alg == 'sw' then
    st = st or redis.call('HMGET', key, 'w', 's', 'p', 'c')
    d, st = sliding(st, limit, window, cost, now)
    ttl = 2 * window + 60000
  elseif alg == 'tb' then
    st = st or redis.call('HMGET', key, 'w', 't', 'l')
    d, st = bucket(st, limit, window, cost, now)
    ttl = window + 60000
  elseif alg == 'q' then
    if not st then
      local raw = redis.call('GET', key)
      st = {0}
      if raw then
        st[1] = tonumber(raw)
        if not st[1] then return redis.error_reply('quota count is not a number') end
      end
    end
    local current = st[1]
    if current + cost <= limit then
      d = {1, limit - current - cost, 0, 0}
      st = {current + cost}
    else
      d = {0, math.max(limit - current, 0), 0, 0}
    end
    ttl = window
  else
    return redis.error_reply('unknown algorithm ' .. tostring(alg))
  end
  states[key] = st
  writes[key] = {alg, st, ttl}
  if d[1] == 0 then all = false end
  out[i] = d
end
if commit and all then
  for key, w in pairs(writes) do
    local st = w[2]
    if w[1] == 'sw' then
      redis.call('HSET', key, 'w', st[1], 's', st[2], 'p', st[3], 'c', st[4])
      redis.call('PEXPIRE', key, f(w[3]))
    elseif w[1] == 'tb' then
      redis.call('HSET', key, 'w', st[1], 't', st[2], 'l', st[3])
      redis.call('PEXPIRE', key, f(w[3]))
    else
      redis.call('SET', key, string.format('%.0f', st[1]))
      redis.call('PEXPIREAT', key, f(w[3]))
    end
  end
end
return out
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
