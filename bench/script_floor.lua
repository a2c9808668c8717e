-- Not the ledger: the floor under any ledger script, for bench/script_cost.py. It keeps only what
-- the guarantee needs in Redis for one model with a minute limit (settled and open totals and the
-- calling instance's own, in flight) and a job-id claim per lease; no lease records, no expiry
-- index, no day window, no events, no functions made per call. Operations: 'a', model, job id,
-- lease id, tokens, requests (an Acquire) | 'r', model, job id, lease id, tokens, requests, actual
-- tokens, actual requests (a Release the caller vouches for). Keys as the ledger's.
local P, ME = KEYS[1], ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local WM = math.floor(NOW / 60000)
if not redis.call('ZSCORE', P .. ':instances', ME) then return {'unregistered'} end
local N = redis.call('ZCARD', P .. ':instances')
local JOBS = P .. ':jobs'
local MS, out, i = {}, {}, 2
while i <= #ARGV do
  local op, name = ARGV[i], ARGV[i + 1]
  local m = MS[name]
  if not m then
    local ik, wk = P .. ':model:' .. name, P .. ':w:' .. name .. ':m:' .. WM
    local v = redis.call('HMGET', ik, 'tpm', 'rpm', '_', ME)
    local w = redis.call('HMGET', wk, 'st', 'sr', 'ot', 'or', 'ot:' .. ME, 'or:' .. ME)
    m = {ik = ik, wk = wk, tpm = tonumber(v[1]), rpm = tonumber(v[2]), fl = tonumber(v[3]) or 0,
         own = tonumber(v[4]) or 0, st = tonumber(w[1]) or 0, sr = tonumber(w[2]) or 0, ot = tonumber(w[3]) or 0,
         oq = tonumber(w[4]) or 0, mot = tonumber(w[5]) or 0, moq = tonumber(w[6]) or 0}
    MS[name] = m
  end
  local jid, lid, e, r = ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  if op == 'a' then
    if e <= m.tpm - m.st - m.ot and r <= m.rpm - m.sr - m.oq and m.mot + e <= math.floor((m.tpm - m.st) / N)
      and redis.call('HSETNX', JOBS, jid, lid) == 1 then
      m.ot, m.oq, m.mot, m.moq, m.fl, m.own = m.ot + e, m.oq + r, m.mot + e, m.moq + r, m.fl + 1, m.own + 1
      out[#out + 1] = 'granted'
    else
      out[#out + 1] = 'denied'
    end
    i = i + 6
  else
    if redis.call('HGET', JOBS, jid) == lid then
      redis.call('HDEL', JOBS, jid)
      local at, ar = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
      m.ot, m.oq, m.st, m.sr, m.mot, m.moq = m.ot - e, m.oq - r, m.st + at, m.sr + ar, m.mot - e, m.moq - r
      m.fl, m.own = m.fl - 1, m.own - 1
      out[#out + 1] = 'released'
    else
      out[#out + 1] = 'unknown'
    end
    i = i + 8
  end
end
local res = {redis.call('INCR', P .. ':seq'), NOW}
for name, m in pairs(MS) do
  redis.call('HSET', m.ik, '_', m.fl, ME, m.own)
  redis.call('HSET', m.wk, 'st', m.st, 'sr', m.sr, 'ot', m.ot, 'or', m.oq, 'ot:' .. ME, m.mot, 'or:' .. ME, m.moq)
  res[#res + 1] = name
  res[#res + 1] = struct.pack('>i8i8i8i8i8i8i8i8i8', WM, N, m.st, m.sr, m.ot, m.oq, m.mot, m.moq, m.fl)
end
for _, r in ipairs(out) do res[#res + 1] = r end
return res
