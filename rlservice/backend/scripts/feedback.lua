-- What a provider said in its answer, passed on by the caller's Release (SPEC §11), applied to the
-- lease's model once the release's usage is settled. The provider counts the key for everyone who
-- uses it, so its word wins: a 429's retry-after pauses the model on every instance, and a
-- remaining below the ledger's own is usage the ledger never saw, charged to the current minute
-- window (a rolling model: taken from its bucket). fb: retry-after (ms), remaining tokens,
-- requests, input and output tokens ('' when not given), the longest pause, the pause of a 429
-- without retry-after, the tolerances in tokens, requests, input and output tokens.

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
    xt = gone(m, m.tpm, w.st + w.ot, fb[2], fb[8])
    xr = gone(m, m.rpm, w.sr + w.oq, fb[3], fb[9])
    if xt > 0 or xr > 0 then
      -- Settled, so every instance's pool shrinks by the gap / N.
      w.st, w.sr, w.xt, w.xr, w.tot = w.st + xt, w.sr + xr, w.xt + xt, w.xr + xr, true
      -- xm: the minute they belong to, which a rolling bucket's external usage needs.
      redis.call('HSET', w.key, 'xt', w.xt, 'xr', w.xr, 'xm', WM)
    end
    if m.kinds then m.kinds.charge(m, fb, gone) end
  end
  return (m.pu > NOW and m.pu or 0) .. '\n' .. xt .. '\n' .. xr
end
