"""The journal's Lua scripts: every change to the journal is one atomic script.

Keys (all under one hash tag, so they share a cluster slot), with ``J`` the
journal's prefix:

- ``J:state``    hash   row -> "<version>|<op>|<op's signature>"; op is save (every
                        field), update (some fields) or delete. A row is pending while here.
- ``J:f:<row>``  hash   field -> signed JSON value (signing.py): the row's pending values.
- ``J:pending``  zset   row -> when it may be drained (ms); a row waiting for a drain.
- ``J:inflight`` zset   row -> when its claim runs out (ms); a row a drainer holds.
- ``J:owner``    hash   row -> "<token>|<version>": who holds it, at which version.
- ``J:since``    zset   row -> when its oldest undrained write came (ms).
- ``J:attempts`` hash   row -> failed attempts so far; ``J:errors`` its last error.
- ``J:dead``     hash   row -> JSON dead letter (op, its signature, fields, error, attempts;
                        quarantined: a row this site did not write, never retried).
- ``J:seq``      string the version counter (INCR); ``J:counters`` hash of totals.
- ``J:epoch``    string written once; its loss means the journal was lost.

Invariant: a row in ``J:state`` is in exactly one of ``J:pending`` and
``J:inflight``. Nothing has a TTL, so volatile-* eviction never drops them.
"""

# Shared prelude: server time in ms (the one clock every process agrees on).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: state, f:<row>, pending, inflight, since, seq, counters, epoch
# ARGV: row, op, max_pending, op's signature, the signature of "save" (an update of a
# pending save stays a save), n, n x (field, its stored value expected now or ""),
# then field, value, field, value ...
# Returns {version, pending count, epoch}; {-1, n}: journal full; {-2, n}: update of a
# pending delete; {-3, n}: an expected value changed (an increment raced another: read
# again and retry).
ENQUEUE = (
    _NOW
    + """
local row, op, max_pending = ARGV[1], ARGV[2], tonumber(ARGV[3])
local op_mac, save_mac, expected = ARGV[4], ARGV[5], tonumber(ARGV[6])
local first_value = 7 + 2 * expected
-- The epoch in microseconds: a journal lost and begun again within the same
-- millisecond as the first one (a fast test, a fast flush) still shows a new epoch.
redis.call('SETNX', KEYS[8], t[1] .. string.format('%06d', tonumber(t[2])))
local previous = redis.call('HGET', KEYS[1], row)
local count = redis.call('HLEN', KEYS[1])
if not previous and max_pending > 0 and count >= max_pending then
  redis.call('HINCRBY', KEYS[7], 'backpressure', 1)
  return {-1, count}
end
local previous_op = previous and string.match(previous, '^%d+|(%a+)')
for i = 7, first_value - 1, 2 do
  if (redis.call('HGET', KEYS[2], ARGV[i]) or '') ~= ARGV[i + 1] then return {-3, count} end
end
if op == 'update' then
  if previous_op == 'delete' then return {-2, count} end
  if previous_op == 'save' then op, op_mac = 'save', save_mac end
else
  redis.call('DEL', KEYS[2])
end
for i = first_value, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
local version = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], row, version .. '|' .. op .. '|' .. op_mac)
redis.call('ZADD', KEYS[5], 'NX', now, row)
if not previous then
  count = count + 1
  redis.call('ZADD', KEYS[3], now, row)
elseif not redis.call('ZSCORE', KEYS[4], row) then
  redis.call('ZADD', KEYS[3], 'LT', now, row)
end
redis.call('HINCRBY', KEYS[7], 'queued', 1)
return {version, count, redis.call('GET', KEYS[8])}
"""
)

# Moves rows whose claim ran out (a drainer died) back to pending.
_RECLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, row in ipairs(expired) do
  redis.call('ZREM', KEYS[2], row)
  redis.call('HDEL', KEYS[3], row)
  if redis.call('HEXISTS', KEYS[4], row) == 1 then redis.call('ZADD', KEYS[1], now, row) end
