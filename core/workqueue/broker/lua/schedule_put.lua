-- Create or change a schedule's definition (operator: CLI/HTTP; plugin: a worker at start).
-- One slot: every schedule key carries the tag {!schedules} (no queue name can be '!...').
-- A plugin's put never overwrites an operator's schedule of the same name; a put that changes
-- nothing writes nothing. A new schedule, a changed cron or time zone, or a resume moves the
-- anchor `last_tick` up to now: only ticks after it fire (no burst of ticks from the past).
-- KEYS: 1 index (SET of names), 2 the schedule (HASH), 3 version (STRING, bumped on change)
-- ARGV: 1 name, 2 source ('plugin'|'operator'), 3 paused ('' = keep; new: '0'), 4 cron,
--       5 type, 6 payload (JSON), 7 queue, 8 timezone
-- Returns: {verdict ('created'|'updated'|'same'|'kept'), revision}
local now = now_ms()
local key, source = KEYS[2], ARGV[2]
local cur = redis.call('HMGET', key, 'rev', 'source', 'paused', 'cron', 'type', 'payload',
  'queue', 'timezone', 'last_tick')
local exists = cur[1] ~= false
if exists and source == 'plugin' and cur[2] == 'operator' then return {'kept', cur[1]} end
local paused = ARGV[3]
if paused == '' then paused = cur[3] or '0' end
if exists and cur[2] == source and cur[3] == paused and cur[4] == ARGV[4]
    and cur[5] == ARGV[5] and cur[6] == ARGV[6] and cur[7] == ARGV[7]
    and cur[8] == ARGV[8] then
  return {'same', cur[1]}
end
local anchor = nil
if not exists then
  anchor = now
  redis.call('HSET', key, 'created_at', now, 'fired', 0)
else
  local timing = cur[4] ~= ARGV[4] or cur[8] ~= ARGV[8] or (cur[3] == '1' and paused == '0')
  local last = tonumber(cur[9]) or 0
  if timing and now > last then anchor = now end
end
if anchor then redis.call('HSET', key, 'last_tick', anchor) end
redis.call('HSET', key, 'source', source, 'paused', paused, 'cron', ARGV[4], 'type', ARGV[5],
  'payload', ARGV[6], 'queue', ARGV[7], 'timezone', ARGV[8], 'updated_at', now)
local rev = redis.call('HINCRBY', key, 'rev', 1)
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[3])
if exists then return {'updated', rev} end
return {'created', rev}
