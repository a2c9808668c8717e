-- ARGV: instance. A clean shutdown: the others re-divide at once.
local inst = ARGV[1]
local now = now_ms()
if redis.call('ZSCORE', K_INST, inst) then
  remove_instance(inst, now)
  publish(inst, {q = bump(), k = 'gone', gone = {inst}, s = states_map(now)})
end
return {'ok'}
