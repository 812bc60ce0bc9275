-- Pause or resume a schedule. A resume moves the anchor `last_tick` up to now: the ticks that
-- passed while it was paused do not fire.
-- KEYS: 1 the schedule (HASH), 2 version (STRING)
-- ARGV: 1 paused ('1'|'0')
-- Returns: 0 no such schedule, 1 done
local now = now_ms()
local cur = redis.call('HMGET', KEYS[1], 'rev', 'paused', 'last_tick')
if not cur[1] then return 0 end
if cur[2] == ARGV[1] then return 1 end
if ARGV[1] == '0' and now > (tonumber(cur[3]) or 0) then
  redis.call('HSET', KEYS[1], 'last_tick', now)
end
redis.call('HSET', KEYS[1], 'paused', ARGV[1], 'updated_at', now)
redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('INCR', KEYS[2])
return 1
