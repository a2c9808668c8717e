-- a: stale_ms. One step of removing a stale instance. Replies ok, more_to_reap
OPS.reap = function(a, now)
  return {'ok', reap(now, tonumber(a[1])) and 1 or 0}
end
