-- The ledger's hot path: what Acquire and Release need. The op files, cold.lua (everything else,
-- made only when a call needs it) and main.lua follow this text in one script (Redis scripts cannot
-- include each other). KEYS[1] is the key prefix with its hash tag ("{rl}"): every key below
-- shares it, so all keys live in one cluster slot. ARGV[1] is the calling instance.
--
-- Redis runs this whole text on every call, on the one thread every instance shares, so the script
-- avoids what costs most there: a redis.call per counter (counters are read once a call into
-- tables, changed in Lua and written back once: safe, since a script runs alone), closures and
-- tables made on every call, and Lua turning numbers into text (states go back packed with struct).
local P = KEYS[1]
local ME = ARGV[1]
local K_INST = P .. ':instances'  -- ZSET instance -> last heartbeat (ms); 0 while being removed
local K_MODELS = P .. ':models'   -- SET of model names
local K_SEQ = P .. ':seq'
local K_JOBS = P .. ':jobs'       -- HASH job id -> its open lease
local K_EVENTS = P .. ':events'
local MINUTE = 60000
local DAY = 86400000
-- A closed lease is kept this long (ms, as text) so that a repeated Release gets the first answer.
local CLOSED_TTL = '3600000'
-- A model's state, 28 signed 64-bit integers (see pack()), 8 more for a model that limits input or
-- output tokens apart.
local STATE = '>i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8'
local NOW, WM, WD
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  WM, WD = math.floor(NOW / MINUTE), math.floor(NOW / DAY)
end
local OPS = {}
-- Applies what a provider said in a Release (feedback.lua).
local apply_feedback

-- Per model: its limits (tpm, rpm, tpd, rpd, conc; 0 = not limited) and window mode (roll, with the
-- input and output token limits of a model that has them: kinds.lua), in flight in total ('_') and
-- per instance (I), instances with waiters ('w', 'w:I'), the Redis time until which a provider's 429
-- pauses it (pu). Per model, window kind
-- (m, d) and window: settled (st, sr) and open (ot, or) totals, per instance open (ot:I, or:I) and
-- settled (st:I, sr:I), and the part of settled that the provider reported and no lease accounts
-- for (external: xt, xr). A lease is one string under lease:ID; each instance's open leases by
-- expiry are in lx:I.
local function lkey(id) return P .. ':lease:' .. id end
local function xkey(inst) return P .. ':lx:' .. inst end

-- ----- counters: read once a call, written back once ---------------------------------------------

-- Models as this call has loaded them (false: nobody registered it), the live instance count and
-- whether the calling instance is registered.
local MS, N, REG = {}, nil, nil
-- The calling instance's field names, made once a call when needed.
local F_OT, F_OR, F_ST, F_SR, F_W

local function live()
  if not N then N = redis.call('ZCARD', K_INST) end
  return N
end

-- Whether the calling instance may act: registered, and not being removed.
local function registered()
  if REG == nil then
    local score = redis.call('ZSCORE', K_INST, ME)
    REG = score ~= false and tonumber(score) ~= 0
  end
  return REG
end

-- A window's counters: totals (st, sr settled, ot, oq open) and the calling instance's (mst, msr,
-- mot, moq); `at` is the expiry to give a window this call creates (kept one window past its end);
-- tot and mine say whether the totals and the instance's own counters changed.
local function window(name, kind, win, size)
  local key = P .. ':w:' .. name .. ':' .. kind .. ':' .. win
  local v = redis.call('HMGET', key, 'st', 'sr', 'ot', 'or', F_OT, F_OR, F_ST, F_SR, 'xt', 'xr')
  return {key = key, win = win, st = tonumber(v[1]) or 0, sr = tonumber(v[2]) or 0, ot = tonumber(v[3]) or 0,
          oq = tonumber(v[4]) or 0, mot = tonumber(v[5]) or 0, moq = tonumber(v[6]) or 0, mst = tonumber(v[7]) or 0,
          msr = tonumber(v[8]) or 0, xt = tonumber(v[9]) or 0, xr = tonumber(v[10]) or 0,
          at = not v[1] and not v[3] and (win + 2) * size, tot = false, mine = false}
