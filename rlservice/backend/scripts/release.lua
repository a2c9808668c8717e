-- a: lease_id, outcome (1 success, 2 failed with usage, 3 failed, unknown usage),
--    input_tokens, output_tokens, cached_tokens, request_count, releasing instance
-- Replies {'released', seq, now, state_of_owner, closed_json} | {'closed', closed_json} | {'unknown'}
OPS.release = function(a, now)
  local id = a[1]
  local raw = redis.call('GET', lkey(id))
  if not raw then return {'unknown'} end
  local rec = cjson.decode(raw)
  if rec.closed then return {'closed', raw} end
  local lim = limits_of(rec.m) or NO_LIMITS
  local closed, closed_raw = close_lease(id, rec, tonumber(a[2]), tonumber(a[3]), tonumber(a[4]), tonumber(a[5]),
                                         tonumber(a[6]), now, false, lim)
  local q = bump()
  local st = model_state(rec.m, lim, rec.i, now)
  -- Settled usage moved every instance's pool. A lone instance releasing its own lease has the
  -- same news in this reply.
  if st[3] > 1 or rec.i ~= a[7] then
    publish(a[7], {q = q, k = 'release', o = rec.i, s = {[rec.m] = st}, c = {closed}})
  end
  return {'released', q, now, st, closed_raw}
end
