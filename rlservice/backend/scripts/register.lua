-- models_json: {model: {tpm, rpm, tpd, rpd, conc}}, 0 = not limited.
-- Replies ok (with every model's state) | busy
-- The same id registering again is a restart: whatever the old process held is closed first, one
-- batch a call ('busy' until that is done).
OPS.register = function(models_json)
  if not remove_step(ME, '-') then return 'busy' end
  for name, lim in pairs(cjson.decode(models_json)) do
    redis.call('SADD', K_MODELS, name)
    redis.call('HSET', P .. ':model:' .. name, 'tpm', lim.tpm, 'rpm', lim.rpm, 'tpd', lim.tpd, 'rpd', lim.rpd,
               'conc', lim.conc)
  end
  redis.call('ZADD', K_INST, NOW, ME)
  sync()
  local names, packed = all_states('')
  publish('-', 'join', bump(), nil, names, packed, {}, {})
  touch_all()
  CHANGED = true
  return 'ok'
end