end
"""

# A state this app did not write (no "<version>|<op>" at all): straight to the dead
# letters, quarantined, so that it can neither stop a claim nor be retried.
# KEYS[5], KEYS[6], KEYS[7]: dead, since, counters; `fprefix`: prefix of f: keys.
_QUARANTINE_MALFORMED = """
local function quarantine(row, state, fprefix)
  local letter = cjson.encode({op = 'unknown', fields = {}, attempts = 0, quarantined = true,
    error = 'quarantined: the journal state ' .. string.format('%q', string.sub(state, 1, 80))
      .. ' was not written by this site'})
  redis.call('HSET', KEYS[5], row, letter)
  redis.call('HDEL', KEYS[4], row)
  redis.call('DEL', fprefix .. row)
  redis.call('ZREM', KEYS[6], row)
  redis.call('HINCRBY', KEYS[7], 'dead', 1)
end
"""

# KEYS: pending, inflight, owner, state, dead, since, counters
# ARGV: token, limit, lease_ms, prefix of f: keys
# Returns {{row, version, op, {field, value, ...}, op's signature}, ...}
CLAIM = (
    _NOW
    + _RECLAIM
    + _QUARANTINE_MALFORMED
    + """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, row in ipairs(rows) do
  redis.call('ZREM', KEYS[1], row)
  local state = redis.call('HGET', KEYS[4], row)
  local version, op, mac
  if state then version, op, mac = string.match(state, '^(%d+)|(%a+)|?(.*)$') end
  if state and not version then
    quarantine(row, state, ARGV[4])
  elseif state then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), row)
    redis.call('HSET', KEYS[3], row, ARGV[1] .. '|' .. version)
    claimed[#claimed + 1] = {row, version, op, redis.call('HGETALL', ARGV[4] .. row), mac}
  end
end
return claimed
"""
)

# Claims named rows for a direct write (a plain save of a row with pending
# state), taking them from any drainer that holds them: that drainer's
# ``confirm`` then fails and it leaves them alone.
# KEYS: pending, inflight, owner, state, dead, since, counters
# ARGV: token, lease_ms, prefix, row, row ...
CLAIM_ROWS = (
    _NOW
    + _QUARANTINE_MALFORMED
    + """
local claimed = {}
for i = 4, #ARGV do
  local row = ARGV[i]
  local state = redis.call('HGET', KEYS[4], row)
  local version, op, mac
  if state then version, op, mac = string.match(state, '^(%d+)|(%a+)|?(.*)$') end
  if state and not version then
    redis.call('ZREM', KEYS[1], row)
    quarantine(row, state, ARGV[3])
  elseif state then
    redis.call('ZREM', KEYS[1], row)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), row)
    redis.call('HSET', KEYS[3], row, ARGV[1] .. '|' .. version)
    claimed[#claimed + 1] = {row, version, op, redis.call('HGETALL', ARGV[3] .. row), mac}
  end
end
return claimed
"""
)

# Which of these rows does this token still hold at these versions' claim?
# KEYS: owner; ARGV: token, row, version, row, version ... Returns the rows held.
CONFIRM = """
local held = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] .. '|' .. ARGV[i + 1] then
    held[#held + 1] = ARGV[i]
  end
end
return held
"""

# The rows' states reached the database. A row whose version is unchanged is
# done; one written again meanwhile goes back to pending with its newer state.
# KEYS: state, pending, inflight, owner, since, attempts, errors, counters
# ARGV: token, f: prefix, row, version, row, version ...
ACK = (
    _NOW
    + """
local written = 0
for i = 3, #ARGV, 2 do
  local row, version = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[4], row) == ARGV[1] .. '|' .. version then
    redis.call('ZREM', KEYS[3], row)
    redis.call('HDEL', KEYS[4], row)
    local state = redis.call('HGET', KEYS[1], row)
    if state and string.match(state, '^(%d+)|') == version then
      redis.call('HDEL', KEYS[1], row)
      redis.call('DEL', ARGV[2] .. row)
      redis.call('ZREM', KEYS[5], row)
      redis.call('HDEL', KEYS[6], row)
      redis.call('HDEL', KEYS[7], row)
    elseif state then
      redis.call('ZADD', KEYS[2], now, row)
    end
    written = written + 1
  end
end
redis.call('HINCRBY', KEYS[8], 'written', written)
-- Rows written per minute, for the drain rate (kept three minutes).
local minute = KEYS[8] .. ':minute:' .. math.floor(now / 60000)
redis.call('INCRBY', minute, written)
redis.call('EXPIRE', minute, 180)
return written
"""
)

# Gives rows back without counting an attempt (the database was unreachable,
# or a direct write's transaction rolled back).
# KEYS: state, pending, inflight, owner; ARGV: token, delay_ms, row, version ...
RELEASE = (
    _NOW
    + """
