-- wrk script for bench/receiver.py: POST one webhook per request.
-- Arguments: <path> <json body, or @file holding it> <seconds> [<Authorization value>].
-- Requests are sent for <seconds>; after that
-- the connections go idle until wrk's own -d ends, so every request that was sent gets
-- its answer counted (rows written can then be compared exactly with 200s answered).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local req, deadline

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  if args[4] then -- optional: an Authorization header value (iiko's authToken)
    headers["Authorization"] = args[4]
  end
  local body = args[2]
  if body:sub(1, 1) == "@" then -- "@path": the body is in a file (too long for argv)
    local file = assert(io.open(body:sub(2), "rb"))
    body = file:read("*a")
    file:close()
  end
  req = wrk.format("POST", args[1], headers, body)
  deadline = now() + tonumber(args[3])
end

function request()
  if now() < deadline then
    return req
  end
  return "" -- nothing to send: the connection idles until wrk stops
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
