-- ARGV holds the calling instance, then one or more operations, each as NAME, ARG_COUNT, ARGS...:
-- concurrent calls of one instance share a script call and are applied in order, each answered on
-- its own. The reply is flat: seq, now, a count K, K pairs of model and packed state (the calling
-- instance's, after the whole call), then one text per operation, its fields one a line.
local COLD, FOREIGN_NEWS
local replies, i = {}, 2
while i <= #ARGV do
  local name, n = ARGV[i], tonumber(ARGV[i + 1])
  local op = OPS[name]
  if not op then
    if not COLD then COLD, FOREIGN_NEWS = cold_ops() end
    op = COLD[name]
  end
  replies[#replies + 1] = op(unpack(ARGV, i + 2, i + 1 + n))
  i = i + 2 + n
end
flush()
if FOREIGN then
  if not COLD then COLD, FOREIGN_NEWS = cold_ops() end
  FOREIGN_NEWS(FOREIGN)
end
local q = CHANGED and bump() or tonumber(redis.call('GET', K_SEQ) or 0)
local out, news, packed = {q, NOW, 0}, {}, {}
for _, name in ipairs(TOUCHED) do
  local m = model(name)
  if m then
    local s = pack(m)
    out[#out + 1] = name
    out[#out + 1] = s
    out[3] = out[3] + 1
    if NEWS[name] then
      news[#news + 1] = name
      packed[#packed + 1] = s
    end
  end
end
-- One event a call for the other instances, whatever it settled; a lone instance has no one to tell.
if #news > 0 and live() > 1 then publish(ME, 'change', q, ME, news, packed, {}, {}) end
for _, r in ipairs(replies) do out[#out + 1] = r end
return out
