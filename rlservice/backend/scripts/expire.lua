-- a: lease_id, calling instance. Closes the lease at its estimate if its expiry has passed.
-- Replies {'expired', seq, now, state_of_owner, closed_json} | {'extended', expires_at}
--       | {'closed', closed_json} | {'unknown'}
OPS.expire = function(a, now)
  local id = a[1]
  local raw = redis.call('GET', lkey(id))
  if not raw then return {'unknown'} end
  local rec = cjson.decode(raw)
  if rec.closed then return {'closed', raw} end
  if rec.x > now then return {'extended', rec.x} end
  local lim = limits_of(rec.m) or NO_LIMITS
  local closed, closed_raw = close_lease(id, rec, 3, 0, 0, 0, 0, now, true, lim)
  local q = bump()
  local st = model_state(rec.m, lim, rec.i, now)
  publish(a[2], {q = q, k = 'release', o = rec.i, s = {[rec.m] = st}, c = {closed}})
  return {'expired', q, now, st, closed_raw}
end
