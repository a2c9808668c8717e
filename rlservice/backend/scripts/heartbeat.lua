-- a: instance, stale_ms. Keeps the instance alive, takes one step of removing a stale instance and
-- frees one batch of expired leases.
-- Replies ok, seq, now, more_to_reap, states | unregistered
OPS.heartbeat = function(a, now)
  local inst = a[1]
  local score = redis.call('ZSCORE', K_INST, inst)
  if not score or tonumber(score) == 0 then return {'unregistered'} end
  redis.call('ZADD', K_INST, 'XX', now, inst)
  local more = reap(now, tonumber(a[2]))
  local expired = sweep(now)
  if #expired > 0 then publish('-', 'release', bump(), nil, all_states('', now), expired, {}) end
  local out = {'ok', seq(), now, more and 1 or 0}
  for _, v in ipairs(all_states(inst, now)) do out[#out + 1] = v end
  return out
end
