-- Appended to every wrk run of bench/run.py: prints the latency percentiles of the requests
-- wrk actually timed. wrk 4 adds samples of its own before it reports (stats_correct(), its
-- coordinated-omission correction): for every latency of two "intervals" or more, where an
-- interval is the run's duration over the requests per connection, one more sample an
-- interval shorter, and so on down to one interval. For a mix of 2 ms and 200 ms requests
-- that turns each slow request into several: on one connection, every tenth request slow,
-- wrk reported p75 113 ms where every request but the slow ones took 2.1 ms. This takes the
-- added samples back out of the histogram (from the top down: a bucket's added samples
-- all come from higher buckets), then ranks as wrk does. It needs the connection count,
-- which wrk does not give the script: WRK_CONNECTIONS in the environment.
done = function(summary, latency, requests)
  local counts, values = {}, {}
  for i = 1, #latency do
    local value, count = latency(i)
    counts[value] = count
    values[#values + 1] = value
  end
  local connections = tonumber(os.getenv("WRK_CONNECTIONS") or "0") or 0
  local per_connection = connections > 0 and math.floor(summary.requests / connections) or 0
  if per_connection > 0 then
    local interval = math.floor(summary.duration / per_connection)
    for index = #values, 1, -1 do
      local value = values[index]
      local count = counts[value]
      if value >= 2 * interval and count > 0 then
        local added = value - interval
        while added > interval do
          counts[added] = counts[added] - count
          added = added - interval
        end
      end
    end
  end
  local total = 0
  for _, value in ipairs(values) do
    total = total + counts[value]
  end
  local function percentile(p)
    local rank = math.floor((p / 100) * total + 1) -- wrk: round(p / 100 * count + 0.5)
    local seen = 0
    for _, value in ipairs(values) do
      seen = seen + counts[value]
      if seen >= rank then
        return value
      end
    end
    return 0
  end
  io.write(string.format("Timed requests: %d, p50 %d us, p99 %d us\n", total, percentile(50), percentile(99)))
end
