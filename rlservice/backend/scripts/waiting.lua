-- flag: '1' when the instance has requests waiting for the model, '0' when not. While another
-- instance has waiters, nobody borrows beyond its share.
-- Replies ok | unregistered | unknown_model
OPS.waiting = function(name, flag)
  if not redis.call('ZSCORE', K_INST, ME) then return 'unregistered' end
  local m = model(name)
  if not m then return 'unknown_model' end
  local want = flag == '1' and 1 or 0
  -- The others take only the waiter count from the news: the own fields are the sender's.
  touch(name, m.ow ~= want)
  if m.ow ~= want then
    if want == 1 then redis.call('HSET', m.ik, F_W, 1) else redis.call('HDEL', m.ik, F_W) end
    m.w, m.ow = redis.call('HINCRBY', m.ik, 'w', want == 1 and 1 or -1), want
    CHANGED = true
  end
  return 'ok'
end
