-- One bounded step of maintenance: removing the oldest stale instance, else freeing one batch of
-- the calling instance's expired leases. Replies ok, more_waiting
OPS.reap = function(stale_ms)
  stale_ms = tonumber(stale_ms)
  local dead = stale(stale_ms)
  if dead then
    remove_step(dead, '-')
  else
    sync()
    local expired = sweep()
    if #expired > 0 then
      sync()
      local names, packed = all_states('')
      publish('-', 'release', bump(), nil, names, packed, expired, {})
    end
  end
  return (stale(stale_ms) or expired_left()) and 'ok\n1' or 'ok\n0'
end