end
local NO_WINDOW = {st = 0, sr = 0, ot = 0, oq = 0, mot = 0, moq = 0, mst = 0, msr = 0, xt = 0, xr = 0, vt = 0, vr = 0}

-- A rolling model's bucket (SPEC §12) for one kind of limit (m: per minute, d: per day): a level
-- per dimension, refilled continuously at limit / period on Redis time up to the limit, kept with
-- the time it was last written (one time for both dimensions: they are always written together).
-- It is handed to the code above as a window that never closes, whose settled usage is what the
-- level and the open estimates leave of the limit: limit - settled = level + open, the quantity
-- the pools and the global check use in both modes, and every grant, release and external charge
-- moves it exactly as it moves a fixed window's counters. Own settled usage has no window to live
-- in here, so it stays 0. External usage counts the current minute (xm) only.
-- The level refills up to limit - open, not up to the limit (settled never below 0): an open
-- estimate has left the ledger's bucket at its grant but reaches the provider's only when the call
-- arrives there, and a provider's bucket that is full meanwhile loses the refill that the ledger
-- would count (docs/decisions.md, "A rolling bucket refills up to limit - open").
-- A minute bucket refills slower by the rate an outside consumer of the key is estimated to use
-- (vt, vr: tokens and requests a period, which feedback.lua learns; out here), so that the ledger
-- foresees the usage the provider's next answers will show instead of only following it.
local function refill(limit, open, level, at, period, out)
  if limit <= 0 then return 0 end
  if not level then return limit - open end
  return math.min(limit - open, tonumber(level) + (NOW - tonumber(at)) * (limit - out) / period)
end

local function bucket(name, kind, lim_t, lim_r, period)
  local key = P .. ':w:' .. name .. ':' .. kind .. ':r'
  local v = redis.call('HMGET', key, 'ot', 'or', F_OT, F_OR, 'lt', 'lr', 'at', 'xt', 'xr', 'xm', 'vt', 'vr', 'va')
  local ot, oq = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local vt, vr = tonumber(v[11]) or 0, tonumber(v[12]) or 0
  local minute = tonumber(v[10]) == WM
  return {key = key, rolling = true, lim_t = lim_t, lim_r = lim_r, win = 0, ot = ot, oq = oq,
          st = lim_t - refill(lim_t, ot, v[5], v[7], period, vt) - ot,
          sr = lim_r - refill(lim_r, oq, v[6], v[7], period, vr) - oq,
          mot = tonumber(v[3]) or 0, moq = tonumber(v[4]) or 0, mst = 0, msr = 0,
          xt = minute and tonumber(v[8]) or 0, xr = minute and tonumber(v[9]) or 0, vt = vt, vr = vr,
          va = tonumber(v[13]) or NOW, at = false, tot = false, mine = false}
end

-- A per-instance counter of another instance (a lease closed for its owner): changed at once, since
-- the tables hold only the calling instance's.
local function other(key, field, by)
  if by ~= 0 then return redis.call('HINCRBY', key, field, by) end
end

