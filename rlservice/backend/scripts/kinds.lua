-- Input and output tokens limited apart (SPEC §12: Anthropic's ITPM and OTPM): the body of the
-- function lib.lua's model() makes for a model with such limits (ledger.py puts this text there),
-- called with the model (m) and its 'roll' field (spec: 'ROLL ITPM OTPM CIN', 0 = not limited, CIN
-- 1 when cached tokens count as input). Made there and only then, the others pay nothing for it: a
-- function the script makes at its top costs every call. The model's minute window or bucket keeps,
-- beside its other counters and moved by the same rules, settled (si, so) and open (oi, oo) input
-- and output tokens, in total and per instance (si:I, so:I, oi:I, oo:I); a bucket keeps levels (li,
-- lo) instead of settled, written with its other levels. The window table holds them as si, so, oi,
-- oo and the calling instance's moi, moo, msi, mso. lib.lua calls the functions below through
-- m.kinds (and w.kinds, the same table).
local K = {}
local F_OI, F_OO, F_SI, F_SO = 'oi:' .. ME, 'oo:' .. ME, 'si:' .. ME, 'so:' .. ME

local function read_window(w)
  local v = redis.call('HMGET', w.key, 'si', 'so', 'oi', 'oo', F_OI, F_OO, F_SI, F_SO)
  w.si, w.so, w.oi, w.oo = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
  w.moi, w.moo, w.msi, w.mso = tonumber(v[5]) or 0, tonumber(v[6]) or 0, tonumber(v[7]) or 0, tonumber(v[8]) or 0
end

-- As lib.lua's bucket(): settled is what the level and the open estimates leave of the limit.
local function read_bucket(w, lim_i, lim_o)
  local v = redis.call('HMGET', w.key, 'oi', 'oo', F_OI, F_OO, 'li', 'lo', 'at')
  w.lim_i, w.lim_o, w.oi, w.oo = lim_i, lim_o, tonumber(v[1]) or 0, tonumber(v[2]) or 0
  w.si = lim_i - refill(lim_i, w.oi, v[5], v[7], MINUTE, 0) - w.oi
  w.so = lim_o - refill(lim_o, w.oo, v[6], v[7], MINUTE, 0) - w.oo
  w.moi, w.moo, w.msi, w.mso = tonumber(v[3]) or 0, tonumber(v[4]) or 0, 0, 0
end

-- lib.lua's fits() in the input and output dimensions.
function K.fits(m, n, est_i, est_o, borrow, contended, dim_fits)
  local a = m.wm
  return dim_fits(m.itpm, n, a.si, a.oi, a.moi, a.msi, tonumber(est_i) or 0, borrow, contended)
    and dim_fits(m.otpm, n, a.so, a.oo, a.moo, a.mso, tonumber(est_o) or 0, borrow, contended)
end

-- A grant's estimates, opened in the minute window and kept in its lease record (text: lib.lua's
-- open_text()), which becomes 'k' and ends with them.
function K.open(a, text, est_i, est_o)
  local i, o = tonumber(est_i) or 0, tonumber(est_o) or 0
  a.oi, a.oo, a.moi, a.moo = a.oi + i, a.oo + o, a.moi + i, a.moo + o
  return 'k' .. string.sub(text, 2) .. '\n' .. i .. '\n' .. o
end

