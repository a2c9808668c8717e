-- The ledger's functions; the op files and main.lua follow this text in one script (Redis scripts
-- cannot include each other). KEYS[1] is the key prefix with its hash tag ("{rl}"): every key below
-- shares it, so all keys live in one cluster slot.
local P = KEYS[1]
local K_INST = P .. ':instances'  -- ZSET instance -> last heartbeat (ms); 0 while being removed
local K_MODELS = P .. ':models'   -- SET of model names
local K_SEQ = P .. ':seq'
local K_LEXP = P .. ':lexp'       -- ZSET lease id -> expiry (ms)
local K_EVENTS = P .. ':events'
local MINUTE = 60000
local DAY = 86400000
-- A closed lease is kept this long so that a repeated Release gets the first answer again.
local CLOSED_TTL = 3600000
-- The most leases one operation closes when removing an instance or sweeping expired leases: a few
-- milliseconds of Redis at most, so that every other call waits no longer than that.
local BATCH = 32
local OPS = {}

-- Per model, window kind and window: settled (st, sr) and open (ot, or) totals, and per instance
-- open (ot:I, or:I) and settled (st:I, sr:I).
local function wkey(model, kind, win) return P .. ':w:' .. model .. ':' .. kind .. ':' .. win end
-- Per model: its limits (tpm, rpm, tpd, rpd, conc; 0 = not limited), in flight in total ('_') and
-- per instance (I), instances with waiters ('w', 'w:I').
local function ikey(model) return P .. ':model:' .. model end
local function lkey(id) return P .. ':lease:' .. id end
local function jkey(job) return P .. ':job:' .. job end
-- The open leases of one instance, so that removing it never scans anyone else's.
local function ilkey(inst) return P .. ':il:' .. inst end

-- Window kinds: minute windows carry TPM/RPM, day windows TPD/RPD. w: where a state holds the
-- window, at: where its eight counters start.
local KINDS = {
  {name = 'm', size = MINUTE, tokens = 'tpm', requests = 'rpm', field = 'mw', w = 1, at = 4},
  {name = 'd', size = DAY, tokens = 'tpd', requests = 'rpd', field = 'dw', w = 2, at = 12},
}

local function tracks(lim, kind) return lim[kind.tokens] > 0 or lim[kind.requests] > 0 end

local function limits(v)
  if not v[1] then return nil end
  return {tpm = tonumber(v[1]), rpm = tonumber(v[2]), tpd = tonumber(v[3]), rpd = tonumber(v[4]),
          conc = tonumber(v[5])}
end

-- Limits of a model, 0 = not limited; nil for a model nobody registered.
local function limits_of(model)
  return limits(redis.call('HMGET', ikey(model), 'tpm', 'rpm', 'tpd', 'rpd', 'conc'))
end
local NO_LIMITS = {tpm = 0, rpm = 0, tpd = 0, rpd = 0, conc = 0}

