-- Replies extended, expires_at | closed, closed | unknown
OPS.extend = function(lease_id, ttl)
  local rec, reply = find_open(lease_id)
  if not rec then return reply end
  if rec.x <= NOW then return 'unknown' end
  local x = expiry(ttl)
  -- The record with its last two lines, expiry and job id, made again.
  local head = string.match(rec.body, '^(.*)\n[^\n]*\n[^\n]*$')
  redis.call('SET', lkey(lease_id), 'o\n' .. head .. '\n' .. x .. '\n' .. rec.jid)
  redis.call('ZADD', xkey(rec.i), x, lease_id)
  return 'extended\n' .. x
end
