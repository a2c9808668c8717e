-- a: instance, model, flag ('1' when the instance has requests waiting for the model, '0' when not).
-- While another instance has waiters, nobody borrows beyond its share.
-- Replies ok, seq, now, state | unregistered | unknown_model
OPS.waiting = function(a, now)
  local inst, model, flag = a[1], a[2], a[3] == '1'
  if not redis.call('ZSCORE', K_INST, inst) then return {'unregistered'} end
  local lim = limits_of(model)
  if not lim then return {'unknown_model'} end
  local ik = ikey(model)
  local had = redis.call('HEXISTS', ik, 'w:' .. inst) == 1
  if had ~= flag then
    if flag then redis.call('HSET', ik, 'w:' .. inst, 1) else redis.call('HDEL', ik, 'w:' .. inst) end
    redis.call('HINCRBY', ik, 'w', flag and 1 or -1)
  end
  local q = had ~= flag and bump() or seq()
  local _, _, state = model_state(model, inst, now)
  -- Receivers take only the waiter count from it: the own fields are the sender's.
  if had ~= flag then publish(inst, 'waiting', q, nil, one_state(model, state), {}, {}) end
  return {'ok', q, now, csv(state)}
end
