"""The Lua scripts a Redis partition runs: one round trip per call, atomic.

Key layout inside a partition, below the namespace ``ns`` (``<KEY_PREFIX>:_tc:``):

- ``ns t:<tag>``       the tag's token on this partition (random, made lazily)
- ``ns gen``           the partition's generation token; every tagged entry carries it
- ``ns lease``         present while this partition's tag tokens are known current
- ``ns fence:<id>``    on the OTHER partitions: invalidations partition <id> missed
- ``ns grant:<id>``    on the OTHER partitions: the latest lease deadline granted to <id>

A tagged entry is stored as ``"T" n "\\n" gen "\\n" (tag "\\n" token "\\n")*n body``.
It is valid while the generation and every tag token on the partition still
equal what it recorded: invalidating a tag deletes its token, and a lost token
(eviction, flush) can never match again, so lost metadata only ever makes
entries invalid. Tokens are random, supplied by the client with each call.

The scripts touch keys they do not declare in KEYS; that is fine on a
standalone Redis server, which is what a partition is.
"""

PRELUDE = r"""
local ns = ARGV[1]

local function parse(v)
  local nl = string.find(v, '\n', 2, true)
  local n = tonumber(string.sub(v, 2, nl - 1))
  local pos = nl + 1
  nl = string.find(v, '\n', pos, true)
  local meta = {ns .. 'gen', string.sub(v, pos, nl - 1)}
  pos = nl + 1
  for i = 1, n do
    nl = string.find(v, '\n', pos, true)
    meta[#meta + 1] = ns .. 't:' .. string.sub(v, pos, nl - 1)
    pos = nl + 1
    nl = string.find(v, '\n', pos, true)
    meta[#meta + 1] = string.sub(v, pos, nl - 1)
    pos = nl + 1
  end
  return meta, pos
end

local function is_tagged(v)
  return string.byte(v, 1) == 84
end

-- The body of a stored value, or false when its tags were invalidated.
local function body_of(v)
  if not is_tagged(v) then return v end
  local meta, pos = parse(v)
  local keys = {}
  for i = 1, #meta, 2 do keys[#keys + 1] = meta[i] end
  local current = redis.call('MGET', unpack(keys))
  for i = 1, #keys do
    if current[i] ~= meta[2 * i] then return false end
  end
  return string.sub(v, pos)
end

-- Make a token outlive ttl (nil: forever); never shorten it.
local function extend(key, ttl)
  local left = redis.call('PTTL', key)
  if left < 0 then return end
  if not ttl then redis.call('PERSIST', key)
  elseif left < ttl then redis.call('PEXPIRE', key, ttl) end
end

local function token(key, fresh, ttl)
  local tok = redis.call('GET', key)
  if tok then extend(key, ttl); return tok end
  if ttl then redis.call('SET', key, fresh, 'PX', ttl) else redis.call('SET', key, fresh) end
  return fresh
end
"""

# KEYS: entry keys. ARGV: ns, leased ('1' when tagged entries need a live lease).
# Returns {lease, body-or-false-or-0 ...}: lease is -3 when no tagged entry was
# seen, else the lease's PTTL; 0 marks a tagged entry that cannot be trusted
# because the lease is gone.
READ = (
    PRELUDE
    + r"""
local leased = ARGV[2] == '1'
local out = {-3}
local lease_ok = true
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and is_tagged(v) then
    if leased and out[1] == -3 then
      out[1] = redis.call('PTTL', ns .. 'lease')
      lease_ok = out[1] > 0
    end
    if lease_ok then v = body_of(v) else v = 0 end
  end
  out[i + 1] = v
end
return out
"""
)

# KEYS: entry keys. ARGV: ns, fresh token, nx, then per entry:
#   ttl_ms ('' = forever), n, tag*n, snapshot flag, [gen, token*n], body
# A snapshot (taken before the value was computed) that no longer matches the
# current tokens means an invalidation happened meanwhile: the entry is not stored.
# Returns 1/0 per entry (stored or not).
WRITE = (
    PRELUDE
    + r"""
local fresh, nx = ARGV[2], ARGV[3] == '1'
local a = 4
local out = {}
for i, k in ipairs(KEYS) do
  local ttl = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1])
  local tags = {unpack(ARGV, a + 2, a + 1 + n)}
  a = a + 2 + n
  local snap = nil
  if ARGV[a] == '1' then snap = {unpack(ARGV, a + 1, a + 1 + n)}; a = a + 1 + n + 1
  else a = a + 1 end
  local body = ARGV[a]
  a = a + 1
  local ok = 1
  if nx then
    local cur = redis.call('GET', k)
    if cur and body_of(cur) then ok = 0 end
  end
  if ok == 1 and n > 0 then
    local gen = token(ns .. 'gen', fresh, nil)
    if snap and snap[1] ~= gen then ok = 0 end
    local parts = {'T', n, '\n', gen, '\n'}
    for j = 1, n do
      local tok = token(ns .. 't:' .. tags[j], fresh, ttl)
      if snap and snap[j + 1] ~= tok then ok = 0 end
      parts[#parts + 1] = tags[j] .. '\n' .. tok .. '\n'
    end
    parts[#parts + 1] = body
    body = table.concat(parts)
  end
  if ok == 1 then
    if ttl then redis.call('SET', k, body, 'PX', ttl) else redis.call('SET', k, body) end
  end
  out[i] = ok
end
return out
"""
)

