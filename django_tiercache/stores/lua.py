"""The Redis Functions library a Redis partition runs: one round trip per call, atomic.

Key layout inside a partition, below the namespace ``ns`` (``<KEY_PREFIX>:_tc:``):

- ``ns t:<tag>``       the tag's token on this partition (random, made lazily)
- ``ns gen``           the partition's generation token; every tagged entry carries it
- ``ns l:<tag>``       writers (transactions) changing data behind the tag: no fills meanwhile
- ``ns lease``         present while this partition's tag tokens are known current
- ``ns fence:<id>``    on the OTHER partitions: invalidations partition <id> missed
- ``ns grant:<id>``    on the OTHER partitions: the latest lease deadline granted to <id>

A tagged entry is stored as ``"T" len ":" n "\\n" gen "\\n" (tag "\\n" token "\\n")*n body``.
It is valid while the generation and every tag token on the partition still
equal what it recorded: invalidating a tag deletes its token, and a lost token
(eviction, flush) can never match again, so lost metadata only ever makes
entries invalid. Tokens are random, supplied by the client with each call.

Functions (Redis 7) rather than EVAL scripts: the helpers below are compiled
once per server instead of on every call, which halves the per-call cost.
They touch keys they do not declare; that is fine on a standalone Redis
server, which is what a partition is. Each function's first argument is ns.
"""

import hashlib

