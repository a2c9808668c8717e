-- What a provider said in its answer, passed on by the caller's Release (SPEC §11), applied to the
-- lease's model once the release's usage is settled. The provider counts the key for everyone who
-- uses it, so its word wins: a 429's retry-after pauses the model on every instance, and a
-- remaining below the ledger's own is usage the ledger never saw, charged to the current minute
-- window (a rolling model: taken from its bucket). fb: retry-after (ms), remaining tokens,
-- requests, input and output tokens ('' when not given), the longest pause, the pause of a 429
-- without retry-after, the tolerances in tokens, requests, input and output tokens, the time
-- constant (ms) of a rolling model's outside rate (0: not learnt).

-- The part of the ledger's remaining (limit - committed) the provider says is gone; 0 if none is. A
-- fixed window charges a gap only beyond the tolerance, which absorbs the provider's lag. A rolling
-- bucket charges any gap plus the tolerance: the ledger then stays that far below the provider's
-- level, a reserve that costs nothing at saturation, where a gap left uncharged let every grant
-- meet a provider holding less than the ledger (docs/decisions.md, "A rolling bucket keeps a
-- reserve below the provider's remaining"). A provider that says more is left changes nothing.
local function gone(m, limit, committed, remaining, tolerance)
  if limit <= 0 or remaining == '' then return 0 end
  -- Whole tokens: a rolling bucket's level is fractional.
  local gap = math.floor(limit - committed - tonumber(remaining))
  if m.roll then
    if gap > 0 then return gap + tonumber(tolerance) end
  elseif gap > tonumber(tolerance) then
    return gap
  end
  return 0
end

-- A rolling minute bucket also learns the rate at which someone else uses the key, and refills that
-- much slower (lib.lua: refill()): the headers describe the key as it was when the call arrived, so
-- a charge only follows an outside consumer, a rate foresees it. Each correction moves the rate by
-- correction / (tau + the time since the model's last answer), an integrator that settles where
-- the corrections stop, and that reads a gap after a long silence as spread over it. A provider
-- holding more than twice the tolerance above the ledger's level gives the bucket back what the
-- rate took since the last answer (never more: the bucket then holds no more than it would without
-- a rate) and slows the rate as much; within that band nothing moves, so the usage in flight, which
-- the provider has not yet seen, does not wear the rate down. The rate stays within half the
-- limit: one burst cannot stop the bucket (docs/decisions.md, "A rolling bucket learns an outside
-- consumer's rate"). Returns the tokens (or requests) to take from the bucket, negative to give
-- back, and the rate after.
local function learn(limit, committed, remaining, tolerance, rate, since, tau)
  if limit <= 0 or remaining == '' then return 0, rate end
  local gap, tol = math.floor(limit - committed - tonumber(remaining)), tonumber(tolerance)
  local charge = 0
  if gap > 0 then
    charge = gap + tol
  elseif gap < -2 * tol and rate > 0 then
    charge = -math.min(-gap - tol, math.floor(rate * (NOW - since) / MINUTE))
  end
  if tau > 0 and charge ~= 0 then
    rate = math.min(limit / 2, math.max(0, rate + charge * MINUTE / (tau + NOW - since)))
  end
  return charge, rate
end

-- A rolling minute bucket's correction: the external tokens and requests charged (0 for a give-back).
local function follow(m, w, fb)
  if fb[2] == '' and fb[3] == '' then return 0, 0 end
  local tau = tonumber(fb[12])
  local xt, vt = learn(m.tpm, w.st + w.ot, fb[2], fb[8], w.vt, w.va, tau)
  local xr, vr = learn(m.rpm, w.sr + w.oq, fb[3], fb[9], w.vr, w.va, tau)
  -- Settled never below 0: the level never above limit - open.
  xt, xr = math.max(xt, -w.st), math.max(xr, -w.sr)
  -- The level is written at NOW under the old rate, which the new one follows from then on.
  if xt ~= 0 or xr ~= 0 or vt ~= w.vt or vr ~= w.vr then w.st, w.sr, w.tot = w.st + xt, w.sr + xr, true end
  w.vt, w.vr, w.va = vt, vr, NOW
  redis.call('HSET', w.key, 'vt', vt, 'vr', vr, 'va', NOW)
  return math.max(xt, 0), math.max(xr, 0)
end

-- Returns the closed record's last lines: the pause the model is under, the external tokens and
-- requests this release charged.
apply_feedback = function(m, outcome, fb)
  local retry = tonumber(fb[1])
  if retry == 0 and outcome == '4' then retry = tonumber(fb[7]) end
  if retry > 0 then
    -- A pause only ever extends.
    local till = NOW + math.min(retry, tonumber(fb[6]))
    if till > m.pu then
      m.pu = till
      redis.call('HSET', m.ik, 'pu', till)
    end
  end
  local xt, xr, w = 0, 0, m.wm
  if w then
    if m.roll then
      xt, xr = follow(m, w, fb)
    else
      xt = gone(m, m.tpm, w.st + w.ot, fb[2], fb[8])
      xr = gone(m, m.rpm, w.sr + w.oq, fb[3], fb[9])
      -- Settled, so every instance's pool shrinks by the gap / N.
      if xt > 0 or xr > 0 then w.st, w.sr, w.tot = w.st + xt, w.sr + xr, true end
    end
    if xt > 0 or xr > 0 then
      w.xt, w.xr = w.xt + xt, w.xr + xr
      -- xm: the minute they belong to, which a rolling bucket's external usage needs.
      redis.call('HSET', w.key, 'xt', w.xt, 'xr', w.xr, 'xm', WM)
    end
    if m.kinds then m.kinds.charge(m, fb, gone) end
  end
  return (m.pu > NOW and m.pu or 0) .. '\n' .. xt .. '\n' .. xr
end
