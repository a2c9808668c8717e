-- a: stale_ms. One bounded step of maintenance: removing the oldest stale instance, else freeing
-- one batch of expired leases, whoever holds them. Replies ok, more_waiting
OPS.reap = function(a, now)
  local stale_ms = tonumber(a[1])
  local dead = stale(now, stale_ms)
  if dead then
    remove_step(dead, now, '-')
  else
    local expired = sweep(now)
    if #expired > 0 then publish('-', 'release', bump(), nil, all_states('', now), expired, {}) end
  end
  return {'ok', (stale(now, stale_ms) or expired_left(now)) and 1 or 0}
end
