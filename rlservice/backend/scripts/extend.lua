-- a: lease_id, ttl_ms. Replies {'extended', expires_at} | {'closed', closed_json} | {'unknown'}
OPS.extend = function(a, now)
  local id, ttl = a[1], tonumber(a[2])
  local raw = redis.call('GET', lkey(id))
  if not raw then return {'unknown'} end
  local rec = cjson.decode(raw)
  if rec.closed then return {'closed', raw} end
  if rec.x <= now then return {'unknown'} end
  rec.x = now + ttl
  redis.call('SET', lkey(id), cjson.encode(rec), 'PX', ttl + DAY)
  redis.call('ZADD', K_LEXP, rec.x, id)
  if rec.jid ~= '' then redis.call('PEXPIRE', jkey(rec.jid), ttl) end
  return {'extended', rec.x}
end