-- A model as the calling instance sees it: limits, in flight (fl in total, own), instances with
-- waiters (w) and whether it is one (ow), its current minute (wm) and day (wd) windows where it has
-- such limits; false for a model nobody registered. A model that limits input or output tokens
-- apart also has kinds (and its minute window too): the functions that move their counters, which
-- attach() makes (its body is kinds.lua); nil for the others, which never pay for them.
local function model(name)
  local m = MS[name]
  if m ~= nil then return m end
  if not F_W then
    F_OT, F_OR, F_ST, F_SR, F_W = 'ot:' .. ME, 'or:' .. ME, 'st:' .. ME, 'sr:' .. ME, 'w:' .. ME
  end
  local ik = P .. ':model:' .. name
  local v = redis.call('HMGET', ik, 'tpm', 'rpm', 'tpd', 'rpd', 'conc', '_', ME, 'w', F_W, 'pu', 'roll')
  if not v[1] then
    MS[name] = false
    return false
  end
  m = {name = name, ik = ik, tpm = tonumber(v[1]), rpm = tonumber(v[2]), tpd = tonumber(v[3]), rpd = tonumber(v[4]),
       conc = tonumber(v[5]), fl = tonumber(v[6]) or 0, own = tonumber(v[7]) or 0, w = tonumber(v[8]) or 0,
       ow = v[9] and 1 or 0, pu = tonumber(v[10]) or 0, roll = v[11] == '1', dirty = false, mine = false, wm = false,
       wd = false}
  -- The window mode of a model that limits input or output tokens apart is followed by those limits
  -- (register.lua), so that the others read no more than before.
  local kinds = v[11] and #v[11] > 1
  if kinds then m.roll = string.sub(v[11], 1, 1) == '1' end
  local minute = m.tpm > 0 or m.rpm > 0 or kinds
  if m.roll then
    if minute then m.wm = bucket(name, 'm', m.tpm, m.rpm, MINUTE) end
    if m.tpd > 0 or m.rpd > 0 then m.wd = bucket(name, 'd', m.tpd, m.rpd, DAY) end
  else
    if minute then m.wm = window(name, 'm', WM, MINUTE) end
    if m.tpd > 0 or m.rpd > 0 then m.wd = window(name, 'd', WD, DAY) end
  end
  if kinds then
    -- Made here, only for such a model; ledger.py puts kinds.lua in its body.
    local function attach(m, spec)
      --[[kinds.lua]]
    end
    attach(m, v[11])
  end
  MS[name] = m
  return m
end

local function flush_window(w)
  if not w.tot then return end
  if w.kinds then w.kinds.flush(w) end
  if w.rolling then
    -- Levels from the counters: limit - settled - open.
    local lt, lr = w.lim_t - w.st - w.ot, w.lim_r - w.sr - w.oq
    if w.mine then
      redis.call('HSET', w.key, 'ot', w.ot, 'or', w.oq, 'lt', lt, 'lr', lr, 'at', NOW, F_OT, w.mot, F_OR, w.moq)
    else
      redis.call('HSET', w.key, 'ot', w.ot, 'or', w.oq, 'lt', lt, 'lr', lr, 'at', NOW)
    end
  elseif w.mine then
    redis.call('HSET', w.key, 'st', w.st, 'sr', w.sr, 'ot', w.ot, 'or', w.oq, F_ST, w.mst, F_SR, w.msr, F_OT, w.mot,
               F_OR, w.moq)
  else
    redis.call('HSET', w.key, 'st', w.st, 'sr', w.sr, 'ot', w.ot, 'or', w.oq)
  end
  if w.at then
    redis.call('PEXPIREAT', w.key, w.at)
    w.at = false
  end
  w.tot, w.mine = false, false
end

-- Writes back what changed: at the end of a call, and before code that works on the counters
-- without these tables.
local function flush()
  for _, m in pairs(MS) do
    if m then
      if m.mine then
        redis.call('HSET', m.ik, '_', m.fl, ME, m.own)
      elseif m.dirty then
        redis.call('HSET', m.ik, '_', m.fl)
      end
      m.dirty, m.mine = false, false
      if m.wm then flush_window(m.wm) end
      if m.wd then flush_window(m.wd) end
    end
  end
end

