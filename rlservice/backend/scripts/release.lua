-- outcome: 1 success, 2 failed with usage, 3 failed, unknown usage, 4 refused by the provider
-- (rate limited: its usage as for 1 and 2, normally none). After the usage, optionally what the
-- provider said (feedback.lua: twelve arguments).
-- Replies released, closed | closed, closed | unknown
OPS.release = function(lease_id, outcome, input_tokens, output_tokens, cached_tokens, request_count, ...)
  local rec, reply = find_open(lease_id)
  if not rec then return reply end
  local feedback = select('#', ...) > 0 and {...} or nil
  local text = close_lease(rec, outcome, input_tokens, output_tokens, cached_tokens, request_count, false, feedback)
  closed_here(rec, text)
  return 'released\n' .. text
end
