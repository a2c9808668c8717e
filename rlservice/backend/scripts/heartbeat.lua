-- ARGV: instance, stale_ms. Keeps the instance alive, removes stale ones, frees expired leases.
-- Replies {'ok', seq, now, {{model, state}, ...}} | {'unregistered'}
local inst, stale_ms = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
if not redis.call('ZSCORE', K_INST, inst) then return {'unregistered'} end
redis.call('ZADD', K_INST, 'XX', now, inst)
reap(now, stale_ms)
local expired = sweep(now)
if #expired > 0 then publish('-', {q = bump(), k = 'release', s = states_map(now), c = expired}) end
return {'ok', tonumber(redis.call('GET', K_SEQ) or 0), now, all_states(inst, now)}
