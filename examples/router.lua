-- wrk stands in for Heroku's router: each request carries X-Request-Start (epoch
-- milliseconds, as the router sends it) stamped as wrk sends it, so dynocorn's queue time
-- (queue_ms_p95, top's queue p50/p99) measures how long requests waited for a worker.
-- The mix is tuning_app.py's: four requests in five wait on "the database" (/db), the
-- fifth computes (/compute). Use: wrk -c 32 -d 15s -s examples/router.lua http://127.0.0.1:$PORT
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } router_timeval;
int gettimeofday(router_timeval *tv, void *tz);
]]
local now = ffi.new("router_timeval")
local sent = 0

request = function()
  sent = sent + 1
  ffi.C.gettimeofday(now, nil)
  local stamp = string.format("%d%03d", tonumber(now.tv_sec), math.floor(tonumber(now.tv_usec) / 1000))
  local path = "/compute"
  if sent % 5 ~= 0 then
    path = "/db?from=" .. (sent * 7919) % 100000
  end
  return wrk.format("GET", path, { ["X-Request-Start"] = stamp })
end
