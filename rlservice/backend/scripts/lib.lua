-- Loaded in front of every script body: Redis scripts cannot include each other.
-- KEYS[1] is the key prefix with its hash tag ("{rl}"); every key below shares it, so all keys live
-- in one cluster slot.
local P = KEYS[1]
local K_INST = P .. ':instances'
local K_MODELS = P .. ':models'
local K_SEQ = P .. ':seq'
local K_LEXP = P .. ':lexp'
local K_EVENTS = P .. ':events'
local MINUTE = 60000
local DAY = 86400000
-- A closed lease is kept this long so that a repeated Release gets the first answer again.
local CLOSED_TTL = 3600000
local SWEEP_BATCH = 256

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function wkey(model, kind, win) return P .. ':w:' .. model .. ':' .. kind .. ':' .. win end
local function ikey(model) return P .. ':inflight:' .. model end
local function lkey(id) return P .. ':lease:' .. id end
local function jkey(job) return P .. ':job:' .. job end
-- Lease ids start with their instance's id and a slash, so an instance's leases can be found in the
-- expiry index without a set of its own.
local function owned_by(id, inst) return string.sub(id, 1, #inst + 1) == inst .. '/' end

-- Window kinds: minute windows carry TPM/RPM, day windows TPD/RPD.
local KINDS = {
  {name = 'm', size = MINUTE, tokens = 'tpm', requests = 'rpm', field = 'mw'},
  {name = 'd', size = DAY, tokens = 'tpd', requests = 'rpd', field = 'dw'},
}

local function tracks(lim, kind) return lim[kind.tokens] > 0 or lim[kind.requests] > 0 end

local function limits_of(model)
  local raw = redis.call('HGET', K_MODELS, model)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function add_committed(model, kind, win, inst, dt, dr)
  local key = wkey(model, kind.name, win)
  local fresh = redis.call('HINCRBY', key, 'r', dr) == dr
  redis.call('HINCRBY', key, 't', dt)
  redis.call('HINCRBY', key, 't:' .. inst, dt)
  redis.call('HINCRBY', key, 'r:' .. inst, dr)
  -- A window is kept one window past its end, then Redis drops it; setting that once is enough.
  if fresh then redis.call('PEXPIREAT', key, (win + 2) * kind.size) end
end

-- The state of a model as seen by inst (own fields are 0 for inst == ''):
-- {minute_window, day_window, n,
--  minute: total_t, total_r, retired_t, retired_r, own_t, own_r,
--  day:    total_t, total_r, retired_t, retired_r, own_t, own_r,
--  inflight_total, own_inflight}
local function model_state(model, lim, inst, now)
  local st = {math.floor(now / MINUTE), math.floor(now / DAY), redis.call('ZCARD', K_INST)}
  for k, kind in ipairs(KINDS) do
    local v = {}
    if tracks(lim, kind) then
      v = redis.call('HMGET', wkey(model, kind.name, st[k]), 't', 'r', 'xt', 'xr', 't:' .. inst, 'r:' .. inst)
    end
    for i = 1, 6 do st[#st + 1] = tonumber(v[i]) or 0 end
  end
  local f = redis.call('HMGET', ikey(model), '_', inst)
  st[#st + 1] = tonumber(f[1]) or 0
  st[#st + 1] = tonumber(f[2]) or 0
  return st
end

-- What inst may still take in one dimension: its fair share of the capacity left to live instances
-- (the limit less what departed instances committed), less what it committed itself, and never more
-- than what is left globally. A limit of 0 means unlimited (nil).
local function dim_pool(limit, n, total, retired, own)
  if limit <= 0 then return nil end
  local share = math.floor((limit - retired) / n)
  return math.min(share - own, limit - total)
end

local function pools(lim, st)
  local n = math.max(st[3], 1)
  local p = {}
  p.tpm = dim_pool(lim.tpm, n, st[4], st[6], st[8])
  p.rpm = dim_pool(lim.rpm, n, st[5], st[7], st[9])
  p.tpd = dim_pool(lim.tpd, n, st[10], st[12], st[14])
  p.rpd = dim_pool(lim.rpd, n, st[11], st[13], st[15])
  p.conc = dim_pool(lim.conc, n, st[16], 0, st[17])
  return p
end

local function fits(lim, st, est_t, est_r)
  local p = pools(lim, st)
  for _, d in ipairs({'tpm', 'tpd'}) do
    if p[d] and est_t > p[d] then return false end
  end
  for _, d in ipairs({'rpm', 'rpd'}) do
    if p[d] and est_r > p[d] then return false end
  end
  return p.conc == nil or p.conc >= 1
end

-- True when what is left globally caps some instance's pool below its fair share, i.e. when the
-- other instances' pools moved too and they must hear of it.
local function tight(lim, st)
  local n = math.max(st[3], 1)
  local dims = {{lim.tpm, st[4], st[6]}, {lim.rpm, st[5], st[7]}, {lim.tpd, st[10], st[12]},
                {lim.rpd, st[11], st[13]}, {lim.conc, st[16], 0}}
  for _, d in ipairs(dims) do
    if d[1] > 0 and d[1] - d[2] < math.floor((d[1] - d[3]) / n) then return true end
  end
  return false
end

local function all_states(inst, now)
  local out = {}
  local models = redis.call('HGETALL', K_MODELS)
  for i = 1, #models, 2 do
    out[#out + 1] = {models[i], model_state(models[i], cjson.decode(models[i + 1]), inst, now)}
  end
  return out
end

local function states_map(now)
  local out = {}
  for _, pair in ipairs(all_states('', now)) do out[pair[1]] = pair[2] end
  return out
end

local function bump() return redis.call('INCR', K_SEQ) end

-- Every event starts with the id of the instance whose call caused it ('-' for none), so that
-- instance can skip it without decoding: it has the same news in its script's reply.
local function publish(origin, msg) redis.call('PUBLISH', K_EVENTS, origin .. ' ' .. cjson.encode(msg)) end

-- Closes an open lease: adjusts the windows by actual usage (outcome 1 or 2), frees its concurrency
-- slot and returns the closed record (and its JSON), which answers any later Release of the lease.
-- Usage in a window that has closed is never refunded; an overage is then charged to the current one.
-- A model with no rate windows (concurrency only) has nothing to refund or charge.
local NO_LIMITS = {tpm = 0, rpm = 0, tpd = 0, rpd = 0, conc = 0}

local function close_lease(id, rec, outcome, in_t, out_t, cached_t, req, now, expired, lim)
  lim = lim or limits_of(rec.m) or NO_LIMITS
  local dt, dr = 0, 0
  if outcome ~= 3 then
    dt = in_t + out_t + cached_t - rec.t
    dr = req - rec.r
  end
  local same, refunded, tracked = true, false, false
  for _, kind in ipairs(KINDS) do
    if tracks(lim, kind) then
      tracked = true
      local cur = math.floor(now / kind.size)
      if cur == rec[kind.field] then
        if dt ~= 0 or dr ~= 0 then add_committed(rec.m, kind, cur, rec.i, dt, dr) end
        refunded = true
      else
        same = false
        if dt > 0 or dr > 0 then add_committed(rec.m, kind, cur, rec.i, math.max(dt, 0), math.max(dr, 0)) end
      end
    end
  end
  local ik = ikey(rec.m)
  if redis.call('HINCRBY', ik, rec.i, -1) < 0 then
    redis.call('HSET', ik, rec.i, 0)
  else
    redis.call('HINCRBY', ik, '_', -1)
  end
  local closed = {
    closed = 1, id = id, i = rec.i, m = rec.m, j = rec.j, jid = rec.jid, mw = rec.mw, dw = rec.dw,
    t = rec.t, r = rec.r, o = outcome, same = same and 1 or 0, expired = expired and 1 or 0,
    rt = refunded and math.max(-dt, 0) or 0, rr = refunded and math.max(-dr, 0) or 0,
    ot = tracked and math.max(dt, 0) or 0, ['or'] = tracked and math.max(dr, 0) or 0,
    ['in'] = in_t, out = out_t, cached = cached_t, req = req,
  }
  local raw = cjson.encode(closed)
  redis.call('SET', lkey(id), raw, 'PX', CLOSED_TTL)
  redis.call('ZREM', K_LEXP, id)
  -- While a lease is open its job id points to it alone.
  if rec.jid ~= '' then redis.call('DEL', jkey(rec.jid)) end
  return closed, raw
end

-- Removes an instance: its open leases close with unknown usage, what it committed in the current
-- windows stays committed (it was spent) but is retired from the fair share of the live ones.
local function remove_instance(inst, now)
  for _, id in ipairs(redis.call('ZRANGE', K_LEXP, 0, -1)) do
    if owned_by(id, inst) then
      local raw = redis.call('GET', lkey(id))
      local rec = raw and cjson.decode(raw)
      if rec and rec.closed == nil then
        close_lease(id, rec, 3, 0, 0, 0, 0, now, true)
      else
        redis.call('ZREM', K_LEXP, id)
      end
    end
  end
  local models = redis.call('HGETALL', K_MODELS)
  for i = 1, #models, 2 do
    local model = models[i]
    for _, kind in ipairs(KINDS) do
      local key = wkey(model, kind.name, math.floor(now / kind.size))
      local v = redis.call('HMGET', key, 't:' .. inst, 'r:' .. inst)
      if v[1] then redis.call('HINCRBY', key, 'xt', v[1]) end
      if v[2] then redis.call('HINCRBY', key, 'xr', v[2]) end
      redis.call('HDEL', key, 't:' .. inst, 'r:' .. inst)
    end
    local ik = ikey(model)
    local c = tonumber(redis.call('HGET', ik, inst) or 0)
    if c > 0 then redis.call('HINCRBY', ik, '_', -c) end
    redis.call('HDEL', ik, inst)
  end
  redis.call('ZREM', K_INST, inst)
end

-- Removes instances whose heartbeat is older than stale_ms and tells everyone.
local function reap(now, stale_ms)
  local dead = redis.call('ZRANGEBYSCORE', K_INST, '-inf', now - stale_ms)
  if #dead == 0 then return dead end
  for _, inst in ipairs(dead) do remove_instance(inst, now) end
  publish('-', {q = bump(), k = 'gone', gone = dead, s = states_map(now)})
  return dead
end

-- Frees leases whose expiry has passed, whoever holds them; returns their closed records.
local function sweep(now)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEXP, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)) do
    local raw = redis.call('GET', lkey(id))
    local rec = raw and cjson.decode(raw)
    if rec and rec.closed == nil then
      out[#out + 1] = close_lease(id, rec, 3, 0, 0, 0, 0, now, true)
    else
      redis.call('ZREM', K_LEXP, id)
    end
  end
  return out
end
