"""The Redis Functions library a Redis partition runs: one round trip per call, atomic.

Key layout inside a partition, below the namespace ``ns`` (``<KEY_PREFIX>:_tc:``):

- ``ns s:<bucket>``     the slot table (stores/slots.py): 8,192 small hashes of 128
                        integer fields; field ``slot % 128`` of bucket ``slot // 128``
                        is the token of every tag whose slot that is (made lazily,
                        drawn from the meta hash's counter ``tok``)
- ``ns gen2``           the partition's generation token; every tagged entry carries it
                        (the ``2`` is the layout: entries of another layout, such as
                        the earlier one with tag names in their headers and ``ns t:<tag>``
                        token keys, find no generation of theirs and miss)
- ``ns lease``          present while this partition's tagged entries may be trusted
- ``ns lease:<nonce>``  a lease being granted, not yet in force
- ``ns meta``           one hash holding everything whose loss would be unsafe:

  - ``run``        the server's run_id when this hash was last checked (restarts)
  - ``epoch``      random, new whenever this hash is started over (memory lost)
  - ``born``       server ms when it was started over (grants before it are unknown)
  - ``quiet``      server ms until which nothing may be cached under tags
  - ``tok``        the counter tag tokens are drawn from; lost only with the hash,
                   and a hash started over empties the slot table and drops the
                   generation, so no token is drawn twice under one generation;
                   it starts at random (``counter_base``), so that a bucket the
                   start-over could not reach does not hold tokens it draws again
  - ``switches``   how often ``hello`` found the hash on a server other than the one
                   it was last checked on (a failover, a moved slot, a restart that
                   kept the data); carried over when the hash is started over
  - ``l:<slot>``   write locks: "until writer ..." (transactions changing the data of
                   a tag with that slot)
  - ``f:<id>``     invalidations partition <id> missed (kept on the OTHER partitions)
  - ``g:<id>``     the latest lease deadline granted to partition <id>, server ms
  - ``v:<id>``     the epoch partition <id> had when it last vouched for this one
  - ``fq``         server ms until which the quiet period comes from a fence (it
                   may have missed locks nobody else holds: it cannot be lent away)
  - ``adopted``    server ms until which a fence recorded here ends the quiet
                   period it ended early by adopting its peers' locks again
  - ``copies``     "until id epoch ...": partitions that copied this one's locks
                   after losing theirs (``lend_locks``); a lock landing here later
                   tells its writer, who locks that partition again
  - ``h``          ms: the longest write lock (or lock horizon) a writer declared
                   here, or quiet period the hash was started over with; ``hello``
                   waits it out on a hash found on another server, and a fenced
                   quiet period lasts that long at least, whatever the greeting or
                   renewing process knows (``carried_over``, ``fenced_quiet``)

- channel ``ns l1``     every change that can make a copy of an entry wrong
  (write, delete, incr, touch, a tag dropped, locked or unlocked, the
  generation dropped) is PUBLISHed there inside the function that makes it,
  so no change happens without its message (the L1 tier listens, see
  storage/coherence.py): ``k`` + a JSON array of keys, ``t`` + a JSON array
  of slots ("#<slot>", the slots of the tags changed), ``*`` for every entry
  of the namespace. ``clear`` publishes ``*`` for every namespace of the
  database (it empties them all). Two changes cannot make any copy wrong and
  go unannounced: a fill from a snapshot (it lands only where no valid entry
  was, under tokens unchanged since its value was read) and the unlock of
  tags whose locks held throughout (nothing was stored under them since the
  lock's own message).

Everything that must not be lost unnoticed lives in that one hash, so that it
can only be lost whole, and a lost hash is noticed: every function that needs
it starts it over (``ensure_meta``), dropping the generation (every tagged
entry) and refusing fills for the write-lock horizon, since locks it held may
be gone. A peer whose hash was started over has a new epoch, which the
partitions it vouched for notice at their next lease. A restart (with or
without persistence), a restore from an older snapshot or a failover changes
the server's run_id, which ``hello`` (the first call on every connection)
notices. Losing anything else (tokens, gen, a lease, an entry) only ever makes
entries invalid. Deadlines are the server's own (TIME, PX), never a client's.

A tagged entry is stored as ``"T" len ":" n "\\n" gen "\\n" (slot "\\n" token "\\n")*n body``.
It is valid while the generation and the token of every slot it recorded
still equal what it recorded. Tag names are not stored: change messages name
slots ("#<slot>"), and ``entry`` returns them so (a write under "#<slot>" is a
write under that slot). A value that merely starts with "T" but does not
parse is treated as invalid, never as an error that would fail the whole call.

Functions (Redis 7) rather than EVAL scripts: the helpers below are compiled
once per server instead of on every call. They touch keys they do not
declare; that is fine on a standalone Redis server, which is what a partition
is. A Redis Cluster runs a variant (``CLUSTER_LIBRARY``, at the end: SPUBLISH,
and ``write`` announcing first), and stores/cluster.py declares the keys a
call may touch, which the Functions ignore (but record_fence: it counts them),
so that a slot migration's ASK and TRYAGAIN rules cover them. Each function's
first argument is ns. Functions that keep the guarantee (locks, fences, leases)
may run on a full server (``allow-oom``); cache fills may not.
"""

import hashlib