for i = 3, #ARGV, 2 do
  local row = ARGV[i]
  if redis.call('HGET', KEYS[4], row) == ARGV[1] .. '|' .. ARGV[i + 1] then
    redis.call('ZREM', KEYS[3], row)
    redis.call('HDEL', KEYS[4], row)
    if redis.call('HEXISTS', KEYS[1], row) == 1 then
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), row)
    end
  end
end
return 0
"""
)

# A row failed: retry after a backoff, or after max_retries move it to the
# dead letters (only if no newer write came meanwhile; a newer one is retried).
# KEYS: state, pending, inflight, owner, since, attempts, errors, dead, counters
# ARGV: token, row, version, error, backoff_ms, max_retries, dead letter JSON, f: key
FAIL = (
    _NOW
    + """
local row, version = ARGV[2], ARGV[3]
if redis.call('HGET', KEYS[4], row) ~= ARGV[1] .. '|' .. version then return -1 end
redis.call('ZREM', KEYS[3], row)
redis.call('HDEL', KEYS[4], row)
redis.call('HINCRBY', KEYS[9], 'failed', 1)
local attempts = redis.call('HINCRBY', KEYS[6], row, 1)
redis.call('HSET', KEYS[7], row, ARGV[4])
local state = redis.call('HGET', KEYS[1], row)
if attempts > tonumber(ARGV[6]) and state and string.match(state, '^(%d+)|') == version then
  redis.call('HSET', KEYS[8], row, ARGV[7])
  redis.call('HDEL', KEYS[1], row)
  redis.call('DEL', ARGV[8])
  redis.call('ZREM', KEYS[5], row)
  redis.call('HDEL', KEYS[6], row)
  redis.call('HDEL', KEYS[7], row)
  redis.call('HINCRBY', KEYS[9], 'dead', 1)
  return 0
end
local delay = tonumber(ARGV[5]) * math.pow(2, math.min(attempts - 1, 16))
if state then redis.call('ZADD', KEYS[2], now + delay, row) end
return attempts
"""
)

# Re-drives dead letters as what they were: a row with no pending state gets the
# dead state back as a new write; a row written since keeps its newer values and
# the dead letter's other fields go under them (a pending delete wins outright),
# and a dead full save under a newer partial one makes the row a save again (else
# the update of a row that was never created would fail for ever). Quarantined
# letters (rows this site did not write) and unreadable ones are left alone. The
# values keep their signatures; the drain checks them again.
# KEYS: state, pending, since, seq, dead, counters; ARGV: f: prefix, row, row ...
RETRY_DEAD = (
    _NOW
    + """
local retried = 0
for i = 2, #ARGV do
  local row = ARGV[i]
  local letter = redis.call('HGET', KEYS[5], row)
  local ok, decoded = false, nil
  if letter then ok, decoded = pcall(cjson.decode, letter) end
  if ok and type(decoded) == 'table' and not decoded['quarantined']
      and type(decoded['op']) == 'string' and type(decoded['fields']) == 'table' then
    local state = redis.call('HGET', KEYS[1], row)
    local fkey = ARGV[1] .. row
    local mac = decoded['op_mac'] or ''
    if not state then
      local version = redis.call('INCR', KEYS[4])
      redis.call('HSET', KEYS[1], row, version .. '|' .. decoded['op'] .. '|' .. mac)
      redis.call('DEL', fkey)
      for field, value in pairs(decoded['fields']) do redis.call('HSET', fkey, field, value) end
      redis.call('ZADD', KEYS[2], now, row)
      redis.call('ZADD', KEYS[3], 'NX', now, row)
    elseif not string.match(state, '^%d+|delete') and decoded['op'] ~= 'delete' then
      for field, value in pairs(decoded['fields']) do redis.call('HSETNX', fkey, field, value) end
      if decoded['op'] == 'save' and string.match(state, '^%d+|update') then
        local version = redis.call('INCR', KEYS[4])
        redis.call('HSET', KEYS[1], row, version .. '|save|' .. mac)
      end
    end
    redis.call('HDEL', KEYS[5], row)
    retried = retried + 1
  end
end
return retried
"""
)
