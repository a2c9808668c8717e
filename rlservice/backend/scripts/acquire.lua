-- a: instance, model, job_id, job_type, lease_id, est_tokens, est_requests, ttl_ms, lend, peek
-- Replies granted, seq, now, state, expires_at | denied, seq, now, state
--       | existing, seq, now, state, lease_id, owner, model, job_type, mw, dw, tokens, requests, expires_at
--       | unregistered | unknown_model
-- lend = '1' lets the instance borrow what idle instances leave; peek = '1' only looks (the job id
-- and the state), no grant.
OPS.acquire = function(a, now)
  local inst, model, job_id, job_type, lease_id = a[1], a[2], a[3], a[4], a[5]
  local est_t, est_r, ttl = tonumber(a[6]), tonumber(a[7]), tonumber(a[8])
  local score = redis.call('ZSCORE', K_INST, inst)
  if not score or tonumber(score) == 0 then return {'unregistered'} end
  if job_id ~= '' then
    local existing = redis.call('GET', jkey(job_id))
    local rec = existing and open_lease(existing)
    if rec then
      local _, _, text = model_state(rec.m, inst, now)
      local v = rec.raw
      return {'existing', seq(), now, csv(text), existing, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]}
    end
  end
  local lim, st, text = model_state(model, inst, now)
  if not lim then return {'unknown_model'} end
  if a[10] == '1' or not fits(lim, st, est_t, est_r, a[9] == '1') then
    return {'denied', seq(), now, csv(text)}
  end

  for _, kind in ipairs(KINDS) do
    if tracks(lim, kind) then
      local b, win = kind.at, st[kind.w]
      local key = wkey(model, kind.name, win)
      -- A fresh window: Redis drops it one window after it ends.
      local fresh = st[b] == 0 and st[b + 1] == 0 and st[b + 2] == 0 and st[b + 3] == 0
      hincr(key, 'ot', est_t)
      hincr(key, 'or', est_r)
      hincr(key, 'ot:' .. inst, est_t)
      hincr(key, 'or:' .. inst, est_r)
      if fresh then redis.call('PEXPIREAT', key, (win + 2) * kind.size) end
      text[b + 2] = st[b + 2] + est_t
      text[b + 3] = st[b + 3] + est_r
      text[b + 4] = st[b + 4] + est_t
      text[b + 5] = st[b + 5] + est_r
    end
  end
  local ik = ikey(model)
  text[20] = redis.call('HINCRBY', ik, '_', 1)
  text[21] = redis.call('HINCRBY', ik, inst, 1)
  local expires = now + ttl
  local key = lkey(lease_id)
  redis.call('HSET', key, 'i', inst, 'm', model, 'j', job_type, 'mw', st[1], 'dw', st[2], 't', a[6], 'r', a[7],
             'x', expires, 'jid', job_id)
  redis.call('ZADD', K_LEXP, expires, lease_id)
  redis.call('SADD', ilkey(inst), lease_id)
  if job_id ~= '' then redis.call('SET', jkey(job_id), lease_id, 'PX', ttl) end
  -- An open lease moves nobody's pool: no event.
  return {'granted', bump(), now, csv(text), expires}
end