local function settle_bucket(w, rec, est_i, est_o, act_i, act_o)
  -- Back what was not used, never above limit - open (settled >= 0: lib.lua's refill()).
  w.oi, w.oo = w.oi - est_i, w.oo - est_o
  w.si, w.so = math.max(w.si + act_i, 0), math.max(w.so + act_o, 0)
  if rec.i == ME then
    w.moi, w.moo = w.moi - est_i, w.moo - est_o
  else
    other(w.key, 'oi:' .. rec.i, -est_i)
    other(w.key, 'oo:' .. rec.i, -est_o)
  end
end

local function settle_window(w, rec, est_i, est_o, act_i, act_o)
  w.oi, w.oo, w.si, w.so = w.oi - est_i, w.oo - est_o, w.si + act_i, w.so + act_o
  if rec.i == ME then
    w.moi, w.moo, w.msi, w.mso = w.moi - est_i, w.moo - est_o, w.msi + act_i, w.mso + act_o
  else
    other(w.key, 'oi:' .. rec.i, -est_i)
    other(w.key, 'oo:' .. rec.i, -est_o)
    other(w.key, 'si:' .. rec.i, act_i)
    other(w.key, 'so:' .. rec.i, act_o)
  end
end

-- Usage in a window that has closed is never refunded; an overage goes to the current one.
local function settle_late(w, rec, est_i, est_o, act_i, act_o)
  local oi, oo = math.max(act_i - est_i, 0), math.max(act_o - est_o, 0)
  w.si, w.so = w.si + oi, w.so + oo
  if rec.i == ME then
    w.msi, w.mso = w.msi + oi, w.mso + oo
  else
    other(w.key, 'si:' .. rec.i, oi)
    other(w.key, 'so:' .. rec.i, oo)
  end
end

-- lib.lua's settle_in() for a closing lease's input and output tokens: actual usage for outcomes
-- 1, 2 and 4, the estimate for 3. Input tokens count the cached ones unless the model says not.
function K.settle(m, rec, outcome, in_t, out_t, cached_t)
  local w = m.wm
  -- A lease opened before the model limited them has none (lib.lua: find_open).
  local est_i, est_o = string.match(rec.parts or '0\n0', '^(%d+)\n(%d+)$')
  est_i, est_o = tonumber(est_i), tonumber(est_o)
  local act_i, act_o = est_i, est_o
  if outcome ~= '3' then act_i, act_o = tonumber(in_t) + (m.cin and tonumber(cached_t) or 0), tonumber(out_t) end
  if w.rolling then
    settle_bucket(w, rec, est_i, est_o, act_i, act_o)
  elseif w.win == rec.mw then
    settle_window(w, rec, est_i, est_o, act_i, act_o)
  else
    settle_late(w, rec, est_i, est_o, act_i, act_o)
  end
  w.tot, w.mine = true, w.mine or rec.i == ME
end

-- The provider's remaining input and output tokens (feedback.lua) correct their own dimensions.
-- Their gaps are settled but not counted apart: the external usage reported is the tokens
-- dimension's.
function K.charge(m, fb, gone)
  local w = m.wm
  local xi = gone(m, m.itpm, w.si + w.oi, fb[4], fb[10])
  local xo = gone(m, m.otpm, w.so + w.oo, fb[5], fb[11])
  if xi > 0 or xo > 0 then w.si, w.so, w.tot = w.si + xi, w.so + xo, true end
end

function K.flush(w)
  if w.rolling then
    local li, lo = w.lim_i - w.si - w.oi, w.lim_o - w.so - w.oo
    if w.mine then
      redis.call('HSET', w.key, 'oi', w.oi, 'oo', w.oo, 'li', li, 'lo', lo, F_OI, w.moi, F_OO, w.moo)
    else
      redis.call('HSET', w.key, 'oi', w.oi, 'oo', w.oo, 'li', li, 'lo', lo)
    end
  elseif w.mine then
    redis.call('HSET', w.key, 'si', w.si, 'so', w.so, 'oi', w.oi, 'oo', w.oo, F_SI, w.msi, F_SO, w.mso, F_OI,
               w.moi, F_OO, w.moo)
  else
    redis.call('HSET', w.key, 'si', w.si, 'so', w.so, 'oi', w.oi, 'oo', w.oo)
  end
end

-- The state's last 8 integers (lib.lua: pack); settled rounded up as there.
function K.pack(w)
  local ceil = math.ceil
  return struct.pack('>i8i8i8i8i8i8i8i8', ceil(w.si), ceil(w.so), w.oi, w.oo, w.moi, w.moo, w.msi, w.mso)
end

-- A copy of the window's input and output counters as inst sees them (cold.lua: pack_for), in
-- view, the copy of its other counters.
function K.view(view, w, inst)
  local v = inst == '' and {}
    or redis.call('HMGET', w.key, 'oi:' .. inst, 'oo:' .. inst, 'si:' .. inst, 'so:' .. inst)
  view.kinds, view.si, view.so, view.oi, view.oo = K, w.si, w.so, w.oi, w.oo
  view.moi, view.moo = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  view.msi, view.mso = tonumber(v[3]) or 0, tonumber(v[4]) or 0
  return view
end

-- The model's limits and its minute window's counters.
local itpm, otpm, cin = string.match(spec, '^%d (%d+) (%d+) (%d)$')
m.itpm, m.otpm, m.cin, m.kinds, m.wm.kinds = tonumber(itpm), tonumber(otpm), cin == '1', K, K
if m.roll then read_bucket(m.wm, m.itpm, m.otpm) else read_window(m.wm) end