-- A model's state as the calling instance sees it, packed:
--  1 minute window, 2 day window (both 0 for a rolling model: its usage never changes window),
--  3 live instances N,
--  4..11  minute: settled_t, settled_r, open_t, open_r, own_open_t, own_open_r, own_settled_t, own_settled_r
--  12..19 day:    the same
--  20 in flight in total, 21 own in flight, 22 instances with waiters, 23 own waiters (0/1)
--  24 paused until (Redis ms, 0 when not paused), 25..26 minute: external tokens, requests
--  27..28 a rolling minute bucket's outside rate: tokens, requests a minute (feedback.lua), rounded up
--  29..36 only for a model that limits input or output tokens apart (kinds.lua), the minute's input
--         and output tokens: settled_i, settled_o, open_i, open_o, own_open_i, own_open_o,
--         own_settled_i, own_settled_o
-- A rolling bucket's settled usage is rounded up, so that the level reported is the whole tokens
-- the bucket holds.
local function pack(m)
  local a, b = m.wm or NO_WINDOW, m.wd or NO_WINDOW
  local ceil = math.ceil
  local s = struct.pack(STATE, m.roll and 0 or WM, m.roll and 0 or WD, live(), ceil(a.st), ceil(a.sr), a.ot, a.oq,
                        a.mot, a.moq, a.mst, a.msr, ceil(b.st), ceil(b.sr), b.ot, b.oq, b.mot, b.moq, b.mst, b.msr, m.fl,
                        m.own, m.w, m.ow, m.pu > NOW and m.pu or 0, a.xt, a.xr, ceil(a.vt or 0), ceil(a.vr or 0))
  if a.kinds then return s .. a.kinds.pack(a) end
  return s
end

-- ----- admission --------------------------------------------------------------------------------

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
local function fits(m, est_t, est_r, lend, est_i, est_o)
  -- A provider's 429 holds the model on every instance (feedback.lua).
  if m.pu > NOW then return false end
  local n = math.max(live(), 1)
  local borrow, contended = lend and m.ow == 1 and m.w == 1, m.w - m.ow > 0
  local a, b = m.wm, m.wd
  if a and not (dim_fits(m.tpm, n, a.st, a.ot, a.mot, a.mst, est_t, borrow, contended)
                and dim_fits(m.rpm, n, a.sr, a.oq, a.moq, a.msr, est_r, borrow, contended)) then
    return false
  end
  if m.kinds and not m.kinds.fits(m, n, est_i, est_o, borrow, contended, dim_fits) then return false end
  if b and not (dim_fits(m.tpd, n, b.st, b.ot, b.mot, b.mst, est_t, borrow, contended)
                and dim_fits(m.rpd, n, b.sr, b.oq, b.moq, b.msr, est_r, borrow, contended)) then
    return false
  end
  if m.conc > 0 then
    if m.fl >= m.conc then return false end
    if not borrow and m.own >= math.floor(m.conc / n) then return false end
  end
  return true
end

-- ----- leases -----------------------------------------------------------------------------------

-- A lease is one string, its fields one a line. Open: 'o', then the body: owner, model, job type,
-- minute and day windows, estimated tokens and requests, expiry, job id; for a model that limits
-- input or output tokens apart, 'k' instead of 'o' and, after the body, its estimated input and
-- output tokens (kinds.lua). An open lease has no TTL of its own, since its entry in its owner's
-- expiry index always closes it. Closed: 'c', the body, then outcome, same window, expired,
-- refunded, tracked (flags 0/1), the actual usage as reported: input, output, cached tokens,
-- requests, the provider's word: the pause the model is under (0 for none) and the external tokens
-- and requests the release charged, when it closed (Redis ms), and the estimated input and output
-- tokens (0 for a model that does not limit them): with the expiry, the record from which a
-- lease's whole life can be replayed. It is kept a while and answers later Releases; wire.py reads
-- the same lines.
local OPEN = '^o\n(([^\n]*)\n([^\n]*)\n[^\n]*\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*))$'
local WIN_TEXT  -- the two windows as a lease record holds them, made once a call when needed

local function open_text(inst, name, job_type, t, r, x, jid)
  if not WIN_TEXT then WIN_TEXT = WM .. '\n' .. WD end
  return 'o\n' .. inst .. '\n' .. name .. '\n' .. job_type .. '\n' .. WIN_TEXT .. '\n' .. t .. '\n' .. r .. '\n' .. x
    .. '\n' .. jid
end