-- The limits and the state of a model as seen by inst (own fields are 0 for inst == ''), the state
-- as numbers for the checks and as text, which the reply carries without formatting a number again;
-- nil for an unknown model:
--  1 minute window, 2 day window, 3 live instances N,
--  4..11  minute: settled_t, settled_r, open_t, open_r, own_open_t, own_open_r, own_settled_t, own_settled_r
--  12..19 day:    the same
--  20 in flight in total, 21 own in flight, 22 instances with waiters, 23 own waiters (0/1)
local function model_state(model, inst, now)
  local f = redis.call('HMGET', ikey(model), 'tpm', 'rpm', 'tpd', 'rpd', 'conc', '_', inst, 'w', 'w:' .. inst)
  local lim = limits(f)
  if not lim then return nil end
  local st = {math.floor(now / MINUTE), math.floor(now / DAY), redis.call('ZCARD', K_INST)}
  local text = {st[1], st[2], st[3]}
  for _, kind in ipairs(KINDS) do
    local v = {}
    if tracks(lim, kind) then
      v = redis.call('HMGET', wkey(model, kind.name, st[kind.w]), 'st', 'sr', 'ot', 'or', 'ot:' .. inst, 'or:' .. inst,
                     'st:' .. inst, 'sr:' .. inst)
    end
    for i = 1, 8 do
      local raw = v[i] or '0'
      st[#st + 1] = tonumber(raw)
      text[#text + 1] = raw
    end
  end
  for i = 6, 9 do
    local raw = f[i] or '0'
    st[#st + 1] = tonumber(raw)
    text[#text + 1] = raw
  end
  return lim, st, text
end

local function csv(text) return table.concat(text, ',') end

-- Admission of an estimate in one dimension (limit 0 = not limited): the global cap
-- e <= limit - (settled + open) always; the share own_open + e <= floor((limit - settled) / N)
-- unless the instance may borrow what idle instances leave; and while other instances have
-- waiters, what the instance holds of the window, settled and open, stays within floor(limit / N),
-- so that an instance whose first jobs settle early does not take the others' part. An estimate
-- of 0 always fits: it adds nothing (pools.py clamps what is left at 0 the same way).
local function dim_fits(limit, n, settled, open, own, own_settled, e, lending, contended)
  if limit <= 0 or e == 0 then return true end
  if e > limit - settled - open then return false end
  if lending then return true end
  if own + e > math.floor(math.max(0, limit - settled) / n) then return false end
  return not contended or own_settled + own + e <= math.floor(limit / n)
end

-- Lending applies while no other live instance has waiters for the model, and only to an instance
-- whose own waiters are on record: a job beyond the share first queues and the instance records
-- that it waits, so that instances whose demand arrives at the same moment first take their own
-- shares instead of finding them lent away.
local function lending(lend, st) return lend and st[23] == 1 and st[22] == 1 end

local function fits(lim, st, est_t, est_r, lend)
  local n, borrow, contended = math.max(st[3], 1), lending(lend, st), st[22] - st[23] > 0
  for _, kind in ipairs(KINDS) do
    local b = kind.at
    if not dim_fits(lim[kind.tokens], n, st[b], st[b + 2], st[b + 4], st[b + 6], est_t, borrow, contended) then
      return false
    end
    if not dim_fits(lim[kind.requests], n, st[b + 1], st[b + 3], st[b + 5], st[b + 7], est_r, borrow, contended) then
      return false
    end
  end
  if lim.conc > 0 then
    if st[20] >= lim.conc then return false end
    if not borrow and st[21] >= math.floor(lim.conc / n) then return false end
  end
  return true
end

-- Every model's state for inst, flat: count, then model and state text for each.
local function all_states(inst, now)
  local models = redis.call('SMEMBERS', K_MODELS)
  local out = {0}
  for _, model in ipairs(models) do
    local lim, _, text = model_state(model, inst, now)
    if lim then
      out[#out + 1] = model
      out[#out + 1] = csv(text)
      out[1] = out[1] + 1
    end
  end
  return out
end

local function bump() return redis.call('INCR', K_SEQ) end
local function seq() return tonumber(redis.call('GET', K_SEQ) or 0) end

-- Events are text, one field a line: origin, kind, seq, owner ('-' for none), the states (a count,
-- then model and state text for each), the closed leases (a count, then 20 lines each) and the
-- instances gone (a count, then one a line). The origin is the instance whose call caused the
-- event ('-' for none): it can skip the event unread, having the same news in its reply.
local function publish(origin, kind, q, owner, states, closed, gone)
  local out = {origin, kind, q, owner or '-'}
  for _, v in ipairs(states) do out[#out + 1] = v end
  out[#out + 1] = #closed
  for _, c in ipairs(closed) do out[#out + 1] = c end
  out[#out + 1] = #gone
  for _, g in ipairs(gone) do out[#out + 1] = g end
  redis.call('PUBLISH', K_EVENTS, table.concat(out, '\n'))
end

-- One model's state as the states part of an event.
local function one_state(model, text) return {1, model, csv(text)} end

local function hincr(key, field, by)
  if by ~= 0 then return redis.call('HINCRBY', key, field, by) end
end

-- Settled usage charged to the current window of a kind; a window is kept one window past its
-- end, then Redis drops it.
local function settle(model, kind, win, inst, dt, dr)
  local key = wkey(model, kind.name, win)
  local t = redis.call('HINCRBY', key, 'st', dt)
  if t == dt then redis.call('PEXPIREAT', key, (win + 2) * kind.size) end
  local r = hincr(key, 'sr', dr)
  return t, r, hincr(key, 'st:' .. inst, dt), hincr(key, 'sr:' .. inst, dr)
end

-- Puts a counter's new value into a state's text, when there is one to keep current.
local function put(text, at, v)
  if text and v then text[at] = v end
end

-- Leases are hashes. Open: i (owner), m, j (job type), mw, dw (windows), t, r (estimates), x
-- (expiry), jid (job id); an open lease has no TTL of its own, since its entry in the expiry index
-- always closes it. Closing adds o (outcome), same, ex (expired), rt, rr (refunded), ot, or
-- (overage) and the actual usage in, out, cached, req. A closed lease answers later Releases as
-- text, 20 lines in CLOSED order; the job id comes last.
local OPEN = {'i', 'm', 'j', 'mw', 'dw', 't', 'r', 'x', 'jid', 'o'}
local CLOSED = {'i', 'm', 'j', 'mw', 'dw', 't', 'r', 'o', 'same', 'ex', 'rt', 'rr', 'ot', 'or', 'in', 'out', 'cached',
                'req', 'jid'}

-- An open lease's record (numbers where the ledger computes with them), or nil when the lease is
-- unknown or closed (then the second value says which).
local function open_lease(id)
  local v = redis.call('HMGET', lkey(id), unpack(OPEN))
  if not v[1] then return nil, false end
  if v[10] then return nil, true end
  return {i = v[1], m = v[2], j = v[3], mw = tonumber(v[4]), dw = tonumber(v[5]), t = tonumber(v[6]),
          r = tonumber(v[7]), x = tonumber(v[8]), jid = v[9], raw = v}
end

local function closed_text(id)
  local v = redis.call('HMGET', lkey(id), unpack(CLOSED))
  return id .. '\n' .. table.concat(v, '\n')
end

-- An open lease's record, or else the reply for a lease that is not open: its closed record, or
-- unknown.
local function find_open(id)
  local rec, closed = open_lease(id)
  if rec then return rec end
  if closed then return nil, {'closed', closed_text(id)} end
  return nil, {'unknown'}
end

-- Closes an open lease: its estimate leaves the open totals of its windows and its usage is
-- settled there (actual usage for outcomes 1 and 2, the estimate for 3: unknown usage, expiry,
-- removal). Usage in a window that has closed is never refunded; an overage is then charged to the
-- current window. Frees the concurrency slot and returns the closed record as text. in_t .. req
-- are the reported usage as given (text or numbers).
local function close_lease(id, rec, outcome, in_t, out_t, cached_t, req, now, expired, lim, text)
  local act_t, act_r = rec.t, rec.r
  if outcome ~= 3 then act_t, act_r = tonumber(in_t) + tonumber(out_t) + tonumber(cached_t), tonumber(req) end
  local dt, dr = act_t - rec.t, act_r - rec.r
  local same, refunded, tracked = 1, false, false
  for _, kind in ipairs(KINDS) do
    if tracks(lim, kind) then
      tracked = true
      local cur, b = math.floor(now / kind.size), kind.at
      if cur == rec[kind.field] then
        local key = wkey(rec.m, kind.name, cur)
        put(text, b + 2, hincr(key, 'ot', -rec.t))
        put(text, b + 3, hincr(key, 'or', -rec.r))
        put(text, b + 4, hincr(key, 'ot:' .. rec.i, -rec.t))
        put(text, b + 5, hincr(key, 'or:' .. rec.i, -rec.r))
        put(text, b, hincr(key, 'st', act_t))
        put(text, b + 1, hincr(key, 'sr', act_r))
        put(text, b + 6, hincr(key, 'st:' .. rec.i, act_t))
        put(text, b + 7, hincr(key, 'sr:' .. rec.i, act_r))
        refunded = true
      else
        same = 0
        if dt > 0 or dr > 0 then
          local t, r, own_t, own_r = settle(rec.m, kind, cur, rec.i, math.max(dt, 0), math.max(dr, 0))
          put(text, b, t)
          put(text, b + 1, r)
          put(text, b + 6, own_t)
          put(text, b + 7, own_r)
        end
      end
    end
  end
  local ik = ikey(rec.m)
  local own = redis.call('HINCRBY', ik, rec.i, -1)
  if own < 0 then
    redis.call('HSET', ik, rec.i, 0)
    put(text, 21, 0)
  else
    put(text, 20, redis.call('HINCRBY', ik, '_', -1))
    put(text, 21, own)
  end
  -- Comparisons, not math.max: max(-0, 0) would print as -0.
  local rt = (refunded and dt < 0) and -dt or 0
  local rr = (refunded and dr < 0) and -dr or 0
  local ot = (tracked and dt > 0) and dt or 0
  local orq = (tracked and dr > 0) and dr or 0
  local ex = expired and 1 or 0
  local key = lkey(id)
  redis.call('HSET', key, 'o', outcome, 'same', same, 'ex', ex, 'rt', rt, 'rr', rr, 'ot', ot, 'or', orq,
             'in', in_t, 'out', out_t, 'cached', cached_t, 'req', req)
  redis.call('PEXPIRE', key, CLOSED_TTL)
  redis.call('ZREM', K_LEXP, id)
  redis.call('SREM', ilkey(rec.i), id)
  -- While a lease is open its job id points to it alone.
  if rec.jid ~= '' then redis.call('DEL', jkey(rec.jid)) end
  local v = rec.raw
  return table.concat({id, v[1], v[2], v[3], v[4], v[5], v[6], v[7], outcome, same, ex, rt, rr, ot, orq,
                       in_t, out_t, cached_t, req, v[9]}, '\n')
end

-- Closes at most one batch of an instance's open leases at their estimate; true once none is left.
local function close_batch(inst, now)
  local key = ilkey(inst)
  for _, id in ipairs(redis.call('SRANDMEMBER', key, BATCH)) do
    local rec = open_lease(id)
    if rec then
      close_lease(id, rec, 3, 0, 0, 0, 0, now, true, limits_of(rec.m) or NO_LIMITS)
    else
      redis.call('SREM', key, id)
    end
  end
  return redis.call('SCARD', key) == 0
end

-- The last step of a removal, once the instance holds no open lease: its per-model fields go, and
-- N drops. Work per model, bounded by the configuration.
local function drop_instance(inst, now)
  for _, model in ipairs(redis.call('SMEMBERS', K_MODELS)) do
    for _, kind in ipairs(KINDS) do
      redis.call('HDEL', wkey(model, kind.name, math.floor(now / kind.size)), 'ot:' .. inst, 'or:' .. inst)
    end
    local ik = ikey(model)
    local c = tonumber(redis.call('HGET', ik, inst) or 0)
    if c > 0 then redis.call('HINCRBY', ik, '_', -c) end
    if redis.call('HEXISTS', ik, 'w:' .. inst) == 1 then redis.call('HINCRBY', ik, 'w', -1) end
    redis.call('HDEL', ik, inst, 'w:' .. inst)
  end
  redis.call('ZREM', K_INST, inst)
end

-- One step of removing inst (a stale one, a restart of the same id, a clean stop): marks it as
-- leaving (score 0: its heartbeats are refused from now on), closes one batch of its leases and,
-- when none is left, drops it. Returns true when it is gone. Capacity stays committed while leases
-- remain; N drops only at the end.
local function remove_step(inst, now, origin)
  if not redis.call('ZSCORE', K_INST, inst) then return true end
  redis.call('ZADD', K_INST, 'XX', 0, inst)
  local done = close_batch(inst, now)
  if done then drop_instance(inst, now) end
  publish(origin, done and 'gone' or 'reap', bump(), nil, all_states('', now), {}, done and {inst} or {})
  return done
end

local function stale(now, stale_ms)
  return redis.call('ZRANGEBYSCORE', K_INST, '-inf', now - stale_ms, 'LIMIT', 0, 1)[1]
end

local function expired_left(now)
  return #redis.call('ZRANGEBYSCORE', K_LEXP, '-inf', now, 'LIMIT', 0, 1) > 0
end

-- Frees at most one batch of leases whose expiry has passed, whoever holds them; returns their
-- closed records.
local function sweep(now)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEXP, '-inf', now, 'LIMIT', 0, BATCH)) do
    local rec = open_lease(id)
    if rec then
      out[#out + 1] = close_lease(id, rec, 3, 0, 0, 0, 0, now, true, limits_of(rec.m) or NO_LIMITS)
    else
      redis.call('ZREM', K_LEXP, id)
    end
  end
  return out
end