# ARGV: ns, fresh token, ttl_ms ('' = forever), tag*. Returns {gen, token*}.
SNAPSHOT = (
    PRELUDE
    + r"""
local ttl = tonumber(ARGV[3])
local out = {token(ns .. 'gen', ARGV[2], nil)}
for i = 4, #ARGV do out[#out + 1] = token(ns .. 't:' .. ARGV[i], ARGV[2], ttl) end
return out
"""
)

# KEYS: key. ARGV: ns, ttl_ms ('' = forever, '0' = delete). Returns 1 if the entry existed.
TOUCH = (
    PRELUDE
    + r"""
local v = redis.call('GET', KEYS[1])
if not v or not body_of(v) then return 0 end
local ttl = tonumber(ARGV[2])
if ttl == 0 then redis.call('DEL', KEYS[1]); return 1 end
if is_tagged(v) then
  local meta = parse(v)
  for i = 3, #meta, 2 do extend(meta[i], ttl) end
end
if ttl then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return 1
"""
)

# KEYS: key. ARGV: ns, delta. Returns the new value as digits, or false if missing.
# Arithmetic happens in Redis' INCRBY (64-bit exact), never in Lua's doubles.
INCR = (
    PRELUDE
    + r"""
local v = redis.call('GET', KEYS[1])
if not v then return false end
local body = body_of(v)
if not body then return false end
if not is_tagged(v) then
  redis.call('INCRBY', KEYS[1], ARGV[2])
  return redis.call('GET', KEYS[1])
end
local scratch = ns .. 'incr'
redis.call('SET', scratch, body)
local ok, err = pcall(redis.call, 'INCRBY', scratch, ARGV[2])
local total = redis.call('GET', scratch)
redis.call('DEL', scratch)
if not ok then return redis.error_reply(err.err or tostring(err)) end
redis.call('SET', KEYS[1], string.sub(v, 1, #v - #body) .. total, 'KEEPTTL')
return total
"""
)

# KEYS: key. ARGV: ns. Returns {body, pttl, tag*} for a valid entry, or false.
ENTRY = (
    PRELUDE
    + r"""
local v = redis.call('GET', KEYS[1])
if not v then return false end
local body = body_of(v)
if not body then return false end
local out = {body, redis.call('PTTL', KEYS[1])}
if is_tagged(v) then
  local meta = parse(v)
  for i = 3, #meta, 2 do out[#out + 1] = string.sub(meta[i], #ns + 3) end
end
return out
"""
)

# --- fencing: keeping a partition that missed an invalidation from serving stale entries ---

# On another partition, for each missed partition id: count the miss and
# return the latest lease deadline granted to it. ARGV: ns, id*. Returns {grant-or-false *}.
RECORD_FENCE = (
    PRELUDE
    + r"""
local out = {}
for i = 2, #ARGV do
  redis.call('INCR', ns .. 'fence:' .. ARGV[i])
  out[#out + 1] = redis.call('GET', ns .. 'grant:' .. ARGV[i])
end
return out
"""
)

# On another partition: note the lease deadline about to be granted to <id> and
# return the count of misses recorded for it. ARGV: ns, id, deadline_ms.
CHECK_FENCE = (
    PRELUDE
    + r"""
local grant = ns .. 'grant:' .. ARGV[2]
local deadline = tonumber(ARGV[3])
if deadline > tonumber(redis.call('GET', grant) or '0') then
  redis.call('SET', grant, ARGV[3], 'PXAT', ARGV[3])
end
return tonumber(redis.call('GET', ns .. 'fence:' .. ARGV[2]) or '0')
"""
)

# On the partition itself: drop every tagged entry if it missed something (a new
# generation), then grant the lease until deadline_ms. ARGV: ns, deadline_ms, fenced.
LEASE = (
    PRELUDE
    + r"""
if ARGV[3] == '1' then redis.call('DEL', ns .. 'gen') end
redis.call('SET', ns .. 'lease', '1', 'PXAT', ARGV[2])
return 1
"""
)

# On another partition: forget the misses of <id> that were just made good,
# unless more were recorded meanwhile. ARGV: ns, id, count.
CLEAR_FENCE = (
    PRELUDE
    + r"""
local key = ns .. 'fence:' .. ARGV[2]
if redis.call('GET', key) == ARGV[3] then redis.call('DEL', key) end
return 1
"""
)
