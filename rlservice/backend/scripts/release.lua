-- outcome: 1 success, 2 failed with usage, 3 failed, unknown usage.
-- Replies released, closed | closed, closed | unknown
OPS.release = function(lease_id, outcome, input_tokens, output_tokens, cached_tokens, request_count)
  local rec, reply = find_open(lease_id)
  if not rec then return reply end
  local text = close_lease(rec, outcome, input_tokens, output_tokens, cached_tokens, request_count, false)
  closed_here(rec, text)
  return 'released\n' .. text
end
