-- a: instance, models_json ({model: {tpm, rpm, tpd, rpd, conc}}, 0 = not limited)
-- Replies ok, seq, now, states | busy
-- The same id registering again is a restart: whatever the old process held is closed first, one
-- batch a call ('busy' until that is done).
OPS.register = function(a, now)
  local inst = a[1]
  if not remove_step(inst, now, '-') then return {'busy'} end
  for model, lim in pairs(cjson.decode(a[2])) do
    redis.call('SADD', K_MODELS, model)
    redis.call('HSET', ikey(model), 'tpm', lim.tpm, 'rpm', lim.rpm, 'tpd', lim.tpd, 'rpd', lim.rpd, 'conc', lim.conc)
  end
  redis.call('ZADD', K_INST, now, inst)
  local q = bump()
  publish('-', 'join', q, nil, all_states('', now), {}, {})
  local out = {'ok', q, now}
  for _, v in ipairs(all_states(inst, now)) do out[#out + 1] = v end
  return out
end
