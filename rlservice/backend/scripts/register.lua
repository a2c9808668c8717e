-- ARGV: instance, stale_ms, models_json ({model: {tpm, rpm, tpd, rpd, conc}}, 0 = unlimited)
-- Replies {'ok', seq, now, {{model, state}, ...}}
local inst, stale_ms = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
for model, lim in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', K_MODELS, model, cjson.encode(lim)) end
-- The same id registering again is a restart: whatever the old process held is freed first.
if redis.call('ZSCORE', K_INST, inst) then remove_instance(inst, now) end
reap(now, stale_ms)
redis.call('ZADD', K_INST, now, inst)
local seq = bump()
publish('-', {q = seq, k = 'join', s = states_map(now)})
return {'ok', seq, now, all_states(inst, now)}
