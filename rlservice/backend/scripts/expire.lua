-- Closes the lease at its estimate if its expiry has passed.
-- Replies expired, closed | extended, expires_at | closed, closed | unknown
OPS.expire = function(lease_id)
  local rec, reply = find_open(lease_id)
  if not rec then return reply end
  if rec.x > NOW then return 'extended\n' .. rec.xs end
  local text = close_lease(rec, '3', '0', '0', '0', '0', true)
  closed_here(rec, text)
  return 'expired\n' .. text
end