LIBRARY_BODY = r"""
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local function server_info(field)
  return string.match(redis.call('INFO', 'server'), field .. ':([^\r\n]+)')
end

-- A tagged value is "T" <header length> ":" <header> <body>. Returns the
-- header and where the body starts, or nil for a value that does not parse.
local function split(v)
  local colon = string.find(v, ':', 2, true)
  if not colon then return nil end
  local length = tonumber(string.sub(v, 2, colon - 1))
  if not length or colon + length > #v then return nil end
  return string.sub(v, colon + 1, colon + length), colon + length + 1
end

-- The slot table (stores/slots.py): a tag's token is field slot % 128 of the
-- hash 's:' .. slot // 128; a tag "#<n>" names slot n itself.
local SLOTS, BUCKET_FIELDS = 1048576, 128
-- The generation's key: its name carries the layout (stores/slots.py LAYOUT),
-- so that entries of an older layout find no generation of theirs, and miss.
local GEN = 'gen2'

local function slot_of(tag)
  local named = string.match(tag, '^#(%d+)$')
  if named and tonumber(named) < SLOTS then return tonumber(named) end
  return tonumber(string.sub(redis.sha1hex(tag), 1, 5), 16)
end

-- The hash and field that hold a slot's token.
local function slot_ref(ns, slot)
  return ns .. 's:' .. math.floor(slot / BUCKET_FIELDS), tostring(slot % BUCKET_FIELDS)
end

-- {generation, (slot, recorded token)*} of a header; nil if it does not parse.
local function parse(header)
  local fields = {}
  for line in string.gmatch(header, '([^\n]*)\n') do fields[#fields + 1] = line end
  local n = tonumber(fields[1])
  if not n or #fields ~= 2 + 2 * n then return nil end
  local out = {fields[2]}
  for i = 3, #fields, 2 do
    local slot = tonumber(fields[i])
    if not slot or slot < 0 or slot >= SLOTS or slot ~= math.floor(slot) then return nil end
    out[#out + 1] = slot
    out[#out + 1] = fields[i + 1]
  end
  return out
end

local function is_tagged(v)
  return string.byte(v, 1) == 84
end

local function header_valid(ns, header)
  local recorded = parse(header)
  if not recorded or redis.call('GET', ns .. GEN) ~= recorded[1] then return false end
  for i = 2, #recorded, 2 do
    local bucket, field = slot_ref(ns, recorded[i])
    if redis.call('HGET', bucket, field) ~= recorded[i + 1] then return false end
  end
  return true
end

-- Is a stored value still valid? verdicts remembers headers already checked.
local function valid(ns, v, verdicts)
  if not is_tagged(v) then return true end
  local header = split(v)
  if not header then return false end
  local verdict = verdicts[header]
  if verdict == nil then
    local ok, result = pcall(header_valid, ns, header)
    verdict = ok and result
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

-- The partition's generation token, made if missing. It never expires.
local function generation(ns, fresh)
  local gen = redis.call('GET', ns .. GEN)
  if gen then return gen end
  redis.call('SET', ns .. GEN, fresh)
  return fresh
end

-- A new token: the next value of the meta hash's counter. Tokens are never
-- reused while the hash lives (a slot's token only ever moves on); when the
-- hash is started over, the slot table is emptied with it (new_meta).
local function draw(ns)
  return tostring(redis.call('HINCRBY', ns .. 'meta', 'tok', 1))
end

-- The slot's token, made if missing.
local function token(ns, slot)
  local bucket, field = slot_ref(ns, slot)
  local tok = redis.call('HGET', bucket, field)
  if tok then return tok end
  tok = draw(ns)
  redis.call('HSET', bucket, field, tok)
  return tok
end

-- Tell the L1 tiers of every process what changed (see storage/coherence.py).
local function announce(ns, kind, items)
  if kind == '*' then
    redis.call('PUBLISH', ns .. 'l1', '*')
  elseif #items > 0 then
    redis.call('PUBLISH', ns .. 'l1', kind .. cjson.encode(items))
  end
end

-- The meta hash, started over: tagged entries and the lease dropped, a new
-- epoch, and fills refused for quiet_ms (write locks it held may be lost).
-- The quiet period's length is remembered as 'h' too: should the new hash
-- itself turn up on another server while it lasts, the quiet period is what
-- still says a lock may be held (hello waits 'h' out there).
-- Where a new token counter starts: at random (from the new epoch's first 24
-- bits, as 2^30 + 16 * n), not at 0. The start-over empties the slot table,
-- but a bucket it could not reach (on the other node of a slot migration, or
-- restored from an older copy) may come back holding tokens of the old
-- counter; a counter that began at 0 again would soon draw them again, for
-- the same slots, and an entry written under one would match. Below 2^31
-- (for some 800 million draws) the fields stay 32-bit listpack integers.
local function counter_base(epoch)
  return 1073741824 + 16 * (tonumber(string.sub(epoch, 1, 6), 16) or 0)
end

local function new_meta(ns, epoch, quiet_ms)
  local meta = ns .. 'meta'
  redis.call('DEL', meta, ns .. GEN, ns .. 'lease')
  -- The token counter starts over: so does the slot table. A token left in it
  -- was drawn from the old counter and would be kept under the new generation,
  -- where the new counter can draw it again for the same slot after an
  -- invalidation: an entry written under the first would match the second.
  local buckets = {}
  for b = 0, SLOTS / BUCKET_FIELDS - 1 do
    buckets[#buckets + 1] = ns .. 's:' .. b
    if #buckets == 1000 then redis.call('DEL', unpack(buckets)); buckets = {} end
  end
  if #buckets > 0 then redis.call('DEL', unpack(buckets)) end
  local now = now_ms()
  announce(ns, '*')
  redis.call(
    'HSET', meta, 'run', server_info('run_id'), 'epoch', epoch, 'born', now,
    'tok', counter_base(epoch))
  if quiet_ms > 0 then redis.call('HSET', meta, 'quiet', now + quiet_ms, 'h', quiet_ms) end
end

-- How long a partition that may have missed write locks refuses fills: the
-- caller's lock horizon, or the longest lock its writers took here ('h') if
-- longer, since the caller may be a process that takes no locks (horizon 0).
local function fenced_quiet(meta, horizon)
  return math.max(horizon, tonumber(redis.call('HGET', meta, 'h') or '0'))
end

-- True if the meta hash is there; if it was lost, start it over.
local function ensure_meta(ns, epoch, horizon)
  if redis.call('EXISTS', ns .. 'meta') == 1 then return true end
  new_meta(ns, epoch, horizon)
  return false
end

-- The locks in a stored "until writer ..." value still in force at `now`
-- (but `except`'s), and how many the value held.
local function live_holders(v, now, except)
  local live, total = {}, 0
  for until_ms, writer in string.gmatch(v, '(%d+) (%S+)') do
    total = total + 1
    if tonumber(until_ms) > now and writer ~= except then
      live[#live + 1] = until_ms .. ' ' .. writer
    end
  end
  return live, total
end

-- Does a lock value hold `writer`'s lock, still in force at `now`?
local function holds(v, now, writer)
  for until_ms, who in string.gmatch(v, '(%d+) (%S+)') do
    if who == writer and tonumber(until_ms) > now then return true end
  end
  return false
end

-- The write locks on a tag still in force: a list of "until writer".
-- `now` may be now_ms itself, called only if the tag has locks.
local function holders(meta, tag, now, except)
  local v = redis.call('HGET', meta, 'l:' .. tag)
  if not v then return {}, v end
  if type(now) == 'function' then now = now() end
  return (live_holders(v, now, except)), v
end

-- args[first..], copied (unpack has a limit of a few thousand values).
local function from(args, first)
  local out = {}
  for i = first, #args do out[#out + 1] = args[i] end
  return out
end

-- redis.call(command, key, items...) in chunks of a thousand items, replies joined
-- (key nil: none). A command over many keys costs one call, not one per key.
local function chunked(command, key, items)
  if #items == 0 then return {} end
  if #items <= 1000 then  -- the usual case: no copy
    if key then return redis.call(command, key, unpack(items)) end
    return redis.call(command, unpack(items))
  end
  local out = {}
  for first = 1, #items, 1000 do
    local last = math.min(first + 999, #items)
    local reply
    if key then reply = redis.call(command, key, unpack(items, first, last))
    else reply = redis.call(command, unpack(items, first, last)) end
    if type(reply) == 'table' then
      for i = 1, last - first + 1 do out[#out + 1] = reply[i] end
    end
  end
  return out
end

-- Invalidate tags: drop their slots' tokens (made anew, from the counter, when
-- next needed). slots: the tags' slots (slots_of). Returns the "#<slot>" names
-- of the slots, what change messages carry (L1 keeps copies under their slots,
-- which is what an entry's header records).
local function drop_slots(ns, slots)
  local names, deleted = {}, 0
  for i, slot in ipairs(slots) do
    local bucket, field = slot_ref(ns, slot)
    deleted = deleted + redis.call('HDEL', bucket, field)
    names[i] = '#' .. slot
  end
  return names, deleted
end

local function slots_of(tags)
  local out = {}
  for i, tag in ipairs(tags) do out[i] = slot_of(tag) end
  return out
end

local function set_holders(meta, tag, live, old)
  if #live == 0 then
    if old then redis.call('HDEL', meta, 'l:' .. tag) end
  else
    redis.call('HSET', meta, 'l:' .. tag, table.concat(live, ' '))
  end
end

-- May anything be cached under tags on this partition now? Not while the
-- partition is quiet (it lost what locks it held, or missed some).
local function fills_allowed(ns, epoch, horizon, now)
  -- One HMGET instead of EXISTS and HGET: a meta hash always holds 'run'.
  local fields = redis.call('HMGET', ns .. 'meta', 'run', 'quiet')
  if not fields[1] then
    new_meta(ns, epoch, horizon)
    fields[2] = redis.call('HGET', ns .. 'meta', 'quiet')
  end
  local quiet = fields[2]
  if not quiet then return true end
  if type(now) == 'function' then now = now() end
  return tonumber(quiet) <= now
end

-- The tag's token, or false while a writer holds the tag locked.
local function tag_token(ns, tag, now)
  local meta, slot = ns .. 'meta', slot_of(tag)
  local live, old = holders(meta, slot, now, nil)
  if old then set_holders(meta, slot, live, old) end
  if #live > 0 then return false end
  return token(ns, slot)
end

-- What a lease is written as, and how long the partition's lease has left
-- (ms; -2 when there is none).
local function lease_mark()
  return '1'
end

local function lease_left(ns)
  return redis.call('PTTL', ns .. 'lease')
end

-- What a meta hash found on another server (a failover, or a slot moved with
-- its keys) still says for certain: the write locks and lock copies it holds
-- (a moved hash holds all of them, a promoted replica's those it was sent), as
-- {field, value, ...}; and how long fills must wait for locks it may lack: the
-- longest lock a writer took here, or quiet period it was put in ('h'), or the
-- greeter's horizon if longer (new_meta keeps it as the new 'h'). So a greeter
-- that takes no locks itself (horizon 0) neither drops the locks of a
-- transaction under way nor lets fills in before they could have ended.
local function carried_over(meta, horizon)
  local all, kept = redis.call('HGETALL', meta), {}
  for i = 1, #all, 2 do
    local field = all[i]
    if string.sub(field, 1, 2) == 'l:' or field == 'copies' then
      kept[#kept + 1] = field
      kept[#kept + 1] = all[i + 1]
    elseif field == 'h' then
      horizon = math.max(horizon, tonumber(all[i + 1]))
    end
  end
  return kept, horizon
end

-- The first call on every connection: has the server restarted, been
-- restored from older data or replaced (failover) since this namespace last
-- looked? Then its tagged entries and what it knew of peers are not to be
-- trusted, nor that it knew every lock; the locks it does hold are kept
-- (carried_over). args: ns, fresh, horizon_ms.
local function hello(keys, args)
  local ns, fresh, horizon = args[1], args[2], tonumber(args[3])
  local meta = ns .. 'meta'
  local run = server_info('run_id')
  local seen = redis.call('HGET', meta, 'run')
  if seen == run then return 0 end
  -- Another server's hash (not a new or lost one): the statistics count these.
  local switches = seen and tonumber(redis.call('HGET', meta, 'switches') or '0') + 1
  local quiet, kept = horizon, {}
  if seen then kept, quiet = carried_over(meta, horizon) end
  if redis.call('EXISTS', meta) == 0 and redis.call('EXISTS', ns .. GEN) == 0 then
    -- Nothing of this namespace here: new, or lost in a restart. Locks held
    -- before a restart have expired once the server has been up that long.
    local uptime = tonumber(server_info('uptime_in_seconds')) * 1000
    quiet = math.max(0, horizon - uptime)
  end
  new_meta(ns, fresh, quiet)
  if switches then redis.call('HSET', meta, 'switches', switches) end
  if #kept > 0 then redis.call('HSET', meta, unpack(kept)) end
  return 1
end

-- keys: entries. args: ns, leased ('1' when tagged entries need a live lease),
-- ttls ('1': also each entry's PTTL, for an L1 copy that must not outlive it).
-- Returns {lease, value-or-false-or-0 ..., [pttl ...]}: lease is -3 when no
-- tagged entry was seen, else the lease's PTTL; 0 marks a tagged entry that
-- cannot be trusted because the lease is gone.
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
          out[1] = lease_left(ns)
          lease_ok = out[1] > 0
        end
        -- A valid value goes back whole (the client cuts the header off):
        -- copying bodies here is most of what a read would cost.
        if not lease_ok then v = 0 elseif not valid(ns, v, verdicts) then v = false end
      end
      out[first + i] = v
    end
  end
  if args[3] == '1' then
    for i, k in ipairs(keys) do
      out[#keys + 1 + i] = out[1 + i] and redis.call('PTTL', k) or 0
    end
  end
  return out
end

-- May this partition take tagged entries? With leases on, only while it
-- holds one: a partition's first lease may drop what was written before it.
local function leased_now(ns, leased)
  return not leased or lease_left(ns) > 0
end

-- The entries of a write's args (see write), as parallel lists: ttls, tag
-- lists, snapshots (or false) and bodies; and their distinct tags.
local function entries_of(keys, args)
  local ttls, tag_lists, snaps, bodies, tags, seen = {}, {}, {}, {}, {}, {}
  local a = 6
  for i = 1, #keys do
    local ttl = tonumber(args[a])
    local n = tonumber(args[a + 1])
    local entry_tags = {unpack(args, a + 2, a + 1 + n)}
    a = a + 2 + n
    if args[a] == '1' then snaps[i] = {unpack(args, a + 1, a + 1 + n)}; a = a + n + 2
    else snaps[i] = false; a = a + 1 end
    ttls[i], tag_lists[i], bodies[i] = ttl or false, entry_tags, args[a]
    a = a + 1
    for j = 1, n do
      local tag = entry_tags[j]
      if not seen[tag] then tags[#tags + 1] = tag; seen[tag] = true end
    end
  end
  return ttls, tag_lists, snaps, bodies, tags
end

-- What the tagged entries of a write are written under, looked up once per
-- call however many entries and tags: returns -1 (no lease), -2 (no fills now:
-- the partition is quiet) or 1, the generation, and per tag its slot and its
-- token or false (locked). Missing tokens are made.
local function fill_tokens(ns, fresh, horizon, leased, tags)
  if not leased_now(ns, leased) then return -1 end
  local meta = ns .. 'meta'
  local slots = {}
  local fields = {'run', 'quiet'}
  for i, tag in ipairs(tags) do
    slots[tag] = slot_of(tag)
    fields[i + 2] = 'l:' .. slots[tag]
  end
  local held = chunked('HMGET', meta, fields)
  if not held[1] then
    new_meta(ns, fresh, horizon)
    held = chunked('HMGET', meta, fields)
  end
  local now = nil
  if held[2] then
    now = now_ms()
    if tonumber(held[2]) > now then return -2 end
  end
  local gen = generation(ns, fresh)
  local tokens = {}
  for i, tag in ipairs(tags) do
    local locked = false
    if held[i + 2] then
      now = now or now_ms()
      local live, total = live_holders(held[i + 2], now, nil)
      if #live == 0 then redis.call('HDEL', meta, fields[i + 2])
      elseif #live < total then redis.call('HSET', meta, fields[i + 2], table.concat(live, ' ')) end
      locked = #live > 0
    end
    tokens[tag] = not locked and token(ns, slots[tag])
  end
  return 1, gen, tokens, slots
end

-- keys: entries. args: ns, fresh token, nx, horizon_ms, leased, then per entry:
--   ttl_ms ('' = forever), n, tag*n, snapshot flag, [gen, token*n], body
-- A snapshot (taken before the value was computed) that no longer matches the
-- current tokens means an invalidation happened meanwhile: the entry is not
-- stored. Returns 1/0 per entry (stored or not), -1 for a tagged entry not
-- stored because the partition holds no lease (renew it and write again), -2
-- for one refused because the partition is quiet (the caller is told so).
local function write(keys, args)
  local ns, fresh, nx, horizon = args[1], args[2], args[3] == '1', tonumber(args[4])
  local leased = args[5] == '1'
  local ttls, tag_lists, snaps, bodies, tags = entries_of(keys, args)
  local out = {}
  local allowed, gen, tokens, slots = nil, nil, nil, nil
  local changed = {}
  for i, k in ipairs(keys) do
    local entry_tags, snap, body = tag_lists[i], snaps[i], bodies[i]
    local n = #entry_tags
    local ok = 1
    if nx then
      local cur = redis.call('GET', k)
      if cur and body_of(ns, cur, {}) then ok = 0 end
    end
    if ok == 1 and n > 0 then
      if allowed == nil then
        allowed, gen, tokens, slots = fill_tokens(ns, fresh, horizon, leased, tags)
      end
      if allowed ~= 1 then ok = allowed end
    end
    if ok == 1 and n > 0 then
      if snap and snap[1] ~= gen then ok = 0 end
      local parts = {n, '\n', gen, '\n'}
      for j = 1, n do
        local tok = tokens[entry_tags[j]]
        if not tok or (snap and snap[j + 1] ~= tok) then ok = 0; tok = '!' end
        parts[#parts + 1] = slots[entry_tags[j]] .. '\n' .. tok .. '\n'
      end
      local header = table.concat(parts)
      body = 'T' .. #header .. ':' .. header .. body
    end
    if ok == 1 then
      if ttls[i] then redis.call('SET', k, body, 'PX', ttls[i])
      else redis.call('SET', k, body) end
      -- A fill from a snapshot (nx) lands only where no valid entry was, with
      -- tokens unchanged since its value was read: any copy of the key elsewhere
      -- is as current under its tags, so the fill is not announced.
      if not (nx and snap) then changed[#changed + 1] = k end
    end
    out[i] = ok
  end
  announce(ns, 'k', changed)
  return out
end

-- keys: entries. args: ns. Returns the number deleted.
local function delete(keys, args)
  local deleted = 0
  for first = 1, #keys, 1000 do
    deleted = deleted + redis.call('DEL', unpack(keys, first, math.min(first + 999, #keys)))
  end
  announce(args[1], 'k', keys)
  return deleted
end

-- args: ns, tag*. Invalidates the tags (their tokens are made anew when next needed).
local function drop_tags(keys, args)
  local ns = args[1]
  local tags = from(args, 2)
  announce(ns, 't', (drop_slots(ns, slots_of(tags))))
  return 1
end

-- args: ns, fresh token, ttl_ms ('' = forever), horizon_ms, leased, tag*.
-- Returns {gen, token*}; a tag that may not be filled now (locked, or the
-- partition quiet) gets '!', which no write will ever match. Without a lease
-- (leased) the answer is {} (renew it and ask again).
local function snapshot(keys, args)
  local ns, fresh, horizon = args[1], args[2], tonumber(args[4])
  if not leased_now(ns, args[5] == '1') then return {} end
  local now = now_ms  -- read from the server only if a lock or a quiet period needs it
  local allowed = fills_allowed(ns, fresh, horizon, now)
  local out = {generation(ns, fresh)}
  for i = 6, #args do
    out[#out + 1] = allowed and tag_token(ns, args[i], now) or '!'
  end
  return out
end

-- keys: key. args: ns, ttl_ms ('' = forever, '0' = delete). Returns 1 if the entry existed.
local function touch(keys, args)
  local ns = args[1]
  local v = redis.call('GET', keys[1])
  if not v or not body_of(ns, v, {}) then return 0 end
  local ttl = tonumber(args[2])
  announce(ns, 'k', keys)
  if ttl == 0 then redis.call('DEL', keys[1]); return 1 end
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
    announce(ns, 'k', keys)
    return redis.call('GET', keys[1])
  end
  local scratch = ns .. 'incr'
  redis.call('SET', scratch, body)
  local ok, err = pcall(redis.call, 'INCRBY', scratch, args[2])
  local total = redis.call('GET', scratch)
  redis.call('DEL', scratch)
  if not ok then return redis.error_reply(err.err or tostring(err)) end
  redis.call('SET', keys[1], string.sub(v, 1, #v - #body) .. total, 'KEEPTTL')
  announce(ns, 'k', keys)
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
    -- The header keeps slots, not tag names: "#<slot>" names each (stores/slots.py).
    local recorded = parse((split(v)))
    for i = 2, #recorded, 2 do out[#out + 1] = '#' .. recorded[i] end
  end
  return out
end

-- Write locks: a transaction that changes data behind tags invalidates them when
-- it writes and keeps them locked (no cache fills) until it commits.

-- The lock fields of tags: a lock is held on the tag's slot (locking the
-- tags that share it too, which only costs them fills).
local function lock_fields(slots)
  local fields = {}
  for i, slot in ipairs(slots) do fields[i] = 'l:' .. slot end
  return fields
end

-- The copies noted in a "copies" value still in force at `now`, as a flat
-- list {id, epoch, ...}, and as "until id epoch" items (but `except`'s).
local function live_copies(v, now, except)
  local flat, items = {}, {}
  for until_ms, id, epoch in string.gmatch(v or '', '(%d+) (%S+) (%S+)') do
    if tonumber(until_ms) > now and id ~= except then
      flat[#flat + 1] = id
      flat[#flat + 1] = epoch
      items[#items + 1] = until_ms .. ' ' .. id .. ' ' .. epoch
    end
  end
  return flat, items
end

-- args: ns, fresh, horizon_ms, writer id, lock_ms, tag*. Returns {this
-- partition's epoch, (id, epoch)* of the partitions that copied its locks
-- lately}: a writer whose lock on such a partition landed in another epoch
-- (before it lost its memory) locks it again.
local function lock(keys, args)
  local ns, writer = args[1], args[4]
  ensure_meta(ns, args[2], tonumber(args[3]))
  local meta, now = ns .. 'meta', now_ms()
  local mine = (now + tonumber(args[5])) .. ' ' .. writer
  local tags = from(args, 6)
  local slots = slots_of(tags)
  local fields = lock_fields(slots)
  local held = chunked('HMGET', meta, fields)
  local values = {}
  for i = 1, #tags do
    local live = held[i] and live_holders(held[i], now, writer) or {}
    live[#live + 1] = mine
    values[#values + 1] = fields[i]
    values[#values + 1] = table.concat(live, ' ')
  end
  chunked('HSET', meta, values)
  announce(ns, 't', (drop_slots(ns, slots)))
  local state = redis.call('HMGET', meta, 'epoch', 'copies', 'h')
  local longest = math.max(tonumber(args[5]), tonumber(args[3]))
  if longest > tonumber(state[3] or '0') then redis.call('HSET', meta, 'h', longest) end
  local out = live_copies(state[2], now, nil)
  table.insert(out, 1, state[1])
  return out
end

-- args: ns, writer id, tag*. Releases the writer's locks and invalidates the tags
-- (announced again only if something may have been stored under them meanwhile).
local function unlock(keys, args)
  local ns, writer = args[1], args[2]
  local meta = ns .. 'meta'
  local tags = from(args, 3)
  local slots = slots_of(tags)
  local fields = lock_fields(slots)
  -- Intact: every slot still held this writer's lock and had no token. Then
  -- nothing was stored under them here since the lock (a fill or tagged write
  -- needs a token, and none is made for a locked slot), so no process can hold
  -- a copy the lock's own announcement did not already drop: a second message
  -- would only cost every subscribed process its handling.
  local intact = redis.call('EXISTS', meta) == 1
  if intact then
    local held = chunked('HMGET', meta, fields)
    local now, kept, gone = nil, {}, {}
    for i = 1, #tags do
      if not held[i] then
        intact = false
      else
        now = now or now_ms()
        if not holds(held[i], now, writer) then intact = false end
        local live, total = live_holders(held[i], now, writer)
        if #live == 0 then
          gone[#gone + 1] = fields[i]
        elseif #live < total then
          kept[#kept + 1] = fields[i]
          kept[#kept + 1] = table.concat(live, ' ')
        end
      end
    end
    chunked('HDEL', meta, gone)
    chunked('HSET', meta, kept)
  end
  local names, deleted = drop_slots(ns, slots)
  if not intact or deleted ~= 0 then announce(ns, 't', names) end
  return 1
end

-- Fencing: keeping a partition that missed an invalidation from serving stale entries.

-- On another partition, for each missed partition id: count the miss and
-- return how long the latest lease granted to it may still run (ms). A meta
-- hash started over less than a lease ago may have forgotten a grant: then
-- a whole lease from its start. args: ns, fresh, horizon_ms, lease_ms, id*.
-- On a cluster the call declares the meta hash, and the generation only when
-- asked to: when it must drop the generation and declared the meta hash alone
-- (one key), it changes nothing and says GENUNDECLARED, and the store calls it
-- again with both (stores/cluster.py), so that a migration splits the fence only
-- in that window.
local function record_fence(keys, args)
  local ns = args[1]
  ensure_meta(ns, args[2], tonumber(args[3]))
  local meta, now = ns .. 'meta', now_ms()
  local forgotten = tonumber(redis.call('HGET', meta, 'born') or '0') + tonumber(args[4])
  local adopted = redis.call('HGET', meta, 'adopted')
  if adopted and tonumber(adopted) > now then
    if #keys == 1 then
      return redis.error_reply('GENUNDECLARED the generation must be declared to be dropped')
    end
    -- This partition adopted its peers' locks lately (adopt_locks). A writer
    -- that locked it before it lost its memory, and whose locks failed on
    -- every peer, may be recording this fence before it commits, and nothing
    -- told it to lock here again: drop what was filled since, and refuse fills
    -- until such a lock has expired, as a fenced partition does.
    redis.call('DEL', ns .. GEN)
    announce(ns, '*')
    local horizon = fenced_quiet(meta, tonumber(args[3]))
    if horizon > 0 then redis.call('HSET', meta, 'quiet', now + horizon, 'fq', now + horizon) end
  end
  local out = {}
  for i = 5, #args do
    redis.call('HINCRBY', meta, 'f:' .. args[i], 1)
    local grant = tonumber(redis.call('HGET', meta, 'g:' .. args[i]) or '0')
    out[#out + 1] = math.max(0, grant - now, forgotten - now)
  end
  return out
end

-- On another partition: note the lease about to be granted to <id> (lease_ms
-- from now) and return {misses recorded for it, this partition's epoch}.
-- args: ns, fresh, horizon_ms, id, lease_ms.
local function check_fence(keys, args)
  local ns, id = args[1], args[4]
  ensure_meta(ns, args[2], tonumber(args[3]))
  local meta = ns .. 'meta'
  local deadline = now_ms() + tonumber(args[5])
  if deadline > tonumber(redis.call('HGET', meta, 'g:' .. id) or '0') then
    redis.call('HSET', meta, 'g:' .. id, deadline)
  end
  return {tonumber(redis.call('HGET', meta, 'f:' .. id) or '0'), redis.call('HGET', meta, 'epoch')}
end

-- On the partition itself, before asking the others: a lease that will run
-- lease_ms from now, not yet in force, so that it cannot outlive the grants
-- noted after it. Returns {this partition's epoch, 1 if it is quiet for lost
-- memory alone (its peers may lend it their locks) else 0, then the epochs the
-- others had when they last vouched}. args: ns, fresh, horizon_ms, nonce, lease_ms, id*.
local function lease_prepare(keys, args)
  local ns = args[1]
  local meta = ns .. 'meta'
  ensure_meta(ns, args[2], tonumber(args[3]))
  redis.call('SET', ns .. 'lease:' .. args[4], lease_mark(), 'PX', args[5])
  local state = redis.call('HMGET', meta, 'epoch', 'quiet', 'fq')
  local lendable = 0
  if state[2] then
    local now = now_ms()
    local fenced = state[3] and tonumber(state[3]) > now
    if tonumber(state[2]) > now and not fenced then lendable = 1 end
  end
  local out = {state[1], lendable}
  for i = 6, #args do out[#out + 1] = redis.call('HGET', meta, 'v:' .. args[i]) end
  return out
end

-- On another partition, for <id>, which lost its memory and with it the write
-- locks it held: note that <id> (now in `epoch`) copies the locks held here,
-- for horizon_ms (a lock landing here later tells its writer, see lock), and
-- return {1 if this partition is quiet itself (its locks may be incomplete)
-- else 0, then (tag, "ms_left writer ...")* of the locks in force here}.
-- args: ns, fresh, horizon_ms, id, epoch.
local function lend_locks(keys, args)
  local ns, id, epoch = args[1], args[4], args[5]
  local meta = ns .. 'meta'
  ensure_meta(ns, args[2], tonumber(args[3]))
  local now = now_ms()
  local quiet = redis.call('HGET', meta, 'quiet')
  local _, copies = live_copies(redis.call('HGET', meta, 'copies'), now, id)
  -- As long as this partition's writers lock ('h'), whoever asks for the loan.
  local keep = fenced_quiet(meta, tonumber(args[3]))
  copies[#copies + 1] = (now + keep) .. ' ' .. id .. ' ' .. epoch
  redis.call('HSET', meta, 'copies', table.concat(copies, ' '))
  local out = {(quiet and tonumber(quiet) > now) and 1 or 0}
  local all = redis.call('HGETALL', meta)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'l:' then
      local left = {}
      for _, holder in ipairs((live_holders(all[i + 1], now, nil))) do
        local until_ms, writer = string.match(holder, '(%d+) (%S+)')
        left[#left + 1] = (tonumber(until_ms) - now) .. ' ' .. writer
      end
      if #left > 0 then
        out[#out + 1] = string.sub(all[i], 3)
        out[#out + 1] = table.concat(left, ' ')
      end
    end
  end
  return out
end

-- On the partition that lost its memory, once every peer lent its locks: hold
-- them here too (ms_left from now, plus margin_ms for the clocks' rates) and
-- end the quiet period, if the meta hash is still the one of `epoch` and its
-- quiet period does not come from a fence. For horizon_ms a fence recorded
-- here ends it again (see record_fence). args: ns, epoch, margin_ms, horizon_ms,
-- (tag, "ms_left writer ...")*. Returns 1 if adopted.
local function adopt_locks(keys, args)
  local ns, epoch, margin = args[1], args[2], tonumber(args[3])
  local meta = ns .. 'meta'
  local state = redis.call('HMGET', meta, 'epoch', 'fq')
  if state[1] ~= epoch then return 0 end
  local now = now_ms()
  if state[2] and tonumber(state[2]) > now then return 0 end
  local tags = {}
  for i = 5, #args, 2 do
    local field = 'l:' .. args[i]
    local live = holders(meta, args[i], now, nil)
    for left, writer in string.gmatch(args[i + 1], '(%d+) (%S+)') do
      live[#live + 1] = (now + tonumber(left) + margin) .. ' ' .. writer
    end
    redis.call('HSET', meta, field, table.concat(live, ' '))
    tags[#tags + 1] = '#' .. args[i]
  end
  announce(ns, 't', tags)
  redis.call('HDEL', meta, 'quiet')
  redis.call('HSET', meta, 'adopted', now + fenced_quiet(meta, tonumber(args[4])))
  return 1
end

-- Put a prepared lease in force. fenced: '0' nothing missed; '1' drop every
-- tagged entry first (a new generation); '2' that, and refuse fills for
-- horizon_ms, since the partition may have missed write locks too.
-- args: ns, nonce, fenced, horizon_ms, (id, epoch)*. Returns 1 or 0.
local function lease_activate(keys, args)
  local ns = args[1]
  local meta, pending = ns .. 'meta', ns .. 'lease:' .. args[2]
  if redis.call('EXISTS', pending) == 0 or redis.call('EXISTS', meta) == 0 then return 0 end
  if args[3] ~= '0' then
    redis.call('DEL', ns .. GEN)
    announce(ns, '*')
  end
  if args[3] == '2' then
    local horizon = fenced_quiet(meta, tonumber(args[4]))
    if horizon > 0 then
      local until_ms = now_ms() + horizon
      redis.call('HSET', meta, 'quiet', until_ms, 'fq', until_ms)
    end
  end
  for i = 5, #args, 2 do redis.call('HSET', meta, 'v:' .. args[i], args[i + 1]) end
  redis.call('RENAME', pending, ns .. 'lease')
  return 1
end

-- On another partition: forget the misses of <id> that were just made good,
-- unless more were recorded meanwhile. args: ns, id, count.
local function clear_fence(keys, args)
  local meta = args[1] .. 'meta'
  if redis.call('HGET', meta, 'f:' .. args[2]) == args[3] then
    redis.call('HDEL', meta, 'f:' .. args[2])
  end
  return 1
end

-- Single flight: take the claims (keys) for args[2] for args[3] ms, or renew
-- those args[2] holds already (the loader's heartbeat). Per claim: 1 if held.
-- One call for all the claims a caller needs on this partition: a miss of 100
-- keys costs one round trip here, not 100.
local function claim(keys, args)
  local out = {}
  for i, key in ipairs(keys) do
    local holder = redis.call('GET', key)
    if not holder then
      redis.call('SET', key, args[2], 'PX', args[3])
      out[i] = 1
    elseif holder == args[2] then
      redis.call('PEXPIRE', key, args[3])
      out[i] = 1
    else
      out[i] = 0
    end
  end
  return out
end

-- Single flight: drop the claims (keys) args[2] still owns.
local function release(keys, args)
  for _, key in ipairs(keys) do
    if redis.call('GET', key) == args[2] then redis.call('DEL', key) end
  end
  return 1
end

-- Empty the database (cache.clear()) but keep the meta hash of every
-- namespace in it, and whatever matches the glob patterns in args[2..] (what
-- features declared durable, e.g. the write-behind journal): clearing a cache
-- must not make it (or another cache sharing the database) forget locks,
-- fences or grants, nor drop writes not yet in the database. FLUSHDB is O(N)
-- anyway; so is finding what to keep.
local function clear(keys, args)
  local saved, metas = {}, {}
  local patterns = {'*:_tc:meta', unpack(args, 2)}
  for _, pattern in ipairs(patterns) do
    for _, key in ipairs(redis.call('KEYS', pattern)) do
      if not saved[key] then
        local ttl = redis.call('PTTL', key)
        saved[key] = {redis.call('DUMP', key), ttl > 0 and ttl or 0}
        if pattern == patterns[1] then metas[#metas + 1] = key end
      end
    end
  end
  redis.call('FLUSHDB')
  for key, kept in pairs(saved) do redis.call('RESTORE', key, kept[2], kept[1]) end
  for _, meta in ipairs(metas) do announce(string.sub(meta, 1, -5), '*') end
  return 1
end
"""

