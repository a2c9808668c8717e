-- The reply for a job id that an open lease holds already, else nil.
local function existing(job_id)
  if job_id == '' then return nil end
  local id = redis.call('HGET', K_JOBS, job_id)
  local rec = id and find_open(id)
  if rec then
    touch(rec.m)
    return 'existing\n' .. id .. '\n' .. rec.body
  end
end

-- Replies granted, expires_at | denied | existing, lease_id, the lease's open record
--       | unregistered | unknown_model
-- lend = '1' lets the instance borrow what idle instances leave; peek = '1' only looks (the job id
-- and the state), no grant. est_i, est_o: the estimated input and output tokens, given only for a
-- model that limits them (kinds.lua; absent: 0).
OPS.acquire = function(name, job_id, job_type, lease_id, est_t, est_r, ttl, lend, peek, est_i, est_o)
  if not registered() then return 'unregistered' end
  local m = model(name)
  local t, r = tonumber(est_t), tonumber(est_r)
  if not m or peek == '1' or not fits(m, t, r, lend == '1', est_i, est_o) then
    local found = existing(job_id)
    if found then return found end
    if not m then return 'unknown_model' end
    touch(name)
    return 'denied'
  end
  -- The job id is claimed in the same step as the grant: one held by an open lease answers with it.
  if job_id ~= '' and redis.call('HSETNX', K_JOBS, job_id, lease_id) == 0 then
    local found = existing(job_id)
    if found then return found end
    redis.call('HSET', K_JOBS, job_id, lease_id)
  end
  touch(name)
  local a, b = m.wm, m.wd
  if a then a.ot, a.oq, a.mot, a.moq, a.tot, a.mine = a.ot + t, a.oq + r, a.mot + t, a.moq + r, true, true end
  if b then b.ot, b.oq, b.mot, b.moq, b.tot, b.mine = b.ot + t, b.oq + r, b.mot + t, b.moq + r, true, true end
  m.fl, m.own, m.dirty, m.mine = m.fl + 1, m.own + 1, true, true
  local x = expiry(ttl)
  local text = open_text(ME, name, job_type, est_t, est_r, x, job_id)
  if m.kinds then text = m.kinds.open(a, text, est_i, est_o) end
  redis.call('SET', lkey(lease_id), text)
  redis.call('ZADD', xkey(ME), x, lease_id)
  -- An open lease moves nobody's pool: no news.
  CHANGED = true
  return 'granted\n' .. x
end
