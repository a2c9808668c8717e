-- a: lease_id, calling instance. Closes the lease at its estimate if its expiry has passed.
-- Replies expired, seq, now, state_of_owner, closed | extended, expires_at | closed, closed | unknown
OPS.expire = function(a, now)
  local id = a[1]
  local rec, reply = find_open(id)
  if not rec then return reply end
  if rec.x > now then return {'extended', rec.raw[8]} end
  -- The owner's state, kept current by the counters' new values as the lease closes.
  local lim, _, state = model_state(rec.m, rec.i, now)
  local text = close_lease(id, rec, 3, 0, 0, 0, 0, now, true, lim, state)
  local q = bump()
  publish(a[2], 'release', q, rec.i, one_state(rec.m, state), {text}, {})
  return {'expired', q, now, csv(state), text}
end
