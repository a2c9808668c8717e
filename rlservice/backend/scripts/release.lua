-- a: lease_id, outcome (1 success, 2 failed with usage, 3 failed, unknown usage),
--    input_tokens, output_tokens, cached_tokens, request_count, releasing instance
-- Replies released, seq, now, state_of_owner, closed | closed, closed | unknown
OPS.release = function(a, now)
  local id = a[1]
  local rec, reply = find_open(id)
  if not rec then return reply end
  -- The owner's state, kept current by the counters' new values as the lease closes.
  local lim, st, state = model_state(rec.m, rec.i, now)
  local text = close_lease(id, rec, tonumber(a[2]), a[3], a[4], a[5], a[6], now, false, lim, state)
  local q = bump()
  -- Settled usage moved every instance's pool. A lone instance releasing its own lease has the
  -- same news in this reply.
  if st[3] > 1 or rec.i ~= a[7] then
    publish(a[7], 'release', q, rec.i, one_state(rec.m, state), {text}, {})
  end
  return {'released', q, now, csv(state), text}
end
