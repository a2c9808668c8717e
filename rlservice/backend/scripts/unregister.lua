-- A clean stop, one batch of the calling instance's leases a call: the others re-divide once it is
-- gone. Replies ok | busy
OPS.unregister = function()
  return remove_step(ME, ME) and 'ok' or 'busy'
end