FUNCTIONS = (
    "hello",
    "read",
    "write",
    "delete",
    "drop_tags",
    "snapshot",
    "touch",
    "incr",
    "entry",
    "lock",
    "unlock",
    "record_fence",
    "check_fence",
    "lease_prepare",
    "lease_activate",
    "lend_locks",
    "adopt_locks",
    "clear_fence",
    "clear",
    "claim",
    "release",
)
READ_ONLY = ("read", "entry")
# What keeps the guarantee runs on a full server (noeviction at maxmemory):
# refusing a lock there would let a write commit while stale entries stay valid.
ALLOW_OOM = (
    "hello",
    "delete",
    "drop_tags",
    "lock",
    "unlock",
    "record_fence",
    "check_fence",
    "lease_prepare",
    "lease_activate",
    "lend_locks",
    "adopt_locks",
    "clear_fence",
    "clear",
)

# The library's name carries a hash of its code, so that two releases running
# side by side during a deploy each call their own functions.
VERSION = hashlib.blake2b(
    repr((LIBRARY_BODY, FUNCTIONS, READ_ONLY, ALLOW_OOM)).encode(), digest_size=4
).hexdigest()
LIBRARY_NAME = f"tiercache_{VERSION}"


def function_name(name: str) -> str:
    return f"tc_{VERSION}_{name}"


