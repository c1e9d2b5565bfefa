-- wrk script of bench_load.py: Zipf-chosen products, reads /r/<pk>/ and writes /w/<pk>/.
-- wrk ... -s load.lua URL -- PRODUCTS ZIPF_S WRITE_PCT [BURST_FROM BURST_TO BURST_PCT]
-- (BURST_* in seconds since the thread started: WRITE_PCT becomes BURST_PCT in between.)
-- With LOAD_TIMELINE set, responses are counted per wall-clock second (ok / 5xx / other).

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

local cdf = {}
local n, write_pct, burst_from, burst_to, burst_pct, t0
tl_ok, tl_5xx, tl_other = {}, {}, {}

function init(args)
  n = tonumber(args[1])
  local s = tonumber(args[2])
  write_pct = tonumber(args[3])
  burst_from = tonumber(args[4] or "-1")
  burst_to = tonumber(args[5] or "-1")
  burst_pct = tonumber(args[6] or "0")
  local total = 0
  for k = 1, n do
    total = total + 1 / (k ^ s)
    cdf[k] = total
  end
  for k = 1, n do
    cdf[k] = cdf[k] / total
  end
  math.randomseed(os.time() * 1009 + (id or 0) * 7919)
  t0 = os.time()
end

function request()
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  local pct = write_pct
  if burst_from >= 0 then
    local t = os.time() - t0
    if t >= burst_from and t < burst_to then pct = burst_pct end
  end
  if math.random() * 100 < pct then
    return wrk.format("GET", "/w/" .. lo .. "/")
  end
  return wrk.format("GET", "/r/" .. lo .. "/")
end

if os.getenv("LOAD_TIMELINE") then
  function response(status, headers, body)
    local t = os.time()
    if status >= 500 then
      tl_5xx[t] = (tl_5xx[t] or 0) + 1
    elseif status >= 200 and status < 400 then
      tl_ok[t] = (tl_ok[t] or 0) + 1
    else
      tl_other[t] = (tl_other[t] or 0) + 1
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LOADJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
  for _, thread in ipairs(threads) do
    for _, name in ipairs({"tl_ok", "tl_5xx", "tl_other"}) do
      local counts = thread:get(name)
      if counts then
        for t, c in pairs(counts) do
          io.write(string.format("LOADTL %s %d %d\n", name, t, c))
        end
      end
    end
  end
end
