-- The `mixed` cell's requests: every tenth is /slow (200 ms), the others /fast (2 ms), in
-- the same order on every run and for every server (bench/apps.py, mixed).
local sent = 0
request = function()
  sent = sent + 1
  if sent % 10 == 0 then
    return wrk.format("GET", "/slow")
  end
  return wrk.format("GET", "/fast")
end
