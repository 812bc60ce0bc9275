-- Limits: wake jobs that waited for a limit (a slot was released, or the limits changed):
-- a job still waiting in `scheduled` becomes due at the given time (now, or when the rate
-- allows the next start; the reserve that comes due promotes it); a job
-- still active (its worker is about to defer it: the release came between its refusal and
-- its defer) is marked `limit_wake`, so defer.lua makes it due at once instead. Jobs in any
-- other state are left alone. One queue (see limit_release.lua for who asks).
-- KEYS: 1 scheduled, 2 notify, then one job record key per id
-- ARGV: 1 notify cap, 2 when they are due (ms, Redis clock; 0: now), then job ids
-- Returns: the number of jobs made due
local now = now_ms()
local at = math.max(now, tonumber(ARGV[2]) or 0)
local woke = 0
for n = 3, #ARGV do
  local id, key = ARGV[n], KEYS[n]
  local f = fields(key, 'status')
  local st = f and f[1]
  if st == 'scheduled' and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', at, id)
    redis.call('HSET', key, 'run_at', at)
    woke = woke + 1
  elseif st == 'active' then
    redis.call('HSET', key, 'limit_wake', '1')
  end
end
if woke > 0 then wake(KEYS[2], tonumber(ARGV[1])) end
return woke
