-- ARGV: lease_id, ttl_ms. Replies {'extended', expires_at} | {'closed', closed_json} | {'unknown'}
local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
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
