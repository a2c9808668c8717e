-- a: lease_id, ttl_ms. Replies extended, expires_at | closed, closed | unknown
OPS.extend = function(a, now)
  local id, ttl = a[1], tonumber(a[2])
  local rec, reply = find_open(id)
  if not rec then return reply end
  if rec.x <= now then return {'unknown'} end
  local expires = now + ttl
  redis.call('HSET', lkey(id), 'x', expires)
  redis.call('ZADD', K_LEXP, expires, id)
  if rec.jid ~= '' then redis.call('PEXPIRE', jkey(rec.jid), ttl) end
  return {'extended', expires}
end
