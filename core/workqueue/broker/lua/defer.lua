-- Limits (SPEC 12): put back active jobs that a limit held back, as if never started.
-- Fenced: a job is deferred only while its lease entry carries the caller's token. Its lease
-- ends (active and lease-hash entries removed, token cleared: a late report of that lease is
-- stale), the attempt does not count (attempts back by one: the history has no entry for a
-- running attempt, so none to remove; a job that never ran loses the worker and started_at this
-- reservation wrote), and it waits in `scheduled` until the time the limit gave (the reserve
-- that comes due promotes it, as any delayed job). A job that a release asked to wake while
-- it was still active (limit_wake.lua set `limit_wake`) is due at once instead.
-- A job asked to cancel while it was held (control.lua: cancel = '1') ends cancelled now
-- ("cancelled before it ran"), as a release of a cancelled job does.
-- Counted in the stats hash as `deferred` and `deferred|<type>`.
-- KEYS: 1 active, 2 leases, 3 scheduled, 4 notify, 5 stats, 6 cancelled, 7 settings, 8 ledger,
--       then one job record key per job
-- ARGV: 1 notify cap, 2 idempotency key prefix, 3 default failed retention ms,
--       then triples: job id, token, due time (ms, Redis clock)
-- Returns: per job 1 (deferred), 2 (cancelled) or 0 (the lease was not held under that
--          token: nothing done)
local now = now_ms()
local out = {}
local any = false
local q = nil  -- the queue's settings, read only when a job ends cancelled
local first = 9
for n = 1, (#ARGV - 3) / 3 do
  local id, token = ARGV[3 * n + 1], ARGV[3 * n + 2]
  local at = tonumber(ARGV[3 * n + 3]) or now
  local key = KEYS[first + n - 1]
  local held = lease_token(redis.call('HGET', KEYS[2], id)) == token
  local f = held and fields(key, 'attempts', 'limit_wake', 'type', 'status', 'token', 'cancel',
    'idem')
  if f and f[4] == 'active' and f[5] == token then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    local attempts = int_field(f[1]) or 1
    if attempts > 0 then attempts = attempts - 1 end
    redis.call('HSET', key, 'attempts', attempts, 'token', '')
    if attempts == 0 then redis.call('HDEL', key, 'worker', 'started_at') end
    if f[6] == '1' then
      if not q then
        q = queue_settings(KEYS[7], 0, ARGV[3], 0)
        q.cancelled, q.stats, q.ledger, q.idemp = KEYS[6], KEYS[5], KEYS[8], ARGV[2]
      end
      end_cancelled(q, key, id, f[3], f[7], now, 'cancelled before it ran', false, false)
      out[#out + 1] = 2
    else
      if f[2] then
        at = now
        redis.call('HDEL', key, 'limit_wake')
      end
      redis.call('HSET', key, 'status', 'scheduled', 'run_at', at)
      redis.call('ZADD', KEYS[3], at, id)
      redis.call('HINCRBY', KEYS[5], 'deferred', 1)
      if f[3] then redis.call('HINCRBY', KEYS[5], 'deferred|' .. f[3], 1) end
      any = true
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 0
  end
end
-- An idle worker learns the new due times now rather than at the end of its idle wait.
if any then wake(KEYS[4], tonumber(ARGV[1])) end
return out
