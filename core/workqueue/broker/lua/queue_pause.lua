-- Pause or resume one (physical) queue, atomically: the settings field 'paused' = '1' (a
-- resume deletes it). Reserve leases nothing from a paused queue; running jobs finish. A
-- resume wakes idle workers (up to the notify cap), so the waiting jobs start now rather
-- than at the end of the workers' idle wait.
-- KEYS: 1 settings, 2 notify, 3 queued (levels derived from it, as the prelude's)
-- ARGV: 1 '1' pause | '0' resume, 2 notify cap
-- Returns: {was paused (0|1), is paused (0|1)}
local was = redis.pcall('HGET', KEYS[1], 'paused') == '1'
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'paused', '1')
  return {was and 1 or 0, 1}
end
redis.call('HDEL', KEYS[1], 'paused')
local cap = tonumber(ARGV[2])
local waiting = redis.call('LLEN', KEYS[3]) > 0 or redis.call('ZCARD', levels_key(KEYS[3])) > 0
if waiting then
  local n = cap - redis.call('LLEN', KEYS[2])
  for _ = 1, n do redis.call('RPUSH', KEYS[2], '1') end
end
return {was and 1 or 0, 0}