def _registration(name: str, function_name=function_name) -> str:
    if name in READ_ONLY:
        flags = "{'no-writes'}"
    elif name in ALLOW_OOM:
        flags = "{'allow-oom'}"
    else:
        flags = "{}"
    return (
        f"redis.register_function{{function_name='{function_name(name)}', "
        f"callback={name}, flags={flags}}}"
    )


LIBRARY = "\n".join([f"#!lua name={LIBRARY_NAME}", LIBRARY_BODY, *map(_registration, FUNCTIONS)])


# -- the variant a Redis Cluster runs (stores/cluster.py) --
#
# Two differences. Announcements are SPUBLISHed: the channel ``ns l1`` carries
# the slot group's hashtag, so a sharded message goes to the subscribers of
# the group's shard only, where a PUBLISH would be relayed to every node of
# the cluster. And ``write`` announces every key it was given before it
# changes anything: during a slot migration a Function can fail halfway (a
# key it touches has already moved: "non local key"), and a change must never
# stay unannounced; a key announced but not written only costs L1 a copy.
# And a lease is trusted only on the node that granted it. MIGRATE moves a key
# with its TTL measured on the source and restored on the target, later: a
# lease stretched by the move could outlive the grants that a fence waits out.
# So a lease is written as its node's id (CLUSTER MYID) and one that moved, to
# the importing master during a migration or with the slot, counts as none:
# the next read renews it there, through the fences.