-- An open lease's record, or else the reply for a lease that is not open: its closed record, or
-- unknown.
local function find_open(id)
  local v = redis.call('GET', lkey(id))
  if not v then return nil, 'unknown' end
  local body, i, m, mw, dw, t, r, x, jid = string.match(v, OPEN)
  local parts
  if not body then
    -- A lease of a model that limits input or output tokens apart: its two estimates come last.
    body, i, m, mw, dw, t, r, x, jid, parts = string.match(v,
      '^k\n(([^\n]*)\n([^\n]*)\n[^\n]*\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*))\n([^\n]*\n[^\n]*)$')
    if not body then return nil, 'closed\n' .. id .. '\n' .. string.sub(v, 3) end
  end
  return {id = id, body = body, i = i, m = m, mw = tonumber(mw), dw = tonumber(dw), t = tonumber(t), r = tonumber(r),
          x = tonumber(x), xs = x, jid = jid, parts = parts}
end

-- Expiry times as text by TTL text, made once a call.
local EXP = {}
local function expiry(ttl)
  local x = EXP[ttl]
  if not x then
    x = tostring(NOW + tonumber(ttl))
    EXP[ttl] = x
  end
  return x
end

-- Moves a closing lease's usage in one window kind (w: the model's current window of the kind, or
-- false when the model has no such limit); returns same (the lease's window is the current one),
-- refunded.
local function settle_in(w, lease_win, rec, act_t, act_r, dt, dr)
  local mine = rec.i == ME
  if w.rolling then
    -- The bucket gets back what was not used, never above limit - open (settled >= 0: refill()).
    w.ot, w.oq = w.ot - rec.t, w.oq - rec.r
    w.st, w.sr = math.max(w.st + act_t, 0), math.max(w.sr + act_r, 0)
    if mine then
      w.mot, w.moq, w.mine = w.mot - rec.t, w.moq - rec.r, true
    else
      other(w.key, 'ot:' .. rec.i, -rec.t)
      other(w.key, 'or:' .. rec.i, -rec.r)
    end
    w.tot = true
    return true, true
  end
  if w.win == lease_win then
    w.ot, w.oq, w.st, w.sr = w.ot - rec.t, w.oq - rec.r, w.st + act_t, w.sr + act_r
    if mine then
      w.mot, w.moq, w.mst, w.msr, w.mine = w.mot - rec.t, w.moq - rec.r, w.mst + act_t, w.msr + act_r, true
    else
      other(w.key, 'ot:' .. rec.i, -rec.t)
      other(w.key, 'or:' .. rec.i, -rec.r)
      other(w.key, 'st:' .. rec.i, act_t)
      other(w.key, 'sr:' .. rec.i, act_r)
    end
    w.tot = true
    return true, true
  end
  -- Usage in a window that has closed is never refunded; an overage goes to the current one.
  local ot, oq = math.max(dt, 0), math.max(dr, 0)
  if ot > 0 or oq > 0 then
    w.st, w.sr = w.st + ot, w.sr + oq
    if mine then
      w.mst, w.msr, w.mine = w.mst + ot, w.msr + oq, true
    else
      other(w.key, 'st:' .. rec.i, ot)
      other(w.key, 'sr:' .. rec.i, oq)
    end
    w.tot = true
  end
  return false, false
end

-- Closes an open lease: its estimate leaves the open totals of its windows and its usage is
-- settled there (actual usage for outcomes 1, 2 and 4, the estimate for 3: unknown usage, expiry,
-- removal). Frees the concurrency slot. outcome and the usage are text as given; feedback, when the
-- caller passed on what the provider said, is applied once the usage is settled (feedback.lua).
-- Returns the closed record's lines after the lease id.
local function close_lease(rec, outcome, in_t, out_t, cached_t, req, expired, feedback)
  local m = model(rec.m)
  local act_t, act_r = rec.t, rec.r
  if outcome ~= '3' then act_t, act_r = tonumber(in_t) + tonumber(out_t) + tonumber(cached_t), tonumber(req) end
  local dt, dr = act_t - rec.t, act_r - rec.r
  local same, refunded, tracked = true, false, false
  if m then
    if m.wm then
      local s, r = settle_in(m.wm, rec.mw, rec, act_t, act_r, dt, dr)
      same, refunded, tracked = s, r, true
      if m.kinds then m.kinds.settle(m, rec, outcome, in_t, out_t, cached_t) end
    end
    if m.wd then
      local s, r = settle_in(m.wd, rec.dw, rec, act_t, act_r, dt, dr)
      same, refunded, tracked = same and s, refunded or r, true
    end
    if rec.i ~= ME then
      local own = redis.call('HINCRBY', m.ik, rec.i, -1)
      if own < 0 then redis.call('HSET', m.ik, rec.i, 0) else m.fl, m.dirty = m.fl - 1, true end
    elseif m.own > 0 then
      m.own, m.fl, m.dirty, m.mine = m.own - 1, m.fl - 1, true, true
    end
  end
  local fb = '0\n0\n0'
  if m then
    if feedback then
      fb = apply_feedback(m, outcome, feedback)
    elseif m.pu > NOW then
      fb = m.pu .. '\n0\n0'
    end
  end
  local closed = rec.body .. '\n' .. outcome .. (same and '\n1\n' or '\n0\n') .. (expired and '1\n' or '0\n')
    .. (refunded and '1\n' or '0\n') .. (tracked and '1\n' or '0\n') .. in_t .. '\n' .. out_t .. '\n' .. cached_t
    .. '\n' .. req .. '\n' .. fb .. '\n' .. NOW .. '\n' .. (rec.parts or '0\n0')
  redis.call('SET', lkey(rec.id), 'c\n' .. closed, 'PX', CLOSED_TTL)
  redis.call('ZREM', xkey(rec.i), rec.id)
  -- While a lease is open its job id points to it alone.
  if rec.jid ~= '' then redis.call('HDEL', K_JOBS, rec.jid) end
  return rec.id .. '\n' .. closed
end

-- ----- what a call's reply and events carry ----------------------------------------------------

local function bump() return redis.call('INCR', K_SEQ) end

-- Events are text, one field a line: origin, kind, seq, owner ('-' for none), the states' models (a
-- count, then for each its name and '1' when its state has the 8 integers of input and output
-- tokens, else '0'), the closed leases (a count, then 25 lines each: the id and the closed record)
-- and the instances gone (a count, then one a line); after the last line's break, the states,
-- packed, in the models' order. The origin is the instance whose call caused the event ('-'
-- for none): it can skip the event unread, having the same news in its reply.
local function publish(origin, kind, q, owner, names, packed, closed, gone)
  local out = {origin, kind, q, owner or '-', #names}
  for i, v in ipairs(names) do
    out[#out + 1] = v
    -- Longer than 28 integers (224 bytes): with input and output tokens.
    out[#out + 1] = #packed[i] > 224 and '1' or '0'
  end
  out[#out + 1] = #closed
  for _, c in ipairs(closed) do out[#out + 1] = c end
  out[#out + 1] = #gone
  for _, g in ipairs(gone) do out[#out + 1] = g end
  redis.call('PUBLISH', K_EVENTS, table.concat(out, '\n') .. '\n' .. table.concat(packed))
end

-- Models whose state the reply carries, in order; those whose change the other instances must hear
-- of (usage settled, waiters recorded); whether anything changed; leases of other instances closed
-- by this call (a Release sent to the wrong instance), whose owners hear of them at once.
local TOUCHED, TOUCHED_SET, NEWS, CHANGED, FOREIGN = {}, {}, {}, false, nil

local function touch(name, news)
  if not TOUCHED_SET[name] then
    TOUCHED_SET[name] = true
    TOUCHED[#TOUCHED + 1] = name
  end
  if news then NEWS[name] = true end
end

local function closed_here(rec, text)
  CHANGED = true
  touch(rec.m, true)
  if rec.i ~= ME then
    FOREIGN = FOREIGN or {}
    FOREIGN[#FOREIGN + 1] = {rec, text}
  end
end
