-- a: lease_id, ttl_ms. Replies extended, expires_at | closed, closed | unknown
OPS.extend = function(a, now)
  local id, ttl = a[1], tonumber(a[2])
  local rec, closed = open_lease(id)
  if not rec then
    if closed then return {'closed', closed_text(id)} end
    return {'unknown'}
  end
  if rec.x <= now then return {'unknown'} end
  local expires = now + ttl
  redis.call('HSET', lkey(id), 'x', expires)
  redis.call('ZADD', K_LEXP, expires, id)
  if rec.jid ~= '' then redis.call('PEXPIRE', jkey(rec.jid), ttl) end
  return {'extended', expires}
end
