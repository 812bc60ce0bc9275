-- Confirm that a claimed tick's job is enqueued: clear the pending claim, remember the job.
-- A repeat (the claimer and a re-driver both confirming) changes nothing more.
-- KEYS: 1 the schedule (HASH)
-- ARGV: 1 tick (ms), 2 job id
-- Returns: 1 confirmed now, 0 nothing pending for that tick (or no such schedule)
local key = KEYS[1]
if redis.call('HGET', key, 'pending_tick') ~= ARGV[1] then return 0 end
redis.call('HDEL', key, 'pending_tick', 'pending_until', 'pending_owner')
redis.call('HSET', key, 'last_job_id', ARGV[2], 'fired_tick', ARGV[1], 'last_fired_at', now_ms())
redis.call('HINCRBY', key, 'fired', 1)
return 1
