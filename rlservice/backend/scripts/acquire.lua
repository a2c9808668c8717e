-- ARGV: instance, model, job_id, job_type, lease_id, est_tokens, est_requests, ttl_ms, stale_ms, peek
-- Replies {'granted', seq, now, state, expires_at} | {'existing', seq, now, state, lease_json, lease_id}
--       | {'denied', seq, now, state} | {'unregistered'} | {'unknown_model'}
-- peek = '1' only looks: the job id and the state, no grant.
local inst, model, job_id, job_type, lease_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local est_t, est_r, ttl, stale_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local now = now_ms()
reap(now, stale_ms)
if not redis.call('ZSCORE', K_INST, inst) then return {'unregistered'} end

if job_id ~= '' then
  local existing = redis.call('GET', jkey(job_id))
  local raw = existing and redis.call('GET', lkey(existing))
  if raw then
    local rec = cjson.decode(raw)
    if rec.closed == nil then
      local lim = limits_of(rec.m)
      return {'existing', tonumber(redis.call('GET', K_SEQ) or 0), now, model_state(rec.m, lim, inst, now), raw,
              existing}
    end
  end
end

local lim = limits_of(model)
if not lim then return {'unknown_model'} end
local st = model_state(model, lim, inst, now)
if ARGV[10] == '1' or not fits(lim, st, est_t, est_r) then
  return {'denied', tonumber(redis.call('GET', K_SEQ) or 0), now, st}
end

for k, kind in ipairs(KINDS) do
  if tracks(lim, kind) then add_committed(model, kind, st[k], inst, est_t, est_r) end
end
redis.call('HINCRBY', ikey(model), '_', 1)
redis.call('HINCRBY', ikey(model), inst, 1)
local expires = now + ttl
local rec = {i = inst, m = model, j = job_type, jid = job_id, mw = st[1], dw = st[2], t = est_t, r = est_r,
             x = expires, a = now}
-- The lease key outlives its expiry by a day only as a safety net; the sweep closes it first.
redis.call('SET', lkey(lease_id), cjson.encode(rec), 'PX', ttl + DAY)
redis.call('ZADD', K_LEXP, expires, lease_id)
if job_id ~= '' then redis.call('SET', jkey(job_id), lease_id, 'PX', ttl) end
local seq = bump()
-- The state after the grant, without reading it again: totals and own amounts grew by the estimate.
for k, kind in ipairs(KINDS) do
  if tracks(lim, kind) then
    local base = 4 + (k - 1) * 6
    st[base] = st[base] + est_t
    st[base + 1] = st[base + 1] + est_r
    st[base + 4] = st[base + 4] + est_t
    st[base + 5] = st[base + 5] + est_r
  end
end
st[16] = st[16] + 1
st[17] = st[17] + 1
-- Alone, or with room for everyone's share left, nobody else's pool moved.
if st[3] > 1 and tight(lim, st) then publish(inst, {q = seq, k = 'acquire', s = {[model] = st}}) end
return {'granted', seq, now, st, expires}