LIBRARY_BODY = r"""
-- A tagged value is "T" <header length> ":" <header> <body>, the header being
-- n "\n" gen "\n" (tag "\n" token "\n")*n. The length prefix lets a read cut
-- the header out with one find, and remember its verdict: entries read
-- together mostly share their header.
local function split(v)
  local colon = string.find(v, ':', 2, true)
  local stop = colon + tonumber(string.sub(v, 2, colon - 1))
  return string.sub(v, colon + 1, stop), stop + 1
end

-- {token key, recorded token, ...} of a header, generation first.
local function parse(ns, header)
  local nl = string.find(header, '\n', 1, true)
  local n = tonumber(string.sub(header, 1, nl - 1))
  local pos = nl + 1
  nl = string.find(header, '\n', pos, true)
  local meta = {ns .. 'gen', string.sub(header, pos, nl - 1)}
  pos = nl + 1
  for i = 1, n do
    nl = string.find(header, '\n', pos, true)
    meta[#meta + 1] = ns .. 't:' .. string.sub(header, pos, nl - 1)
    pos = nl + 1
    nl = string.find(header, '\n', pos, true)
    meta[#meta + 1] = string.sub(header, pos, nl - 1)
    pos = nl + 1
  end
  return meta
end

local function is_tagged(v)
  return string.byte(v, 1) == 84
end

local function header_valid(ns, header)
  local meta = parse(ns, header)
  for i = 1, #meta, 2 do
    if redis.call('GET', meta[i]) ~= meta[i + 1] then return false end
  end
  return true
end

-- Is a stored value still valid? verdicts remembers headers already checked.
local function valid(ns, v, verdicts)
  if not is_tagged(v) then return true end
  local header = split(v)
  local verdict = verdicts[header]
  if verdict == nil then
    verdict = header_valid(ns, header)
    verdicts[header] = verdict
  end
  return verdict
end

-- The body of a stored value, or false when its tags were invalidated.
local function body_of(ns, v, verdicts)
  if not valid(ns, v, verdicts) then return false end
  if not is_tagged(v) then return v end
  local _, start = split(v)
  return string.sub(v, start)
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

local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- Is a write to data behind this tag in progress (a transaction that has not
-- committed yet)? Locks are a sorted set of writer ids scored by expiry.
local function locked(ns, tag)
  local key = ns .. 'l:' .. tag
  if redis.call('EXISTS', key) == 0 then return false end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms())
  return redis.call('ZCARD', key) > 0
end

-- The tag's token, or false while the tag is locked: nothing may be cached
-- under a tag whose data is being changed.
local function tag_token(ns, tag, fresh, ttl)
  if locked(ns, tag) then return false end
  return token(ns .. 't:' .. tag, fresh, ttl)
end

-- keys: entries. args: ns, leased ('1' when tagged entries need a live lease).
-- Returns {lease, value-or-false-or-0 ...}: lease is -3 when no tagged entry was
-- seen, else the lease's PTTL; 0 marks a tagged entry that cannot be trusted
-- because the lease is gone.
local function read(keys, args)
  local ns, leased = args[1], args[2] == '1'
  local out = {-3}
  local lease_ok = true
  local verdicts = {}
  for first = 1, #keys, 1000 do
    local values = redis.call('MGET', unpack(keys, first, math.min(first + 999, #keys)))
    for i, v in ipairs(values) do
      if v and is_tagged(v) then
        if leased and out[1] == -3 then
          out[1] = redis.call('PTTL', ns .. 'lease')
          lease_ok = out[1] > 0
        end
        -- A valid value goes back whole (the client cuts the header off):
        -- copying bodies here is most of what a read would cost.
        if not lease_ok then v = 0 elseif not valid(ns, v, verdicts) then v = false end
      end
      out[first + i] = v
    end
  end
  return out
end

-- keys: entries. args: ns, fresh token, nx, then per entry:
--   ttl_ms ('' = forever), n, tag*n, snapshot flag, [gen, token*n], body
-- A snapshot (taken before the value was computed) that no longer matches the
-- current tokens means an invalidation happened meanwhile: the entry is not
-- stored. Returns 1/0 per entry (stored or not).
local function write(keys, args)
  local ns, fresh, nx = args[1], args[2], args[3] == '1'
  local a = 4
  local out = {}
  for i, k in ipairs(keys) do
    local ttl = tonumber(args[a])
    local n = tonumber(args[a + 1])
    local tags = {unpack(args, a + 2, a + 1 + n)}
    a = a + 2 + n
    local snap = nil
    if args[a] == '1' then snap = {unpack(args, a + 1, a + 1 + n)}; a = a + n + 2
    else a = a + 1 end
    local body = args[a]
    a = a + 1
    local ok = 1
    if nx then
      local cur = redis.call('GET', k)
      if cur and body_of(ns, cur, {}) then ok = 0 end
    end
    if ok == 1 and n > 0 then
      local gen = token(ns .. 'gen', fresh, nil)
      if snap and snap[1] ~= gen then ok = 0 end
      local parts = {n, '\n', gen, '\n'}
      for j = 1, n do
        local tok = tag_token(ns, tags[j], fresh, ttl)
        if not tok or (snap and snap[j + 1] ~= tok) then ok = 0; tok = '!' end
        parts[#parts + 1] = tags[j] .. '\n' .. tok .. '\n'
      end
      local header = table.concat(parts)
      body = 'T' .. #header .. ':' .. header .. body
    end
    if ok == 1 then
      if ttl then redis.call('SET', k, body, 'PX', ttl) else redis.call('SET', k, body) end
    end
    out[i] = ok
  end
  return out
end

-- args: ns, fresh token, ttl_ms ('' = forever), tag*. Returns {gen, token*};
-- a locked tag's token is '!', which no write will ever match.
local function snapshot(keys, args)
  local ns, fresh, ttl = args[1], args[2], tonumber(args[3])
  local out = {token(ns .. 'gen', fresh, nil)}
  for i = 4, #args do out[#out + 1] = tag_token(ns, args[i], fresh, ttl) or '!' end
  return out
end

-- keys: key. args: ns, ttl_ms ('' = forever, '0' = delete). Returns 1 if the entry existed.
local function touch(keys, args)
  local ns = args[1]
  local v = redis.call('GET', keys[1])
  if not v or not body_of(ns, v, {}) then return 0 end
  local ttl = tonumber(args[2])
  if ttl == 0 then redis.call('DEL', keys[1]); return 1 end
  if is_tagged(v) then
    local meta = parse(ns, (split(v)))
    for i = 3, #meta, 2 do extend(meta[i], ttl) end
  end
  if ttl then redis.call('PEXPIRE', keys[1], ttl) else redis.call('PERSIST', keys[1]) end
  return 1
end

-- keys: key. args: ns, delta. Returns the new value as digits, or false if missing.
-- Arithmetic happens in Redis' INCRBY (64-bit exact), never in Lua's doubles.
local function incr(keys, args)
  local ns = args[1]
  local v = redis.call('GET', keys[1])
  if not v then return false end
  local body = body_of(ns, v, {})
  if not body then return false end
  if not is_tagged(v) then
    redis.call('INCRBY', keys[1], args[2])
    return redis.call('GET', keys[1])
  end
  local scratch = ns .. 'incr'
  redis.call('SET', scratch, body)
  local ok, err = pcall(redis.call, 'INCRBY', scratch, args[2])
  local total = redis.call('GET', scratch)
  redis.call('DEL', scratch)
  if not ok then return redis.error_reply(err.err or tostring(err)) end
  redis.call('SET', keys[1], string.sub(v, 1, #v - #body) .. total, 'KEEPTTL')
  return total
end

-- keys: key. args: ns. Returns {body, pttl, tag*} for a valid entry, or false.
local function entry(keys, args)
  local ns = args[1]
  local v = redis.call('GET', keys[1])
  if not v then return false end
  local body = body_of(ns, v, {})
  if not body then return false end
  local out = {body, redis.call('PTTL', keys[1])}
  if is_tagged(v) then
    local meta = parse(ns, (split(v)))
    for i = 3, #meta, 2 do out[#out + 1] = string.sub(meta[i], #ns + 3) end
  end
  return out
end

-- Write locks: a transaction that changes data behind tags invalidates them when
-- it writes and keeps them locked (no cache fills) until it commits.

-- args: ns, writer id, until_ms (absolute expiry of the lock), tag*.
local function lock(keys, args)
  local ns, writer, until_ms = args[1], args[2], tonumber(args[3])
  for i = 4, #args do
    local key = ns .. 'l:' .. args[i]
    redis.call('ZADD', key, until_ms, writer)
    if redis.call('PTTL', key) < 0 then redis.call('PEXPIREAT', key, until_ms)
    else redis.call('PEXPIREAT', key, until_ms, 'GT') end
    redis.call('DEL', ns .. 't:' .. args[i])
  end
  return 1
end

-- args: ns, writer id, tag*. Releases the writer's locks and invalidates the tags.
local function unlock(keys, args)
  local ns, writer = args[1], args[2]
  for i = 3, #args do
    redis.call('ZREM', ns .. 'l:' .. args[i], writer)
    redis.call('DEL', ns .. 't:' .. args[i])
  end
  return 1
end

-- Fencing: keeping a partition that missed an invalidation from serving stale entries.

-- On another partition, for each missed partition id: count the miss and
-- return the latest lease deadline granted to it. args: ns, id*.
local function record_fence(keys, args)
  local ns = args[1]
  local out = {}
  for i = 2, #args do
    redis.call('INCR', ns .. 'fence:' .. args[i])
    out[#out + 1] = redis.call('GET', ns .. 'grant:' .. args[i])
  end
  return out
end

-- On another partition: note the lease deadline about to be granted to <id> and
-- return the count of misses recorded for it. args: ns, id, deadline_ms.
local function check_fence(keys, args)
  local ns = args[1]
  local grant = ns .. 'grant:' .. args[2]
  local deadline = tonumber(args[3])
  if deadline > tonumber(redis.call('GET', grant) or '0') then
    redis.call('SET', grant, args[3], 'PXAT', args[3])
  end
  return tonumber(redis.call('GET', ns .. 'fence:' .. args[2]) or '0')
end

-- On the partition itself: drop every tagged entry if it missed something (a
-- new generation), then grant the lease until deadline_ms. args: ns, deadline_ms, fenced.
local function lease(keys, args)
  local ns = args[1]
  if args[3] == '1' then redis.call('DEL', ns .. 'gen') end
  redis.call('SET', ns .. 'lease', '1', 'PXAT', args[2])
  return 1
end

-- On another partition: forget the misses of <id> that were just made good,
-- unless more were recorded meanwhile. args: ns, id, count.
local function clear_fence(keys, args)
  local key = args[1] .. 'fence:' .. args[2]
  if redis.call('GET', key) == args[3] then redis.call('DEL', key) end
  return 1
end
"""

FUNCTIONS = (
    "read",
    "write",
    "snapshot",
    "touch",
    "incr",
    "entry",
    "lock",
    "unlock",
    "record_fence",
    "check_fence",
    "lease",
    "clear_fence",
)
READ_ONLY = ("read", "entry")

# The library's name carries a hash of its code, so that two releases running
# side by side during a deploy each call their own functions.
VERSION = hashlib.blake2b(
    repr((LIBRARY_BODY, FUNCTIONS, READ_ONLY)).encode(), digest_size=4
).hexdigest()
LIBRARY_NAME = f"tiercache_{VERSION}"


def function_name(name: str) -> str:
    return f"tc_{VERSION}_{name}"


def _registration(name: str) -> str:
    flags = "{'no-writes'}" if name in READ_ONLY else "{}"
    return (
        f"redis.register_function{{function_name='{function_name(name)}', "
        f"callback={name}, flags={flags}}}"
    )


LIBRARY = "\n".join([f"#!lua name={LIBRARY_NAME}", LIBRARY_BODY, *map(_registration, FUNCTIONS)])
