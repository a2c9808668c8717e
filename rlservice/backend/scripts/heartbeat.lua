-- a: instance, stale_ms. Keeps the instance alive, takes one step of removing a stale instance and
-- frees one batch of expired leases.
-- Replies {'ok', seq, now, {{model, state}, ...}, more_to_reap} | {'unregistered'}
OPS.heartbeat = function(a, now)
  local inst = a[1]
  local score = redis.call('ZSCORE', K_INST, inst)
  if not score or tonumber(score) == 0 then return {'unregistered'} end
  redis.call('ZADD', K_INST, 'XX', now, inst)
  local more = reap(now, tonumber(a[2]))
  local expired = sweep(now)
  if #expired > 0 then publish('-', {q = bump(), k = 'release', s = states_map(now), c = expired}) end
  return {'ok', seq(), now, all_states(inst, now), more and 1 or 0}
end
