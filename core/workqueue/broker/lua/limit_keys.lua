-- Limits: the limit_key of each job record of one queue ('' when none), in one call (a
-- worker reads them for its jobs of limited types before it asks their limits).
-- KEYS: job record keys
-- Returns: one string per key
local out = {}
for i, key in ipairs(KEYS) do
  local f = fields(key, 'limit_key')
  out[i] = (f and f[1]) or ''
end
return out
