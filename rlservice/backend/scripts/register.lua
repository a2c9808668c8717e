-- models_json: {model: {tpm, rpm, tpd, rpd, conc, roll}}, 0 = not limited; roll '1' for a model
-- whose limits are rolling buckets (lib.lua: bucket), else '0', followed for a model that limits
-- input or output tokens apart by ' ITPM OTPM CIN' (kinds.lua). max_models: the most models
-- the ledger may hold, the batch of every operation that works on all of them.
-- Replies ok (with every model's state) | busy | too_many_models, models held, models it would add
-- The same id registering again is a restart: whatever the old process held is closed first, one
-- batch a call ('busy' until that is done).
OPS.register = function(models_json, max_models)
  local models, listed, added = cjson.decode(models_json), {}, 0
  for name in pairs(models) do listed[#listed + 1] = name end
  for _, known in ipairs(redis.call('SMISMEMBER', K_MODELS, unpack(listed))) do added = added + 1 - known end
  local held = redis.call('SCARD', K_MODELS)
  if held + added > tonumber(max_models) then return 'too_many_models\n' .. held .. '\n' .. added end
  if not remove_step(ME, '-') then return 'busy' end
  redis.call('SADD', K_MODELS, unpack(listed))
  for name, lim in pairs(models) do
    redis.call('HSET', P .. ':model:' .. name, 'tpm', lim.tpm, 'rpm', lim.rpm, 'tpd', lim.tpd, 'rpd', lim.rpd,
               'conc', lim.conc, 'roll', lim.roll)
  end
  redis.call('ZADD', K_INST, NOW, ME)
  sync()
  local names, packed = all_states('')
  publish('-', 'join', bump(), nil, names, packed, {}, {})
  touch_all()
  CHANGED = true
  return 'ok'
end
