-- ARGV: lease_id, outcome (1 success, 2 failed with usage, 3 failed, unknown usage),
--       input_tokens, output_tokens, cached_tokens, request_count, stale_ms, releasing instance
-- Replies {'released', seq, now, state_of_owner, closed_json} | {'closed', closed_json} | {'unknown'}
local id, outcome = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
reap(now, tonumber(ARGV[7]))
local raw = redis.call('GET', lkey(id))
if not raw then return {'unknown'} end
local rec = cjson.decode(raw)
if rec.closed then return {'closed', raw} end
local closed = close_lease(id, rec, outcome, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
                           tonumber(ARGV[6]), now, false)
local seq = bump()
local lim = limits_of(rec.m) or {tpm = 0, rpm = 0, tpd = 0, rpd = 0, conc = 0}
local st = model_state(rec.m, lim, rec.i, now)
publish(ARGV[8], {q = seq, k = 'release', o = rec.i, s = {[rec.m] = st}, c = {closed}})
return {'released', seq, now, st, cjson.encode(closed)}
