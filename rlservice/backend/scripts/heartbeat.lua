-- Keeps the instance alive and tells whether maintenance is waiting (a stale instance to remove or
-- expired leases of its own to free): the instance then runs the reap operation, alone, until none
-- is left. Replies ok, maintenance_waiting (with every model's state) | unregistered
OPS.heartbeat = function(stale_ms)
  if not registered() then return 'unregistered' end
  redis.call('ZADD', K_INST, 'XX', NOW, ME)
  touch_all()
  return (stale(tonumber(stale_ms)) or expired_left()) and 'ok\n1' or 'ok\n0'
end
