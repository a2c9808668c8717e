-- Replies extended, expires_at | closed, closed | unknown
OPS.extend = function(lease_id, ttl)
  local rec, reply = find_open(lease_id)
  if not rec then return reply end
  if rec.x <= NOW then return 'unknown' end
  local x = expiry(ttl)
  -- The record with its body's last two lines, expiry and job id, made again (and the estimated
  -- input and output tokens after them, when it has them).
  local head = string.match(rec.body, '^(.*)\n[^\n]*\n[^\n]*$')
  local text = head .. '\n' .. x .. '\n' .. rec.jid
  if rec.parts then text = 'k\n' .. text .. '\n' .. rec.parts else text = 'o\n' .. text end
  redis.call('SET', lkey(lease_id), text)
  redis.call('ZADD', xkey(rec.i), x, lease_id)
  return 'extended\n' .. x
end
