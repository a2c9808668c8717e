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
local lim = limits_of(rec.m) or NO_LIMITS
local closed, closed_raw = close_lease(id, rec, outcome, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
                                       tonumber(ARGV[6]), now, false, lim)
local seq = bump()
local st = model_state(rec.m, lim, rec.i, now)
-- A lone instance releasing its own lease has the same news in this reply.
if st[3] > 1 or rec.i ~= ARGV[8] then
  publish(ARGV[8], {q = seq, k = 'release', o = rec.i, s = {[rec.m] = st}, c = {closed}})
end
return {'released', seq, now, st, closed_raw}
