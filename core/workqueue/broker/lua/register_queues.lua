-- Add queue names to the registry of known queues, refusing to grow it past a cap (queue
-- names come from clients: an unbounded set would be a memory leak anyone can drive).
-- KEYS: 1 queues (SET)
-- ARGV: 1 the cap, then names
-- Returns: {0} when added (or already there), {1, size} when the cap refused the new ones
local new = {}
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then new[#new + 1] = ARGV[i] end
end
if #new == 0 then return {0} end
local size = redis.call('SCARD', KEYS[1])
if size + #new > tonumber(ARGV[1]) then return {1, size} end
each_chunk(new, function(...) redis.call('SADD', KEYS[1], ...) end)
return {0}
