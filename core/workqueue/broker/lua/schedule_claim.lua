-- Claim one tick of a schedule for this scheduler: the step that makes a tick fire once
-- however many schedulers run. The claim records the tick as `last_tick` and as `pending`
-- (with a lease); the claimer then enqueues the tick's job (its id and idempotency key are
-- derived from the schedule and the tick, so a repeated enqueue writes nothing) and confirms
-- with schedule_done. A pending tick whose lease passed (the claimer died between the two
-- steps) is handed to the next scheduler that asks: re-driven, never lost, never doubled.
-- KEYS: 1 the schedule (HASH)
-- ARGV: 1 tick (ms), 2 owner (worker id), 3 lease ms, 4 the revision the tick was computed on
-- Returns one of:
--   {'claimed', tick}             fire it
--   {'redrive', tick, revision}   fire this earlier claimed tick (its claimer is gone)
--   {'busy', last_tick, until}    another scheduler is firing a tick right now
--   {'stale', last_tick}          a later or equal tick was claimed already
--   {'changed', last_tick}        the definition changed since: reload it
--   {'paused', last_tick}         the schedule is paused
--   {'early', now}                the tick is after Redis's clock (our clock runs ahead)
--   {'gone'}                      no such schedule
local now = now_ms()
local key = KEYS[1]
local h = redis.call('HMGET', key, 'rev', 'paused', 'last_tick', 'pending_tick', 'pending_until')
if not h[1] then return {'gone'} end
local last = h[3] or '0'
if h[4] then
  if (tonumber(h[5]) or 0) > now then return {'busy', last, h[5]} end
  redis.call('HSET', key, 'pending_until', now + tonumber(ARGV[3]), 'pending_owner', ARGV[2])
  redis.call('HINCRBY', key, 'redriven', 1)
  return {'redrive', h[4], h[1]}
end
if h[1] ~= ARGV[4] then return {'changed', last} end
if h[2] == '1' then return {'paused', last} end
local tick = tonumber(ARGV[1])
if tick <= (tonumber(last) or 0) then return {'stale', last} end
if tick > now then return {'early', now} end
redis.call('HSET', key, 'last_tick', ARGV[1], 'pending_tick', ARGV[1],
  'pending_until', now + tonumber(ARGV[3]), 'pending_owner', ARGV[2])
return {'claimed', ARGV[1]}
