-- models_json: {model: {tpm, rpm, tpd, rpd, conc}}, 0 = not limited. max_models: the most models
-- the ledger may hold, the batch of every operation that works on all of them.
-- Replies ok (with every model's state) | busy | too_many_models, models held, models it would add
-- The same id registering again is a restart: whatever the old process held is closed first, one
-- batch a call ('busy' until that is done).
OPS.register = function(models_json, max_models)
  local models, held, added = cjson.decode(models_json), redis.call('SCARD', K_MODELS), 0
  for name in pairs(models) do added = added + 1 - redis.call('SISMEMBER', K_MODELS, name) end
  if held + added > tonumber(max_models) then return 'too_many_models\n' .. held .. '\n' .. added end
  if not remove_step(ME, '-') then return 'busy' end
  for name, lim in pairs(models) do
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
