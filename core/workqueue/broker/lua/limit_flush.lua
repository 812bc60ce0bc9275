-- Limits: the bucket's limits changed (workqueue limits set/clear, or a new declaration):
-- wake every waiter, so each takes its turn again under the new limits (a raised or lifted
-- limit must not leave jobs parked at times computed under the old one), and start the rate
-- from a full bucket. Once per change:
-- the bucket keeps the limits it was flushed for (`cfg`), and a repeat with the same text
-- does nothing, so of all the workers that see the change only the first one flushes.
-- KEYS: 1 state, 2 waiting
-- ARGV: 1 the limits as text, 2 the most waiters to wake in this call
-- Returns: {flushed (0|1), waiters left, then queue, id of the waiters to wake}*
local cfg = redis.call('HGET', KEYS[1], 'cfg')
local out = {0, 0}
if cfg == ARGV[1] then
  -- a bound was hit by the flush of this same change: go on with the rest
  if redis.call('HGET', KEYS[1], 'more') ~= '1' then return out end
end
if cfg ~= ARGV[1] then
  -- a new rate starts from a full bucket: a permit time computed under the old rate (maybe
  -- minutes away) must not hold back the new one
  redis.call('HDEL', KEYS[1], 'tat')
end
redis.call('HSET', KEYS[1], 'cfg', ARGV[1])
out[1] = 1
local popped = redis.call('ZPOPMIN', KEYS[2], tonumber(ARGV[2]))
for i = 1, #popped, 2 do
  local m = popped[i]
  local a = string.find(m, '\n', 1, true)
  if a then
    out[#out + 1] = string.sub(m, 1, a - 1)
    out[#out + 1] = string.sub(m, a + 1)
  end
end
local left = redis.call('ZCARD', KEYS[2])
out[2] = left
if left > 0 then redis.call('HSET', KEYS[1], 'more', '1') else redis.call('HDEL', KEYS[1], 'more') end
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], 86400000) end
return out