_CLUSTER_LEASE = """local function lease_mark()
  return redis.call('CLUSTER', 'MYID')
end

local function lease_left(ns)
  local lease = ns .. 'lease'
  if redis.call('GET', lease) ~= lease_mark() then return -2 end
  return redis.call('PTTL', lease)
end"""
_LEASE = """local function lease_mark()
  return '1'
end

local function lease_left(ns)
  return redis.call('PTTL', ns .. 'lease')
end"""


def _swapped(text: str, swaps: list[tuple[str, str, int]]) -> str:
    for old, new, count in swaps:
        if text.count(old) != count:
            raise AssertionError(f"the cluster variant no longer matches the library: {old!r}")
        text = text.replace(old, new)
    return text


CLUSTER_LIBRARY_BODY = _swapped(
    LIBRARY_BODY,
    [
        ("redis.call('PUBLISH', ns .. 'l1'", "redis.call('SPUBLISH', ns .. 'l1'", 2),
        ("  local changed = {}\n", "  announce(ns, 'k', keys)\n", 1),
        ("      if not (nx and snap) then changed[#changed + 1] = k end\n", "", 1),
        ("  announce(ns, 'k', changed)\n", "", 1),
        (_LEASE, _CLUSTER_LEASE, 1),
    ],
)
CLUSTER_VERSION = hashlib.blake2b(
    repr((CLUSTER_LIBRARY_BODY, FUNCTIONS, READ_ONLY, ALLOW_OOM)).encode(), digest_size=4
).hexdigest()
CLUSTER_LIBRARY_NAME = f"tiercache_cluster_{CLUSTER_VERSION}"


def cluster_function_name(name: str) -> str:
    return f"tcc_{CLUSTER_VERSION}_{name}"


CLUSTER_LIBRARY = "\n".join(
    [
        f"#!lua name={CLUSTER_LIBRARY_NAME}",
        CLUSTER_LIBRARY_BODY,
        *(_registration(name, cluster_function_name) for name in FUNCTIONS),
    ]
)
