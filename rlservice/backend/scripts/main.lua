-- ARGV holds one or more operations, each as NAME, ARG_COUNT, ARGS...: concurrent calls of one
-- instance share a script call and are applied in order, each answered on its own.
-- Replies one text per operation, in order, its fields one a line: a flat reply, since every
-- nested array in a script's reply costs Redis far more than joining strings.
local now
do
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local replies, i = {}, 1
while i <= #ARGV do
  local op, n = OPS[ARGV[i]], tonumber(ARGV[i + 1])
  local args = {}
  for j = 1, n do args[j] = ARGV[i + 1 + j] end
  replies[#replies + 1] = table.concat(op(args, now), '\n')
  i = i + 2 + n
end
return replies
