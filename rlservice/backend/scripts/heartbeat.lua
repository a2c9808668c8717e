-- a: instance, stale_ms. Keeps the instance alive and tells whether maintenance is waiting (a stale
-- instance to remove or expired leases to free): the instance then runs the reap operation, alone,
-- until none is left.
-- Replies ok, seq, now, maintenance_waiting, states | unregistered
OPS.heartbeat = function(a, now)
  local inst = a[1]
  local score = redis.call('ZSCORE', K_INST, inst)
  if not score or tonumber(score) == 0 then return {'unregistered'} end
  redis.call('ZADD', K_INST, 'XX', now, inst)
  local waiting = stale(now, tonumber(a[2])) or expired_left(now)
  local out = {'ok', seq(), now, waiting and 1 or 0}
  for _, v in ipairs(all_states(inst, now)) do out[#out + 1] = v end
  return out
end
