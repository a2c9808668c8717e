-- Everything but Acquire and Release, made only in a call that needs it (ledger.py wraps this text
-- and the cold op files in a function): made on every call, it would cost Redis about as much as an
-- operation does.
local OPS = {}
-- The most leases one operation closes when removing an instance or sweeping expired leases: a few
-- milliseconds of Redis at most, so that every other call waits no longer than that.
local BATCH = 32

-- Code below works on the counters without the tables: it writes them back first and drops them.
local function sync()
  flush()
  MS, N, REG = {}, nil, nil
end

-- A model's state as inst sees it (own fields 0 for inst == ''), packed: pack() of a copy of the
-- model whose own fields are inst's.
local function pack_for(m, inst)
  if inst == ME then return pack(m) end
  local view = {fl = m.fl, w = m.w, pu = m.pu, own = 0, ow = 0, wm = false, wd = false}
  for _, kind in ipairs({'wm', 'wd'}) do
    local w = m[kind]
    if w then
      local v = inst == '' and {}
        or redis.call('HMGET', w.key, 'ot:' .. inst, 'or:' .. inst, 'st:' .. inst, 'sr:' .. inst)
      view[kind] = {st = w.st, sr = w.sr, ot = w.ot, oq = w.oq, xt = w.xt, xr = w.xr, vt = w.vt, vr = w.vr, mot = tonumber(v[1]) or 0,
                    moq = tonumber(v[2]) or 0, mst = tonumber(v[3]) or 0, msr = tonumber(v[4]) or 0}
      if w.kinds then w.kinds.view(view[kind], w, inst) end
    end
  end
  if inst ~= '' then
    local v = redis.call('HMGET', m.ik, inst, 'w:' .. inst)
    view.own, view.ow = tonumber(v[1]) or 0, v[2] and 1 or 0
  end
  return pack(view)
end

-- Every model's state for inst: names and packed states.
local function all_states(inst)
  local names, packed = {}, {}
  for _, name in ipairs(redis.call('SMEMBERS', K_MODELS)) do
    local m = model(name)
    if m then
      names[#names + 1] = name
      packed[#packed + 1] = pack_for(m, inst)
    end
  end
  return names, packed
end

local function touch_all()
  for _, name in ipairs(redis.call('SMEMBERS', K_MODELS)) do touch(name) end
end

-- Leases of other instances closed by a call: each owner hears of its own at once, with its state.
local function foreign_news(closed)
  flush()
  for _, c in ipairs(closed) do
    local rec, text = c[1], c[2]
    local m = model(rec.m)
    publish(ME, 'release', bump(), rec.i, m and {rec.m} or {}, m and {pack_for(m, rec.i)} or {}, {text}, {})
  end
end

-- Closes, at their estimate, the leases with these ids from an instance's expiry index (at most one
-- batch); returns their closed records. An id whose lease is no longer open leaves the index.
local function close_listed(key, ids)
  local out = {}
  for _, id in ipairs(ids) do
    local rec = find_open(id)
    if rec then
      out[#out + 1] = close_lease(rec, '3', '0', '0', '0', '0', true)
    else
      redis.call('ZREM', key, id)
    end
  end
  return out
end

-- Closes at most one batch of an instance's open leases; true once none is left.
local function close_batch(inst)
  local key = xkey(inst)
  close_listed(key, redis.call('ZRANGE', key, 0, BATCH - 1))
  return redis.call('ZCARD', key) == 0
end

-- The last step of a removal, once the instance holds no open lease: its per-model fields go, and
-- N drops. Work per model, at most max_models of them (register.lua refuses more). The caller has
-- written the counters back and dropped them.
local function drop_instance(inst)
  for _, name in ipairs(redis.call('SMEMBERS', K_MODELS)) do
    for _, win in ipairs({'m:' .. WM, 'd:' .. WD, 'm:r', 'd:r'}) do
      redis.call('HDEL', P .. ':w:' .. name .. ':' .. win, 'ot:' .. inst, 'or:' .. inst, 'oi:' .. inst, 'oo:' .. inst)
    end
    local ik = P .. ':model:' .. name
    local f = redis.call('HMGET', ik, inst, 'w:' .. inst)
    local c = tonumber(f[1]) or 0
    if c > 0 then redis.call('HINCRBY', ik, '_', -c) end
    if f[2] then redis.call('HINCRBY', ik, 'w', -1) end
    redis.call('HDEL', ik, inst, 'w:' .. inst)
  end
  redis.call('ZREM', K_INST, inst)
end

-- One step of removing inst (a stale one, a restart of the same id, a clean stop): marks it as
-- leaving (score 0: its heartbeats are refused from now on), closes one batch of its leases and,
-- when none is left, drops it. Returns true when it is gone. Capacity stays committed while leases
-- remain; N drops only at the end.
local function remove_step(inst, origin)
  sync()
  if not redis.call('ZSCORE', K_INST, inst) then return true end
  redis.call('ZADD', K_INST, 'XX', 0, inst)
  local done = close_batch(inst)
  sync()
  if done then drop_instance(inst) end
  local names, packed = all_states('')
  publish(origin, done and 'gone' or 'reap', bump(), nil, names, packed, {}, done and {inst} or {})
  return done
end

local function stale(stale_ms)
  return redis.call('ZRANGEBYSCORE', K_INST, '-inf', NOW - stale_ms, 'LIMIT', 0, 1)[1]
end

local function expired_left()
  return #redis.call('ZRANGEBYSCORE', xkey(ME), '-inf', NOW, 'LIMIT', 0, 1) > 0
end

-- Frees at most one batch of the calling instance's leases whose expiry has passed; returns their
-- closed records.
local function sweep()
  local key = xkey(ME)
  return close_listed(key, redis.call('ZRANGEBYSCORE', key, '-inf', NOW, 'LIMIT', 0, BATCH))
end
