-- a: instance. A clean stop, one batch of its leases a call: the others re-divide once it is gone.
-- Replies {'ok'} | {'busy'}
OPS.unregister = function(a, now)
  return {remove_step(a[1], now, a[1]) and 'ok' or 'busy'}
end
